"""One validator, one table of rules per public entry point, one message shape — and the API, the run
configuration and the command line agree on every value."""

import argparse
import inspect
import math
from numbers import Integral, Real

import pytest
import torch

import earlyprune as ep
from earlyprune.core.argtypes import _convert, parser
from earlyprune.oneshot import PRUNE_RULES
from earlyprune.training.config import TrainConfig, field_rule
from earlyprune.core.validation import (AMOUNT, RATIO, ROUND_TO, Boolean, Each, InvalidParameterError, Interval, Options,
                                   check_args, checked, rule, shown)
from nets import MLP


def message(r, name, value, flag=False):
    with pytest.raises(InvalidParameterError) as info:
        r.check(name, value, flag)
    return str(info.value)


def test_one_message_shape_names_parameter_value_and_what_is_accepted():
    steps = rule(Interval(Integral, 0, None, closed="neither"), hint="pruning steps")
    assert message(steps, "steps", 0) == "steps must be a positive integer, got 0 (pruning steps)"
    assert message(rule(Interval(Integral, 1, None), None), "cap", 0.5) == "cap must be an integer ≥ 1 or None, got 0.5"
    assert message(rule(Interval(Real, 0, 1, closed="right")), "eps", 2) == "eps must be a number in (0, 1], got 2"
    assert message(rule(Options(["a", "b"])), "mode", "c") == "mode must be one of 'a', 'b', got 'c'"
    assert message(rule(Boolean()), "flag", 1) == "flag must be True or False, got 1"
    assert message(rule(Each(Interval(Integral, 1, None))), "c", (0,)) == \
        "c must be a non-empty list, each an integer ≥ 1, got (0,)"
    assert message(ROUND_TO, "round_to", "fast").startswith("round_to must be an integer ≥ 1 or 'auto', got 'fast'")
    long = message(rule(Boolean()), "x", torch.zeros(1000))
    assert len(long) < 200 and "Tensor" in long                    # a large value given by mistake is cut short


def test_flags_speak_the_command_line_language():
    assert message(rule(Interval(Integral, 0, None, closed="neither")), "epochs", 0, flag=True) == \
        "epochs must be a whole number ≥ 1, got 0"
    assert message(RATIO, "--ratio", 1.5, flag=True).startswith("--ratio must be in (0, 1), got 1.5")  # range only
    assert message(RATIO, "--ratio", "x", flag=True).startswith("--ratio must be a number in (0, 1), got 'x'")
    assert message(ROUND_TO, "round_to", 0, flag=True).startswith("round_to must be a whole number ≥ 1 or auto,")


def test_bools_are_not_numbers_and_reals_must_be_finite():
    whole, real = rule(Interval(Integral, None, None)), rule(Interval(Real, None, None))
    assert whole.accepts(3) and not whole.accepts(True) and not whole.accepts(3.0)
    assert real.accepts(3) and real.accepts(0.5) and not real.accepts(False)
    assert not real.accepts(math.nan) and not real.accepts(math.inf)
    import numpy as np
    assert whole.accepts(np.int64(3)) and real.accepts(np.float32(0.5))


@pytest.mark.parametrize("closed,inside", [("both", [0, 0.5, 1]), ("left", [0, 0.5]), ("right", [0.5, 1]),
                                           ("neither", [0.5])])
def test_interval_ends(closed, inside):
    r = rule(Interval(Real, 0, 1, closed=closed))
    assert [x for x in (-0.1, 0, 0.5, 1, 1.1) if r.accepts(x)] == inside


def test_refusals_are_value_and_type_errors():
    assert issubclass(InvalidParameterError, ValueError) and issubclass(InvalidParameterError, TypeError)


def test_checked_checks_arguments_and_defaults_and_refuses_unknown_names():
    @checked({"n": rule(Interval(Integral, 1, None))})
    def f(n=1):
        return n

    assert f(3) == 3 and f.rules["n"].accepts(1)
    with pytest.raises(ValueError, match="n must be an integer ≥ 1, got 0"):
        f(0)
    with pytest.raises(TypeError, match="parameters it does not have"):
        checked({"m": rule(None)})(lambda n: n)
    with pytest.raises(TypeError):  # a wrong call is Python's own error, not a rule's
        f(1, 2)


