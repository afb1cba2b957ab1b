"""How much to remove, and which channels: one global ranking → a removal plan and its structure vector.

All channels of all groups are ranked by score together (PaT ranks neurons globally). The lowest-ranked ones
are removed until the target is met:

* ``target="channels"`` — at least ``amount·|F|`` channels are gone, ``|F|`` being the channel count of the
  original model (PaT Eq. 1: ``|P| / |F| ≥ α``);
* ``target="flops"`` / ``"params"`` — MACs (or parameters) are down by ``amount`` of the original's; the number
  of channels that achieves it is found by binary search over the ranking, with the exact cost model of
  :mod:`earlyprune.graph.cost`;
* ``target="latency"`` — the predicted training-step time is down by ``amount`` of the measured dense step's:
  channels are ranked by importance per second saved under a
  :class:`~earlyprune.speed.steptime.StepTimePredictor` (greedy knapsack, :mod:`earlyprune.planning.timebudget`;
  :func:`earlyprune.planning.targets.select` plans every target).

Every group keeps at least ``min_channels`` (its best-scored ones: no layer collapses) and at
least ``1 − max_group_ratio`` of its original width (a relative floor: a global ranking of scores whose scale
differs per layer — e.g. PaT Eq. 2 early in training, which is the layer's initialisation scale — would otherwise
cut whole wide layers to the absolute floor), and with ``round_to=r`` every group's kept width is rounded to the
nearest multiple of ``r`` (hardware-friendly
widths; a group narrower than ``r`` is left alone). Groups feeding ``nn.MultiheadAttention`` keep a multiple of its
``num_heads`` the same way. Channels that must go together — position ``j`` of every group of a grouped
convolution, or all channels of one attention head — are ranked and removed as one unit (their mean score).
A target those constraints make unreachable raises
:class:`~earlyprune.core.errors.InfeasibleTargetError` naming the limiting groups and the reachable maximum
(:func:`check_reachable` says so before training; ``select(..., clip=True)`` prunes as far as allowed instead).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from ..core.errors import InfeasibleTargetError, NonFiniteError
from ..core.validation import (
    AMOUNT,
    STEPS,
    TARGETS,  # noqa: F401  (re-exported: earlyprune.planning.selection.TARGETS)
    InvalidParameterError,
    Options,
    rule,
)
from ..graph.groups import ChannelGroups
from ..graph.plan import Plan  # noqa: F401  (re-exported: earlyprune.planning.selection.Plan)
from .spec import MAX_GROUP_RATIO, TargetSpec  # noqa: F401  (MAX_GROUP_RATIO re-exported)

#: the target's rules, shared by :func:`select` and every entry point that plans one (:class:`TargetSpec`'s)
TARGET_RULES = {k: v for k, v in TargetSpec.RULES.items() if k != "ratio"}
#: a plan meets its goal within this fraction of the baseline (float noise), and a target is reachable when the
#: reachable fraction falls short of it by no more than this
TOLERANCE = 1e-9


def group_limits(groups: ChannelGroups, spec: TargetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the granularity of kept widths (``round_to``, whole units, what the layers require: attention
    heads) and the fewest channels it must keep (``min_channels`` and ``1 − max_group_ratio`` of its original
    width, rounded up to the granularity, at most its current width)."""
    step = np.array([math.lcm(spec.round_to, g.unit_size, g.width_multiple) for g in groups], dtype=np.int64)
    floor = np.empty(len(groups), dtype=np.int64)
    original = groups.original_widths
    for g in groups:
        relative = math.ceil((1.0 - float(spec.max_group_ratio)) * original.get(g.name, g.width) - 1e-9)
        need = max(spec.min_channels, relative, 1)
        floor[g.index] = min(g.width, math.ceil(need / step[g.index]) * step[g.index])
    return step, floor


