"""Hardware-friendly kept widths chosen by measurement: ``round_to="auto"``.

Rounding every kept width to a multiple of ``r`` trades some freedom of the ranking for widths the device runs
well (vector lanes, AMX / tensor-core tiles). Which ``r`` pays off depends on the device, the dtype, the memory
format, the batch and the layer shapes: on our 2-core CPU a CIFAR ResNet-20 pruned to arbitrary widths trained
barely faster than dense although it had half the MACs, and rounding to 8–16 recovered most of the gap
(``benchmarks/speed.py``); a GPU may prefer other multiples. So ``"auto"`` measures instead of assuming:

1. for each candidate ``r`` (1, 2, 4, 8, 16, 32 — those at most a quarter of the median group width, so that
   rounding leaves a typical layer at least four choices), the selection plans the **final** target with the
   current scores, exactly as it would prune;
2. each plan's layers are timed at their planned widths by a :class:`~earlyprune.criteria.LatencyTable`
   (forward + backward of every convolution / linear / normalisation layer, on the model's device, at the
   training batch size, under the training precision and memory format when given);
3. the smallest ``r`` whose predicted time is within ``tolerance`` of the fastest plan's wins — the ranking is
   constrained no more than the hardware rewards.

The choice is made once, at the first pruning step, recorded (``EarlyPruner.round_to_choice``, the pruning
events, a run's ``summary.json``) and reused by every later step and after a resume. Timing varies from machine
to machine: pass an integer for runs that must be identical everywhere.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Mapping

import torch

from .criteria.latency import LatencyTable, input_shapes
from .errors import InfeasibleTargetError
from .groups import ChannelGroups
from .selection import Plan, select
from .validation import ROUND_TO, Each, InstanceOf, Interval, Rule, checked, rule

#: the multiples ``"auto"`` tries
CANDIDATES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class RoundToChoice:
    """What ``round_to="auto"`` measured and chose."""

    value: int                                                   #: the chosen multiple
    seconds: dict[int, float] = field(default_factory=dict)      #: predicted layer time of each candidate's plan
    macs: dict[int, float] = field(default_factory=dict)         #: MACs per example left by each plan

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "seconds": {str(k): v for k, v in self.seconds.items()},
                "macs": {str(k): v for k, v in self.macs.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoundToChoice":
        return cls(int(data["value"]), {int(k): float(v) for k, v in data.get("seconds", {}).items()},
                   {int(k): float(v) for k, v in data.get("macs", {}).items()})


class AutoRoundTo:
    """``round_to="auto"`` with its settings: pass an instance as ``round_to=`` to change them.

    Args:
        candidates: multiples to try (1 is always tried: the unconstrained plan is the reference).
        tolerance: relative slack: the smallest candidate within ``(1 + tolerance) ×`` the fastest time wins
            (0.01: on a CPU ResNet-20 the predicted ranking of the multiples matched the measured one to about
            1 %, ``benchmarks/round_to.py``).
        table: the :class:`~earlyprune.criteria.LatencyTable` that times the layers (default: forward + backward,
            3 repeats; its ``batch_size`` None means the batch size of the batches the pruner sees).
        max_fraction: candidates above this fraction of the median group width are skipped.
    """

    RULES: dict[str, Rule] = {
        "candidates": rule(Each(Interval(Integral, 1, None))),
        "tolerance": rule(Interval(Real, 0, 1, closed="left"), hint="e.g. 0.03 = within 3 % of the fastest"),
        "table": rule(InstanceOf(LatencyTable, "a LatencyTable"), None),
        "max_fraction": rule(Interval(Real, 0, 1, closed="right")),
    }

    @checked(RULES)
    def __init__(self, candidates: tuple[int, ...] = CANDIDATES, tolerance: float = 0.01,
                 table: LatencyTable | None = None, max_fraction: float = 0.25) -> None:
        self.candidates = tuple(sorted(set(candidates) | {1}))
        self.tolerance = float(tolerance)
        self.table = table if table is not None else LatencyTable(repeats=3, warmup=1)
        self.max_fraction = float(max_fraction)

    def usable(self, groups: ChannelGroups) -> tuple[int, ...]:
        """The candidates tried on these groups (at most ``max_fraction`` of the median width)."""
        median = statistics.median(groups.widths()) if len(groups) else 1
        return tuple(c for c in self.candidates if c == 1 or c <= self.max_fraction * median)

    def choose(self, groups: ChannelGroups, scores: Mapping[str, torch.Tensor], amount: float, *,
               target: str = "channels", min_channels: int = 1, batch_size: int | None = None) -> RoundToChoice:
        """Plan ``amount`` with every usable candidate, time each plan's layers, return the choice."""
        table = self.table
        restore = table.batch_size
        if table.batch_size is None and batch_size is not None:
            table.batch_size = batch_size
        try:
            shapes = input_shapes(groups)
            seconds, macs = {}, {}
            for r in self.usable(groups):
                try:
                    plan: Plan = select(groups, scores, amount, target=target, min_channels=min_channels,
                                        round_to=r)
                except InfeasibleTargetError:
                    if r == 1:
                        raise
                    continue  # this multiple cannot reach the target: not a candidate
                seconds[r] = table.structure_latency(groups, {k: len(v) for k, v in plan.remove.items()}, shapes)
                macs[r] = plan.macs
        finally:
            table.batch_size = restore
        return RoundToChoice(pick(seconds, self.tolerance), seconds, macs)

    def __repr__(self) -> str:
        return f"AutoRoundTo(candidates={self.candidates}, tolerance={self.tolerance})"


def pick(seconds: Mapping[int, float], tolerance: float) -> int:
    """The smallest multiple whose time is within ``(1 + tolerance)`` of the fastest."""
    best = min(seconds.values())
    return min(r for r, t in seconds.items() if t <= best * (1.0 + tolerance))


#: ``round_to=`` of EarlyPruner / prune(): an integer ≥ 1, "auto" or an :class:`AutoRoundTo`
ROUND_TO_RULE = Rule(ROUND_TO.constraints + (InstanceOf(AutoRoundTo, "an AutoRoundTo"),), ROUND_TO.hint)


def check_round_to(value: Any) -> int | AutoRoundTo:
    """``round_to`` as given by a user → an integer ≥ 1 or an :class:`AutoRoundTo` (``"auto"``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AutoRoundTo()
    return ROUND_TO_RULE.check("round_to", value)


def batch_size_of(inputs: Any) -> int | None:
    """The first dimension of the first tensor in ``inputs`` (tensor, tuple/list or dict), if any."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else None
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            size = batch_size_of(item)
            if size is not None:
                return size
    if isinstance(inputs, dict):
        return batch_size_of(list(inputs.values()))
    return None
