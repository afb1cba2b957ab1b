"""Hardware-friendly kept widths chosen by measurement: ``round_to="auto"``.

Rounding every kept width to a multiple of ``r`` trades some freedom of the ranking for widths the device runs
well (vector lanes, AMX / tensor-core tiles). Which ``r`` pays off depends on the device, the dtype, the memory
format, the batch and the layer shapes: on our 2-core CPU a CIFAR ResNet-20 pruned to arbitrary widths trained
barely faster than dense although it had half the MACs, and rounding to 8–16 recovered most of the gap
(``benchmarks/speed.py``); a GPU may prefer other multiples. So ``"auto"`` measures — but a measurement on a
busy machine is noisy, and the same command must not give different models because another process was running
at that moment. The rule:

1. **A fixed default**: ``r = 8`` (:data:`DEFAULT_MULTIPLE`; the largest candidate ≤ 8 that the model's widths
   allow). 8 is what the measurements favoured on this project's CPU (``benchmarks/round_to.py``: the fastest
   multiple in 5 of 6 ResNet-20 settings) and the width of AVX2 fp32 lanes and of fp16 / bf16 tensor-core tiles.
2. For each candidate ``r`` (1, 2, 4, 8, 16, 32 — those at most a quarter of the median group width, and able to
   reach the target), the selection plans the **final** target with the current scores, exactly as it would prune.
3. Every plan's layers are timed at their planned widths (forward + backward of each convolution / linear /
   normalisation layer, on the model's device, at the training batch size, precision and memory format), in
   **interleaved rounds**: each round times every layer of every plan once, in a rotating order, so that a load
   spike hits all candidates of the round alike. A plan's time in a round is the sum over its layers.
4. For each candidate, the **paired ratio** of its time to the default's, per round. A candidate replaces the
   default only if it **wins clearly**: its ratio is below ``1 − margin`` (5 %) in three rounds of four (the upper
   quartile). Among clear winners the lowest median ratio wins, the smaller multiple within ``tolerance``.
   Otherwise the default stays — under noise the answer is the documented default, not a coin toss.

Everything measured is recorded (:class:`RoundToChoice`: the rule that decided, every round's time of every plan,
the paired ratios, the MACs left) in ``EarlyPruner.round_to_choice``, the pruning events, ``history_json()`` and a
run's ``summary.json``; the choice is made once, at the first pruning step, and reused by every later step and
after a resume. Pass an integer (``round_to=8``, ``--round-to 8``) for runs that must be identical everywhere.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Mapping

import torch

from ..core.errors import InfeasibleTargetError
from ..core.validation import ROUND_TO, Each, InstanceOf, Interval, Rule, checked, rule
from ..criteria.latency import LatencyTable, input_shapes
from ..graph.groups import ChannelGroups
from .selection import Plan, select
from .spec import UNLIMITED, TargetSpec

#: the multiples ``"auto"`` tries
CANDIDATES = (1, 2, 4, 8, 16, 32)
#: the multiple ``"auto"`` keeps unless another is measured clearly faster (capped by the model's widths)
DEFAULT_MULTIPLE = 8


@dataclass(frozen=True)
class RoundToChoice:
    """What ``round_to="auto"`` measured and chose."""

    value: int                                                   #: the chosen multiple
    seconds: dict[int, float] = field(default_factory=dict)      #: median layer time of each candidate's plan
    macs: dict[int, float] = field(default_factory=dict)         #: MACs per example left by each plan
    default: int | None = None                                   #: the fixed default the candidates had to beat
    rule: str = "measured"          #: "default" (no candidate clearly faster), "measured" or "only candidate"
    ratios: dict[int, dict[str, float]] = field(default_factory=dict)  #: vs the default: median, q1, q3
    rounds: dict[int, list[float]] = field(default_factory=dict)       #: every round's time of each plan
    margin: float | None = None                                  #: how much faster "clearly" meant

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "rule": self.rule, "default": self.default, "margin": self.margin,
                "seconds": {str(k): v for k, v in self.seconds.items()},
                "macs": {str(k): v for k, v in self.macs.items()},
                "ratios": {str(k): dict(v) for k, v in self.ratios.items()},
                "rounds": {str(k): list(v) for k, v in self.rounds.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoundToChoice":
        return cls(int(data["value"]), {int(k): float(v) for k, v in data.get("seconds", {}).items()},
                   {int(k): float(v) for k, v in data.get("macs", {}).items()},
                   None if data.get("default") is None else int(data["default"]), str(data.get("rule", "measured")),
                   {int(k): {n: float(x) for n, x in v.items()} for k, v in data.get("ratios", {}).items()},
                   {int(k): [float(x) for x in v] for k, v in data.get("rounds", {}).items()},
                   None if data.get("margin") is None else float(data["margin"]))

    def describe(self) -> str:
        """One line: what was chosen and why."""
        if self.rule == "default":
            return (f"{self.value} (the default: no multiple measured clearly faster — "
                    f"≥ {100 * (self.margin or 0):g} % in 3 of 4 rounds)")
        if self.rule == "only candidate":
            return f"{self.value} (the only multiple the widths allow)"
        ratio = self.ratios.get(self.value, {}).get("median")
        return (f"{self.value} (measured: {1 / ratio:.2f}× faster than the default {self.default})"
                if ratio else f"{self.value} (measured)")


class AutoRoundTo:
    """``round_to="auto"`` with its settings: pass an instance as ``round_to=`` to change them.

    Args:
        candidates: multiples to try (1 is always tried: the unconstrained plan).
        tolerance: among the candidates that win clearly, the smallest multiple whose median ratio is within
            ``tolerance`` of the best one's is taken (ranking constrained no more than the hardware rewards).
        table: the :class:`~earlyprune.criteria.LatencyTable` that builds and times the layers (its ``warmup``
            untimed rounds come first; its ``batch_size`` None means the batch size of the batches the pruner
            sees; precision and memory format as configured there).
        max_fraction: candidates above this fraction of the median group width are skipped.
        default: the multiple kept unless another wins clearly (:data:`DEFAULT_MULTIPLE`; the largest usable
            candidate ≤ it when the model is narrower).
        margin: "clearly": faster than the default by more than this fraction in three of four rounds (the upper
            quartile of the paired ratios below ``1 − margin``).
        rounds: interleaved timing rounds.
    """

    RULES: dict[str, Rule] = {
        "candidates": rule(Each(Interval(Integral, 1, None))),
        "tolerance": rule(Interval(Real, 0, 1, closed="left"), hint="e.g. 0.03 = within 3 % of the fastest"),
        "table": rule(InstanceOf(LatencyTable, "a LatencyTable"), None),
        "max_fraction": rule(Interval(Real, 0, 1, closed="right")),
        "default": rule(Interval(Integral, 1, None)),
        "margin": rule(Interval(Real, 0, 1, closed="left"), hint="e.g. 0.05 = at least 5 % faster"),
        "rounds": rule(Interval(Integral, 1, None)),
    }

    @checked(RULES)
    def __init__(self, candidates: tuple[int, ...] = CANDIDATES, tolerance: float = 0.01,
                 table: LatencyTable | None = None, max_fraction: float = 0.25, default: int = DEFAULT_MULTIPLE,
                 margin: float = 0.05, rounds: int = 5) -> None:
        self.candidates = tuple(sorted(set(candidates) | {1}))
        self.tolerance = float(tolerance)
        self.table = table if table is not None else LatencyTable(repeats=3, warmup=1)
        self.max_fraction = float(max_fraction)
        self.default, self.margin, self.rounds = int(default), float(margin), int(rounds)

    def usable(self, groups: ChannelGroups) -> tuple[int, ...]:
        """The candidates tried on these groups (at most ``max_fraction`` of the median width)."""
        median = statistics.median(groups.widths()) if len(groups) else 1
        return tuple(c for c in self.candidates if c == 1 or c <= self.max_fraction * median)

    def choose(self, groups: ChannelGroups, scores: Mapping[str, torch.Tensor], amount: float,
               spec: TargetSpec | None = None, *, batch_size: int | None = None, **limits: Any) -> RoundToChoice:
        """Plan ``amount`` with every usable candidate under ``spec``'s other limits (or its fields as keywords; no
        group limit by default), time the plans in interleaved rounds, decide (see the module's rule) and return
        everything measured."""
        spec = TargetSpec.of(spec, limits, UNLIMITED)
        table = self.table
        restore = table.batch_size
        if table.batch_size is None and batch_size is not None:
            table.batch_size = batch_size
        try:
            shapes = input_shapes(groups)
            layers, macs = {}, {}
            for r in self.usable(groups):
                try:
                    plan: Plan = select(groups, scores, amount, spec.but(round_to=r))
                except InfeasibleTargetError:
                    if r == 1:
                        raise
                    continue  # this multiple cannot reach the target: not a candidate
                layers[r] = table.structure_layers(groups, {k: len(v) for k, v in plan.remove.items()}, shapes)
                macs[r] = plan.macs
            default = max(r for r in layers if r <= self.default)
            if len(layers) == 1:
                return RoundToChoice(default, {}, macs, default, "only candidate", margin=self.margin)
            rounds = _interleaved_rounds(table, layers, self.rounds)
        finally:
            table.batch_size = restore
            table.release()
        value, rule_, ratios = decide(rounds, default, self.margin, self.tolerance)
        seconds = {r: statistics.median(ts) for r, ts in rounds.items()}
        return RoundToChoice(value, seconds, macs, default, rule_, ratios, rounds, self.margin)

    def __repr__(self) -> str:
        return (f"AutoRoundTo(candidates={self.candidates}, default={self.default}, margin={self.margin}, "
                f"rounds={self.rounds})")


def _interleaved_rounds(table: LatencyTable, layers: Mapping[int, Mapping[str, int]],
                        rounds: int) -> dict[int, list[float]]:
    """``{candidate: [its plan's layer seconds in each round]}``: every distinct layer timed once per round, in
    an order that rotates (and reverses every other round), after ``table.warmup`` untimed rounds."""
    keys = sorted(set().union(*(set(c) for c in layers.values())))
    out: dict[int, list[float]] = {r: [] for r in layers}
    for i in range(table.warmup + rounds):
        shift = i % len(keys)
        order = keys[shift:] + keys[:shift]
        times = {k: table.sample(k) for k in (order if i % 2 == 0 else order[::-1])}
        if i >= table.warmup:
            for r, counts in layers.items():
                out[r].append(sum(n * times[k] for k, n in counts.items()))
    return out


def decide(rounds: Mapping[int, list[float]], default: int, margin: float, tolerance: float = 0.01
           ) -> tuple[int, str, dict[int, dict[str, float]]]:
    """The multiple to keep from interleaved timings: ``(value, rule, ratios)``.

    ``ratios[r]`` are the median and quartiles over rounds of ``t_r / t_default`` (paired by round). A candidate
    wins clearly when its upper quartile is below ``1 − margin``; the default stays unless one does (rule
    ``"default"``); among clear winners, the smallest multiple within ``tolerance`` of the lowest median ratio
    (rule ``"measured"``).
    """
    base = rounds[default]
    ratios: dict[int, dict[str, float]] = {}
    for r, times in rounds.items():
        paired = [t / b for t, b in zip(times, base) if b > 0]
        if not paired:
            continue
        q1, med, q3 = statistics.quantiles(paired, n=4, method="inclusive") if len(paired) > 1 else (paired[0],) * 3
        ratios[r] = {"median": med, "q1": q1, "q3": q3}
    winners = [r for r, v in ratios.items() if r != default and v["q3"] < 1.0 - margin]
    if not winners:
        return default, "default", ratios
    best = min(ratios[r]["median"] for r in winners)
    return min(r for r in winners if ratios[r]["median"] <= best + tolerance), "measured", ratios


#: ``round_to=`` of EarlyPruner / prune(): an integer ≥ 1, "auto" or an :class:`AutoRoundTo`
ROUND_TO_RULE = Rule(ROUND_TO.constraints + (InstanceOf(AutoRoundTo, "an AutoRoundTo"),), ROUND_TO.hint)


def check_round_to(value: Any) -> int | AutoRoundTo:
    """``round_to`` as given by a user → an integer ≥ 1 or an :class:`AutoRoundTo` (``"auto"``)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AutoRoundTo()
    return ROUND_TO_RULE.check("round_to", value)


def split_round_to(value: Any) -> tuple[int, AutoRoundTo | None]:
    """``round_to`` as given by a user → ``(the multiple plans round to now, the settings of "auto")``: an integer
    ``r`` is ``(r, None)``; ``"auto"`` or an :class:`AutoRoundTo` plans with 1 until it has measured."""
    value = check_round_to(value)
    return (1, value) if isinstance(value, AutoRoundTo) else (value, None)


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
