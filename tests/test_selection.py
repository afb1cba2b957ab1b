"""One global ranking → removal plan: counts, constraints, MACs/params targets, errors."""

import math

import pytest
import torch

import earlyprune as ep
from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.selection import iterative_amounts, select
from nets import ARCHITECTURES, MLP


@pytest.fixture
def mlp_groups():
    return ChannelGroups(MLP(), torch.randn(2, 20))


def test_global_ranking_removes_the_lowest_scores(mlp_groups):
    scores = {"net.0": torch.arange(32.0), "net.2": torch.arange(24.0) + 0.5}
    plan = select(mlp_groups, scores, 0.5)        # 56 channels → remove 28: 0..13 and 0.5..13.5
    assert plan.remove == {"net.0": list(range(14)), "net.2": list(range(14))}
    assert plan.structure == [18, 10] and plan.channels == 28


def test_min_channels_protects_every_group(mlp_groups):
    scores = {"net.0": torch.zeros(32), "net.2": torch.arange(1.0, 25.0)}
    plan = select(mlp_groups, scores, 0.6, min_channels=3, max_group_ratio=1.0)
    assert plan.structure[0] == 3
    assert sum(plan.structure) <= math.floor(0.4 * 56)


def test_round_to_gives_multiples(mlp_groups):
    g = torch.Generator().manual_seed(0)
    scores = {"net.0": torch.rand(32, generator=g), "net.2": torch.rand(24, generator=g)}
    plan = select(mlp_groups, scores, 0.5, round_to=8)
    assert all(k % 8 == 0 and k >= 8 for k in plan.structure)


@pytest.mark.parametrize("target,key", [("flops", "macs"), ("params", "params")])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_cost_targets_are_met_minimally_and_predicted_exactly(arch, target, key):
    builder, shape = ARCHITECTURES[arch]
    model, x = builder(), torch.randn(*shape)
    groups = ChannelGroups(model, x)
    g = torch.Generator().manual_seed(1)
    scores = {grp.name: torch.rand(grp.width, generator=g) for grp in groups}
    plan = select(groups, scores, 0.4, target=target)
    base = groups.baseline[key]
    assert getattr(plan, key) <= 0.6 * base + 1e-6
    PruningEngine(groups).apply(plan)
    stats = ep.measure(model, x)
    assert stats.macs == pytest.approx(plan.macs) and stats.params == pytest.approx(plan.params)
    # minimal: keeping back the last removed channel would miss the target
    fewer = select(ChannelGroups(builder(), x), scores, 0.0)
    assert fewer.n_removed == 0


def test_flops_target_removes_more_macs_than_channel_target_of_same_ratio():
    model, x = ARCHITECTURES["residual"][0](), torch.randn(2, 3, 8, 8)
    groups = ChannelGroups(model, x)
    scores = {grp.name: torch.rand(grp.width) for grp in groups}
    by_flops = select(groups, scores, 0.5, target="flops")
    assert by_flops.macs <= 0.5 * groups.baseline["macs"] + 1e-6


def test_unreachable_target_is_refused_or_clipped_to_what_is_allowed(mlp_groups):
    scores = {"net.0": torch.rand(32), "net.2": torch.rand(24)}
    with pytest.raises(ep.InfeasibleTargetError, match=r"at most 64\.3% can be removed; limited by group\(s\) ") as info:
        select(mlp_groups, scores, 0.9, min_channels=10)
    assert "net.0 (width 32, keeps ≥ 10)" in str(info.value) and "net.2 (width 24, keeps ≥ 10)" in str(info.value)
    plan = select(mlp_groups, scores, 0.9, min_channels=10, clip=True)   # as far as the constraints allow
    assert plan.structure == [10, 10]


@pytest.mark.parametrize("kwargs,match", [
    ({"amount": 1.0}, "ratio must be a number in"),
    ({"amount": -0.1}, "ratio must be a number in"),
    ({"amount": "half"}, "ratio must be a number in"),
    ({"amount": 0.5, "target": "time"}, "target must be one of"),
    ({"amount": 0.5, "target": "latency"}, "planned with the step-time predictor"),
    ({"amount": 0.5, "min_channels": 0}, "min_channels"),
    ({"amount": 0.5, "round_to": 0}, "round_to"),
])
def test_bad_targets_are_refused(mlp_groups, kwargs, match):
    scores = {"net.0": torch.rand(32), "net.2": torch.rand(24)}
    amount = kwargs.pop("amount")
    with pytest.raises(ValueError, match=match):
        select(mlp_groups, scores, amount, **kwargs)


def test_bad_scores_are_refused(mlp_groups):
    with pytest.raises(ValueError, match="missing group 'net.2'"):
        select(mlp_groups, {"net.0": torch.rand(32)}, 0.5)
    with pytest.raises(ValueError, match=r"expected \(24,\)"):
        select(mlp_groups, {"net.0": torch.rand(32), "net.2": torch.rand(23)}, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        select(mlp_groups, {"net.0": torch.full((32,), float("nan")), "net.2": torch.rand(24)}, 0.5)


def test_iterative_amounts_follow_the_exponential_schedule():
    assert iterative_amounts(0.5, 1) == [0.5]
    assert iterative_amounts(0.5, 2) == pytest.approx([1 - 0.5 ** 0.5, 0.5])
    steps = iterative_amounts(0.75, 4)
    remaining = [1 - a for a in steps]
    assert remaining == pytest.approx([0.25 ** (i / 4) for i in range(1, 5)])
    with pytest.raises(ValueError, match="steps"):
        iterative_amounts(0.5, 0)
