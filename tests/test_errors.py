"""One project base exception, the old bases kept; every argument of the public entry points has a rule."""

from __future__ import annotations

import inspect

import pytest

import earlyprune as ep
from earlyprune.core import errors
from earlyprune.io import LOAD_RULES, SAVE_RULES
from earlyprune.graph.metrics import MEASURE_RULES
from earlyprune.models import MODELS
from earlyprune.oneshot import PRUNE_RULES
from earlyprune.training.checkpoint import CheckpointError
from earlyprune.training.data import DataError


@pytest.mark.parametrize("cls,bases", [
    (ep.InvalidParameterError, (ValueError, TypeError)), (ep.StructureMismatchError, (ValueError,)),
    (errors.DamagedFileError, (ep.StructureMismatchError, ValueError)), (ep.InfeasibleTargetError, (ValueError,)),
    (ep.UnprunableGroupsError, (ValueError,)), (ep.ConfigError, (ValueError,)), (CheckpointError, (ValueError,)),
    (DataError, (ValueError,)), (ep.NonFiniteError, (ArithmeticError,)),
])
def test_every_project_error_is_an_earlyprune_error_and_keeps_its_old_base(cls, bases):
    assert issubclass(cls, ep.EarlyPruneError) and all(issubclass(cls, b) for b in bases)


def test_the_exceptions_are_one_set_of_classes_wherever_imported():
    from earlyprune import io
    from earlyprune.core import validation

    assert ep.StructureMismatchError is io.StructureMismatchError is errors.StructureMismatchError
    assert ep.InvalidParameterError is validation.InvalidParameterError


#: parameters checked elsewhere than the rule table, and where
CHECKED_ELSEWHERE = {"criterion": "the criteria registry", "policy": "the policies registry",
                     "weight_criterion": "the criteria registry (its weight forms)",
                     "batches": "prune()'s _batches: (inputs, targets) pairs with loss_fn"}


@pytest.mark.parametrize("fn,rules", [
    (ep.EarlyPruner.__init__, ep.EarlyPruner.RULES), (ep.prune, PRUNE_RULES), (ep.save, SAVE_RULES),
    (ep.load, LOAD_RULES), (ep.measure, MEASURE_RULES), (ep.ChannelGroups.__init__, ep.ChannelGroups.RULES),
])
def test_every_argument_of_the_public_entry_points_has_a_rule(fn, rules):
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    missing = [p for p in params if p not in rules and p not in CHECKED_ELSEWHERE]
    assert not missing, f"{fn.__qualname__}: no rule for {missing} (add rows to its rule table)"


def test_every_zoo_model_checks_its_constructor_arguments():
    for name, builder in MODELS.items():
        with pytest.raises(ep.InvalidParameterError, match="got 0"):
            builder(num_classes=0)