def test_every_table_names_real_parameters():
    tables = [(ep.EarlyPruner.__init__, ep.EarlyPruner.RULES), (ep.prune, PRUNE_RULES),
              (ep.AutoRoundTo.__init__, ep.AutoRoundTo.RULES)]
    for fn, table in tables:
        assert set(table) <= set(inspect.signature(fn).parameters), fn


RATIOS = [0, 0.0, 1, 1.0, 1.2, -0.1, 0.5, 0.25, True, "0.5", math.nan, None]


def _accepted_by_pruner(value):
    try:
        ep.EarlyPruner(MLP(), torch.randn(2, 20), value, optimizer=None, record_signals=False)
    except ValueError:
        return False
    return True


def _accepted_by_config(value):
    try:
        TrainConfig(ratio=value, dataset="synthetic").validate()
    except ValueError:
        return False
    return True


def _accepted_by_flag(value):
    try:
        parser(field_rule(TrainConfig.__dataclass_fields__["ratio"]), "ratio")(str(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def test_ratio_is_one_rule_everywhere():
    expected = [RATIO.accepts(v) for v in RATIOS]
    assert expected == [False, False, False, False, False, False, True, True, False, False, False, False]
    assert [_accepted_by_pruner(v) for v in RATIOS] == expected
    assert [_accepted_by_config(v) for v in RATIOS] == expected
    assert PRUNE_RULES["ratio"] is RATIO and ep.EarlyPruner.RULES["ratio"] is RATIO
    # on the command line the text is parsed first: "0.5" is a number there, True and None are not flags' words
    assert [_accepted_by_flag(v) for v in (0, 1.2, 0.5, "0.5", "x")] == [False, False, True, True, False]
    # a plan's cumulative amount may be 0 (nothing removed yet); it is never the run's ratio
    assert AMOUNT.accepts(0) and not AMOUNT.accepts(1) and not RATIO.accepts(0)


@pytest.mark.parametrize("name", ["steps", "min_channels", "epochs", "lr", "round_to", "target", "label_smoothing"])
def test_flags_and_config_files_refuse_the_same_values(name):
    f = TrainConfig.__dataclass_fields__[name]
    r = field_rule(f)
    for text in ("0", "-1", "1", "2", "0.5", "1.5", "auto", "x", "flops", "nan"):
        try:
            parser(r, name)(text)
        except argparse.ArgumentTypeError:
            from_flag = False
        else:
            from_flag = True
        try:  # the value a config file would hold: the number (or word) the text reads as
            TrainConfig(**{name: _convert(r, text)}).validate()
        except ValueError:
            from_config = False
        else:
            from_config = True
        assert from_flag == from_config, (name, text)


def test_check_args_runs_in_table_order():
    table = {"a": rule(Boolean()), "b": rule(Boolean())}
    with pytest.raises(ValueError, match="^a must"):
        check_args(table, {"b": 1, "a": 1})


def test_a_refused_alias_bomb_is_shown_short_without_being_rendered():
    """A YAML alias bomb (a few lines, billions of shared entries) refused by a rule: the message is short and
    building it never renders the whole value (measured as memory, not time)."""
    import tracemalloc

    import yaml

    text = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcde", "bcdef")) + "milestones: *f\n"
    bomb = yaml.safe_load(text)["milestones"]          # 9**6 leaves, all shared
    tracemalloc.start()
    message = rule(Each(Interval(Integral, 1, None))).message("milestones", bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(message) < 200 and message.startswith("milestones must be a non-empty list")
    assert peak < 200_000, peak                        # repr() of the whole list: ~3 MB
    assert shown([1, 2, 3]) == "[1, 2, 3]" and shown({"a": 1}) == "{'a': 1}"   # small values: plain repr