def _granularity(groups: ChannelGroups, spec: TargetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(widths, unit, step, min_keep)`` per group: current widths, channels per removable unit and
    :func:`group_limits`."""
    widths = np.array(groups.widths(), dtype=np.int64)
    unit = np.array([g.unit_size for g in groups], dtype=np.int64)
    step, min_keep = group_limits(groups, spec)
    return widths, unit, step, min_keep


def _rounded(widths: np.ndarray, removed: np.ndarray, step: np.ndarray, min_keep: np.ndarray) -> np.ndarray:
    """``removed`` after rounding every kept width to the nearest multiple of its ``step`` (a group narrower than
    its step is left alone; no group below its ``min_keep``)."""
    kept = widths - removed
    rounded = np.round(kept / step).astype(np.int64) * step
    rounded = np.where(widths < step, widths, rounded)
    return widths - np.clip(rounded, np.minimum(min_keep, widths), widths)


def _measure(groups: ChannelGroups, target: str, widths: np.ndarray):  # noqa: ANN202 - a cost function
    cost = groups.cost
    return {"channels": lambda r: float((widths - r).sum()), "flops": cost.macs, "params": cost.params}[target]


def _most_removed(groups: ChannelGroups, spec: TargetSpec) -> np.ndarray:
    """Channels removed per group when every group is cut to its minimum (what no plan can exceed)."""
    widths, unit, step, min_keep = _granularity(groups, spec)
    removed = (widths - min_keep) // unit * unit
    return _rounded(widths, removed, step, min_keep) if (step > unit).any() else removed


def reachable(groups: ChannelGroups, spec: TargetSpec | None = None, **limits: object) -> float:
    """The largest fraction of the original ``spec.target`` quantity a plan can remove under its limits (counting
    what was removed before: the groups' ``baseline`` is the reference). The limits may be given as keywords
    (:class:`TargetSpec`'s fields) instead of ``spec``."""
    spec = TargetSpec.of(spec, limits)
    widths = np.array(groups.widths(), dtype=np.int64)
    left = _measure(groups, spec.target, widths)(_most_removed(groups, spec))
    base = groups.baseline[{"flops": "macs"}.get(spec.target, spec.target)]
    return 1.0 - left / base if base > 0 else 0.0


def check_reachable(groups: ChannelGroups, amount: float, spec: TargetSpec | None = None, **limits: object) -> None:
    """Raise :class:`~earlyprune.core.errors.InfeasibleTargetError` if no plan can remove ``amount`` of the target —
    before anything is trained: it names the groups that limit it and the reachable maximum. (The time target is
    predicted, not counted: it prunes as far as the constraints allow and says so.)"""
    spec = TargetSpec.of(spec, limits)
    if spec.target == "latency":   # predicted, not counted: refused only when no channel at all may go
        if reachable(groups, spec.but(target="channels")) <= TOLERANCE:
            raise InfeasibleTargetError(f"the time target cannot remove anything with {spec.limits()}: no group may "
                                        f"lose a channel; lower min_channels or round_to, or raise max_group_ratio")
        return
    most = reachable(groups, spec)
    if most + TOLERANCE < float(amount):
        raise InfeasibleTargetError(_unreachable(groups, float(amount), most, spec))


def _unreachable(groups: ChannelGroups, amount: float, most: float, spec: TargetSpec) -> str:
    """Why ``amount`` cannot be removed: the groups that cannot give up their share, heaviest first."""
    target = spec.target
    widths = np.array(groups.widths(), dtype=np.int64)
    floor = widths - _most_removed(groups, spec)
    per_channel = {"channels": np.ones(len(widths)),
                   "flops": np.array([g.macs_per_channel for g in groups]),
                   "params": np.array([g.params_per_channel for g in groups])}[target]
    excess = (floor - (1.0 - amount) * widths) * per_channel
    limiting = [i for i in np.argsort(-excess, kind="stable") if excess[i] > 0]
    what = {"channels": "channels", "flops": "MACs", "params": "parameters"}[target]
    head = f"cannot remove {amount:.1%} of the {what} with {spec.limits()}: at most {max(most, 0.0):.1%} can be removed"
    ratio = math.floor(max(most, 0.0) * 1000) / 1000
    lower_ratio = f", or the ratio to at most {ratio:g}" if ratio > 0 else ""
    if limiting:
        shown = ", ".join(f"{groups[int(i)].name} (width {widths[i]}, keeps ≥ {floor[i]})" for i in limiting[:4])
        more = f" and {len(limiting) - 4} more" if len(limiting) > 4 else ""
        return f"{head}; limited by group(s) {shown}{more}: lower min_channels or round_to, raise max_group_ratio{lower_ratio}"
    return (f"{head}: the layers outside the prunable groups (output and ignored layers) keep the rest; prune by "
            f"another target{lower_ratio}")


def select(groups: ChannelGroups, scores: Mapping[str, torch.Tensor], amount: float, spec: TargetSpec | None = None,
           *, clip: bool = False, **limits: object) -> Plan:
    """Choose the channels to remove so that ``amount`` of the original model's ``spec.target`` quantity is gone.

    Args:
        groups: the model's channel groups (their ``baseline`` is the reference for ``amount``).
        scores: per-group channel scores (higher = more important), one 1-D tensor per group name.
        amount: fraction in [0, 1) of the original channels / MACs / parameters that must be removed in total,
            counting what earlier plans already removed.
        spec: the target and its limits (:class:`~earlyprune.planning.spec.TargetSpec`: ``target`` ``"channels"``,
            ``"flops"`` or ``"params"`` — ``"latency"`` is planned by :func:`earlyprune.planning.targets.select`,
            which needs the step-time predictor —, ``min_channels``, ``round_to``, ``max_group_ratio``); or its
            fields as keywords.
        clip: when no plan reaches ``amount`` under the constraints, prune as far as they allow instead of raising
            :class:`~earlyprune.core.errors.InfeasibleTargetError` (the signals' N_t at fixed ratios).

    The plan removes the fewest lowest-ranked units whose removal meets the target; with ``round_to`` > 1 the
    rounding of kept widths may remove a little more.
    """
    AMOUNT.check("ratio", amount)
    spec = TargetSpec.of(spec, limits)
    if spec.target == "latency":
        raise InvalidParameterError("target='latency' is planned with the step-time predictor: use "
                                    "earlyprune.select(..., target='latency', "
                                    "predictor=earlyprune.measure_step_time(groups, batch_size=...))")
    target = spec.target
    unit_orders = ranked_units(groups, scores)
    widths, unit, step, min_keep = _granularity(groups, spec)
    cand_scores, cand_groups = [], []
    for g in groups:
        unit_scores, order = unit_orders[g.index]
        n_cand = (g.width - min_keep[g.index]) // g.unit_size
        cand_scores.append(unit_scores[order[:n_cand]])
        cand_groups.append(np.full(n_cand, g.index, dtype=np.int64))
    removed = np.zeros(len(widths), dtype=np.int64)
    for members, part_amount in _budgets(groups, amount, target):
        chosen = np.isin(np.arange(len(widths)), members)
        part_scores = [c for c, g in zip(cand_scores, groups) if chosen[g.index]]
        part_groups = [c for c, g in zip(cand_groups, groups) if chosen[g.index]]
        all_scores = np.concatenate(part_scores) if part_scores else np.zeros(0)
        all_groups = np.concatenate(part_groups) if part_groups else np.zeros(0, dtype=np.int64)
        ranked_groups = all_groups[np.argsort(all_scores, kind="stable")]

        def removed_for(n: int) -> np.ndarray:
            removed = np.bincount(ranked_groups[:n], minlength=len(widths)) * unit
            if (step > unit).any():
                removed = np.where(chosen, _rounded(widths, removed, step, min_keep), 0)
            return removed

        whole = len(members) == len(widths)
        if whole:
            measure = _measure(groups, target, widths)
            baseline = groups.baseline[{"flops": "macs"}.get(target, target)]
        else:  # one part of a per-part budget: channels of its groups
            baseline = float(np.asarray(groups.baseline_widths)[chosen].sum())
            measure = lambda r: float((widths - r)[chosen].sum())  # noqa: E731
        goal = (1.0 - float(part_amount)) * baseline
        tol = TOLERANCE * max(baseline, 1.0)  # relative: MACs run to billions, channels to tens
        lo, hi = 0, len(ranked_groups)
        if measure(removed_for(hi)) > goal + tol:
            # a part scaled past its whole (head_ratio > ratio at a small signal ratio) prunes as far as allowed
            if not clip and whole:
                raise InfeasibleTargetError(_unreachable(groups, float(part_amount), reachable(groups, spec), spec))
            if not clip and part_amount < 1.0:
                part = groups[int(members[0])].part
                raise InfeasibleTargetError(f"cannot remove {part_amount:.1%} of the {part} with {spec.limits()}: "
                                            f"their groups cannot lose that much; lower min_channels or round_to, "
                                            f"raise max_group_ratio, or the part's ratio")
            lo = hi
        while lo < hi:  # smallest n whose plan meets the goal (hi always does: the search keeps that invariant)
            mid = (lo + hi) // 2
            if measure(removed_for(mid)) <= goal + tol:
                hi = mid
            else:
                lo = mid + 1
        removed += removed_for(lo)
    return plan_for(groups, unit_orders, removed)


def ranked_units(groups: ChannelGroups, scores: Mapping[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group (validated): the score of each removable unit — position ``j`` of every convolution group, or one
    attention head, scoring the mean of its channels — and the units in ascending score order."""
    out = []
    for g in groups:
        if g.name not in scores:
            raise InvalidParameterError(f"scores are missing group {g.name!r}: give one 1-D tensor of channel scores "
                                        f"per group name (groups.names)")
        s = torch.as_tensor(scores[g.name]).detach().float().cpu()
        if s.dim() != 1 or s.numel() != g.width:
            raise InvalidParameterError(f"scores for group {g.name!r} have shape {tuple(s.shape)}, expected "
                                        f"({g.width},): one score per channel of the group as it is now")
        if not torch.isfinite(s).all():
            raise NonFiniteError(f"scores for group {g.name!r} contain NaN or infinity: the weights or gradients they "
                                 f"come from are not finite (a learning rate too high, or fp16/bf16 overflow)")
        unit_scores = s[g.units()].mean(1)
        out.append((unit_scores.numpy(), torch.argsort(unit_scores, stable=True).numpy()))
    return out


def plan_for(groups: ChannelGroups, unit_orders: list[tuple[np.ndarray, np.ndarray]], removed: np.ndarray) -> Plan:
    """The plan removing ``removed[g]`` channels of each group: its lowest-scored units."""
    names = groups.names
    widths = np.array(groups.widths(), dtype=np.int64)
    remove = {}
    for i, g in enumerate(groups):
        if removed[i] > 0:
            positions = unit_orders[i][1][: removed[i] // g.unit_size]
            units = g.units()
            remove[names[i]] = sorted(units[torch.as_tensor(positions, dtype=torch.long)].reshape(-1).tolist())
    kept = (widths - removed).tolist()
    return Plan(remove=remove, structure=[int(k) for k in kept], names=names, channels=int(sum(kept)),
                macs=groups.cost.macs(removed), params=groups.cost.params(removed))


def _budgets(groups: ChannelGroups, amount: float, target: str) -> list[tuple[np.ndarray, float]]:
    """The groups ranked together and the fraction each such set loses: all groups and ``amount``, or — when
    :attr:`~earlyprune.graph.groups.ChannelGroups.part_ratios` scales a part (attention heads) — one set per part,
    each losing ``amount × scale`` of its own original channels."""
    everything = np.arange(len(groups))
    if not groups.part_ratios:
        return [(everything, amount)]
    if target != "channels":
        raise InvalidParameterError(f"per-part ratios (e.g. a head ratio) count channels: use target='channels', "
                                    f"not {target!r}")
    parts: dict[str, list[int]] = {}
    for g in groups:
        parts.setdefault(g.part, []).append(g.index)
    # a part scaled past 1 (head_ratio > ratio at a small signal ratio) prunes as far as its constraints allow
    return [(np.array(members), min(amount * groups.part_ratios.get(part, 1.0), 1.0)) for part, members in parts.items()]


def iterative_amounts(amount: float, steps: int) -> list[float]:
    """Cumulative removal fractions for ``steps`` pruning steps (PaT Algorithm 1, line 1).

    The exponential scheduler of FORCE: what remains decays geometrically, ``remaining_i = (1 − α)^(i/S)``, so
    early steps remove more and later ones refine. Returns ``[1 − remaining_i for i in 1..S]``; the last is α.
    """
    STEPS.check("steps", steps)
    return [1.0 - (1.0 - amount) ** (i / steps) for i in range(1, steps)] + [float(amount)]


def halving_amounts(amount: float, steps: int) -> list[float]:
    """Cumulative removal fractions of CroPit / SNAP-it (iterative pruning before training): step ``i`` removes
    up to ``ρ − (ρ − 0.5)·0.5^i`` (``i = 0 … S−2``), the last step ``ρ`` itself — 50 % first, then half of what is
    left to the target at every rescoring. Meant for high targets; for ``ρ ≤ 0.5`` every step is capped at
    ``ρ`` (one shot, then nothing left to remove)."""
    STEPS.check("steps", steps)
    rho = float(amount)
    return [min(rho, rho - (rho - 0.5) * 0.5 ** i) for i in range(steps - 1)] + [rho]


#: cumulative step schedules by name: "exponential" — PaT Algorithm 1 / FORCE, what EarlyPruner uses in a pruning
#: epoch during training; "halving" — CroPit / SNAP-it, iterative pruning before training (prune(), ``before``)
SCHEDULES = {"exponential": iterative_amounts, "halving": halving_amounts}
SCHEDULE = rule(Options(tuple(SCHEDULES)), hint="the cumulative fractions of the pruning steps")


def step_amounts(amount: float, steps: int, schedule: str = "exponential") -> list[float]:
    """Cumulative removal fractions for ``steps`` pruning steps under the named ``schedule`` (see
    :data:`SCHEDULES`)."""
    SCHEDULE.check("schedule", schedule)
    return SCHEDULES[schedule](amount, steps)
