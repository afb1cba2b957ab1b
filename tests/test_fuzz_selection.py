"""Fuzzing select(): random group sizes, scores (ties, zeros, equal values), ratios, targets, min_channels,
round_to, max_group_ratio, convolution groups and head multiples. Every plan keeps each group at or above its minimum, leaves
widths on the rounding grid, removes the lowest-scored channels, meets the target — or select raises the
feasibility error exactly when no plan can reach it — and is deterministic."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import earlyprune as ep
from earlyprune.planning.selection import reachable, select
from nets import MLP

FAST = settings(max_examples=300, deadline=None, derandomize=True)
LONG = settings(max_examples=20_000, deadline=None)


@dataclass
class FakeGroup:
    name: str
    index: int
    width: int
    ch_groups: int = 1
    width_multiple: int = 1
    macs_per_channel: float = 1.0
    params_per_channel: float = 1.0
    part: str = "channels"

    @property
    def unit_size(self) -> int:
        return self.ch_groups

    def units(self) -> torch.Tensor:
        return torch.arange(self.width).reshape(self.ch_groups, self.width // self.ch_groups).T


class LinearCost:
    """MACs / parameters that fall linearly with the channels removed (plus a fixed part: the output layer)."""

    def __init__(self, groups: list[FakeGroup], fixed: float) -> None:
        self.widths = np.array([g.width for g in groups], dtype=float)
        self.macs_w = np.array([g.macs_per_channel for g in groups])
        self.params_w = np.array([g.params_per_channel for g in groups])
        self.fixed = fixed

    def macs(self, removed: np.ndarray) -> float:
        return self.fixed + float((self.widths - removed) @ self.macs_w)

    def params(self, removed: np.ndarray) -> float:
        return self.fixed + float((self.widths - removed) @ self.params_w)


@dataclass
class FakeGroups:
    """What select() reads of ChannelGroups."""

    groups: list[FakeGroup]
    fixed: float = 0.0
    part_ratios: dict = field(default_factory=dict)
    cost: LinearCost = field(init=False)
    baseline: dict = field(init=False)

    def __post_init__(self) -> None:
        self.cost = LinearCost(self.groups, self.fixed)
        zero = np.zeros(len(self.groups))
        self.baseline = {"channels": float(sum(g.width for g in self.groups)), "macs": self.cost.macs(zero),
                         "params": self.cost.params(zero)}

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> FakeGroup:
        return self.groups[i]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def widths(self) -> list[int]:
        return [g.width for g in self.groups]

    @property
    def original_widths(self) -> dict[str, int]:
        return {g.name: g.width for g in self.groups}


@st.composite
def problems(draw):
    n = draw(st.integers(1, 6))
    groups = []
    for i in range(n):
        ch_groups = draw(st.sampled_from([1, 1, 1, 2, 4]))
        width = ch_groups * draw(st.integers(1, 24))
        multiple = draw(st.sampled_from([1, 1, 2, 3]))
        groups.append(FakeGroup(f"g{i}", i, width, ch_groups, multiple,
                                float(draw(st.integers(1, 50))), float(draw(st.integers(1, 50)))))
    fake = FakeGroups(groups, fixed=float(draw(st.integers(0, 200))))
    # scores: continuous, all zero, all equal, or few distinct values (ties)
    style = draw(st.sampled_from(["random", "zeros", "equal", "ties"]))
    scores = {}
    for g in groups:
        if style == "random":
            values = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=g.width, max_size=g.width))
        elif style == "zeros":
            values = [0.0] * g.width
        elif style == "equal":
            values = [1.5] * g.width
        else:
            values = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=g.width, max_size=g.width))
        scores[g.name] = torch.tensor(values, dtype=torch.float32)
    amount = draw(st.floats(0, 0.99))
    target = draw(st.sampled_from(["channels", "flops", "params"]))
    min_channels = draw(st.integers(1, 12))
    round_to = draw(st.sampled_from([1, 1, 2, 4, 8, 16]))
    max_group_ratio = draw(st.sampled_from([1.0, 1.0, 0.9, 0.8, 0.5]))
    return fake, scores, amount, target, min_channels, round_to, max_group_ratio


def _measure(fake: FakeGroups, target: str, removed: np.ndarray) -> float:
    return {"channels": lambda r: float((np.array(fake.widths()) - r).sum()), "flops": fake.cost.macs,
            "params": fake.cost.params}[target](removed)


def _check(problem) -> None:
    fake, scores, amount, target, min_channels, round_to, max_group_ratio = problem
    kwargs = dict(target=target, min_channels=min_channels, round_to=round_to, max_group_ratio=max_group_ratio)
    most = reachable(fake, **kwargs)
    try:
        plan = select(fake, scores, amount, **kwargs)
    except ep.InfeasibleTargetError as exc:
        assert most + 1e-9 < amount, f"refused a reachable target: {exc}"
        assert f"min_channels={min_channels}" in str(exc)
        return
    assert plan == select(fake, scores, amount, **kwargs)                      # deterministic
    widths = np.array(fake.widths())
    kept = np.array(plan.structure)
    removed = widths - kept
    base = fake.baseline[{"flops": "macs"}.get(target, target)]
    goal = (1 - amount) * base
    assert _measure(fake, target, removed) <= goal + 1e-9 * max(base, 1)       # meets the target
    for g, k in zip(fake.groups, kept):
        step = math.lcm(round_to, g.ch_groups, g.width_multiple)
        need = max(min_channels, math.ceil((1 - max_group_ratio) * g.width - 1e-9), 1)   # the relative floor too
        floor = min(g.width, math.ceil(need / step) * step)
        assert k >= floor and k >= 1                                            # never below its minimum
        assert k == g.width or k % step == 0                                    # on the rounding grid
        gone = plan.remove.get(g.name, [])
        assert len(gone) == g.width - k and len(set(gone)) == len(gone)
        assert all(0 <= i < g.width for i in gone)
        if gone and g.ch_groups == 1:                                           # the lowest scores went
            s = scores[g.name]
            keep = [i for i in range(g.width) if i not in set(gone)]
            assert float(s[gone].max()) <= float(s[keep].min()) if keep else True
    if round_to == 1 and target == "channels" and all(g.ch_groups == 1 and g.width_multiple == 1
                                                     for g in fake.groups):
        need = fake.baseline["channels"] - goal                                # no more than needed
        assert plan.n_removed == max(0, math.ceil(need - 1e-9 * base))


#: found by the long profile: an amount within float noise of 0 that nothing can reach (refused before, a
#: tolerance absolute on a 1000-MAC baseline, relative in check_reachable)
_TINY_AMOUNT = (FakeGroups([FakeGroup("g0", 0, 1), FakeGroup("g1", 1, 28, 2, 3, 23.0), FakeGroup("g2", 2, 16, 2, 1, 12.0)],
                           fixed=164.0),
                {"g0": torch.zeros(1), "g1": torch.zeros(28), "g2": torch.zeros(16)}, 1e-9, "flops", 1, 16, 1.0)


@FAST
@example(_TINY_AMOUNT)
@given(problems())
def test_select_keeps_minimums_meets_the_target_or_says_it_cannot(problem):
    _check(problem)


@pytest.mark.slow
@LONG
@given(problems())
def test_select_long_profile(problem):
    _check(problem)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.integers(2, 40), min_size=2, max_size=4), st.floats(0.05, 0.95),
       st.sampled_from(["channels", "flops", "params"]), st.integers(1, 6), st.sampled_from([1, 4]))
def test_select_on_real_mlps_of_random_widths(hidden, amount, target, min_channels, round_to):
    layers, d = [], 6
    for h in hidden:
        layers += [torch.nn.Linear(d, h), torch.nn.ReLU()]
        d = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(d, 3))
    groups = ep.ChannelGroups(model, torch.randn(2, 6))
    scores = {g.name: torch.rand(g.width) for g in groups}
    try:
        plan = select(groups, scores, amount, target=target, min_channels=min_channels, round_to=round_to)
    except ep.InfeasibleTargetError:
        assert reachable(groups, target=target, min_channels=min_channels, round_to=round_to) + 1e-9 < amount
        return
    base = groups.baseline[{"flops": "macs"}.get(target, target)]
    left = {"channels": plan.channels, "flops": plan.macs, "params": plan.params}[target]
    assert left <= (1 - amount) * base + 1e-9 * base and min(plan.structure) >= min(min_channels, min(hidden))


def test_the_fake_groups_agree_with_a_real_model_on_channels():
    groups = ep.ChannelGroups(MLP(), torch.randn(2, 20))
    fake = FakeGroups([FakeGroup(g.name, g.index, g.width) for g in groups])
    scores = {g.name: torch.rand(g.width) for g in groups}
    assert select(fake, scores, 0.4).remove == select(groups, scores, 0.4).remove
