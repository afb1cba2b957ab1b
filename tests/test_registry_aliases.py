"""A renamed criterion or policy keeps its old name as an alias: old runs still build, with a warning."""

import warnings

import pytest
import torch

import earlyprune as ep
from earlyprune.criteria import CRITERIA, Criterion
from earlyprune.policies import POLICIES
from earlyprune.core.registry import Registry, RenamedWarning
from earlyprune.training.config import TrainConfig


class Base:
    name = "base"

    def __init__(self, k=1):
        self.k = k

    @classmethod
    def from_spec(cls, arg, **kwargs):
        return cls(int(arg), **kwargs)


def test_an_alias_builds_the_new_class_with_a_warning():
    reg = Registry("thing", Base)

    @reg.register("new")
    class New(Base):
        pass

    reg.register_alias("old", "new")
    assert "old" in reg and reg.names() == ["new"] and reg.aliases() == {"old": "new"}
    with pytest.warns(RenamedWarning, match="thing 'old' has been renamed 'new'"):
        built = reg.build("old:3")                              # the ':' argument goes along
    assert type(built) is New and built.k == 3 and built.name == "new"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.build("new")                                        # the current name: no warning
    with pytest.raises(ValueError, match="registered name"):
        reg.register_alias("new", "new")
    with pytest.raises(ValueError, match="unknown thing 'missing'"):
        reg.register_alias("older", "missing")
    with pytest.raises(ValueError, match="old name of 'new'"):
        reg.register("old")(type("Other", (Base,), {}))


def test_a_renamed_criterion_and_policy_still_load_an_old_run(monkeypatch, tmp_path):
    # pretend "magnitude" used to be called "weight_norm" and "epoch" used to be "at"
    monkeypatch.setitem(CRITERIA._aliases, "weight_norm", "magnitude")
    monkeypatch.setitem(POLICIES._aliases, "at", "epoch")
    with pytest.warns(RenamedWarning):
        TrainConfig(criterion="weight_norm", policy="at:2", dataset="synthetic").resolved()   # config.json of old
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.warns(RenamedWarning) as caught:
        pruner = ep.EarlyPruner(model, torch.randn(2, 4), 0.5, criterion="weight_norm", policy="at:2",
                                optimizer=None)
    assert len(caught) == 2 and pruner.criterion.name == "magnitude" and pruner.policy.epoch == 2
    assert isinstance(pruner.criterion, Criterion)
