"""How much to remove, and which channels: one global ranking → a removal plan and its structure vector.

All channels of all groups are ranked by score together (PaT ranks neurons globally). The lowest-ranked ones
are removed until the target is met:

* ``target="channels"`` — at least ``amount·|F|`` channels are gone, ``|F|`` being the channel count of the
  original model (PaT Eq. 1: ``|P| / |F| ≥ α``);
* ``target="flops"`` / ``"params"`` — MACs (or parameters) are down by ``amount`` of the original's; the number
  of channels that achieves it is found by binary search over the ranking, with the exact cost model of
  :mod:`earlyprune.cost`.

Every group keeps at least ``min_channels`` (its best-scored ones: no layer collapses, REFERENCE pitfall 2), and
with ``round_to=r`` every group's kept width is rounded to the nearest multiple of ``r`` (hardware-friendly
widths; a group narrower than ``r`` is left alone). Groups feeding ``nn.MultiheadAttention`` keep a multiple of its
``num_heads`` the same way. Channels that must go together — position ``j`` of every group of a grouped
convolution, or all channels of one attention head — are ranked and removed as one unit (their mean score).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from .groups import ChannelGroups
from .validation import AMOUNT, MIN_CHANNELS, MULTIPLE, STEPS, TARGET, Rule, check_args
from .validation import TARGETS  # noqa: F401  (re-exported: earlyprune.selection.TARGETS)

#: the target's rules, shared by :func:`select` and every entry point that plans one
TARGET_RULES = {"target": TARGET, "min_channels": MIN_CHANNELS, "round_to": MULTIPLE}


@dataclass(frozen=True)
class Plan:
    """What to remove: channel indices per group (current numbering) and what remains."""

    remove: dict[str, list[int]]
    structure: list[int]   #: kept channels per group, in group order — PaT's N_t
    names: list[str]
    channels: int          #: channels left (summed over groups)
    macs: float            #: MACs per example left (predicted by the cost model)
    params: float          #: parameters left (predicted)

    @property
    def n_removed(self) -> int:
        return sum(len(v) for v in self.remove.values())

    def is_empty(self) -> bool:
        return self.n_removed == 0


def validate_target(amount: float, target: str, min_channels: int, round_to: int, *,
                    rule: Rule = AMOUNT) -> None:
    """Raise a clear error for an unusable target (shared by every entry point): ``amount`` checked by ``rule``
    (:data:`~earlyprune.validation.AMOUNT`, [0, 1), for a plan; :data:`~earlyprune.validation.RATIO`, (0, 1),
    for a run's ratio) under the name ``ratio``."""
    rule.check("ratio", amount)
    check_args(TARGET_RULES, {"target": target, "min_channels": min_channels, "round_to": round_to})


def select(groups: ChannelGroups, scores: Mapping[str, torch.Tensor], amount: float, *,
           target: str = "channels", min_channels: int = 1, round_to: int = 1) -> Plan:
    """Choose the channels to remove so that ``amount`` of the original model's ``target`` quantity is gone.

    Args:
        groups: the model's channel groups (their ``baseline`` is the reference for ``amount``).
        scores: per-group channel scores (higher = more important), one 1-D tensor per group name.
        amount: fraction in [0, 1) of the original channels / MACs / parameters that must be removed in total,
            counting what earlier plans already removed.
        target: ``"channels"``, ``"flops"`` or ``"params"``.
        min_channels: channels every group keeps at least.
        round_to: kept widths are rounded to a multiple of this.
    """
    validate_target(amount, target, min_channels, round_to)
    names = groups.names
    widths = np.array(groups.widths(), dtype=np.int64)
    unit = np.array([g.unit_size for g in groups], dtype=np.int64)   # channels per removable unit
    # granularity of kept widths: round_to, whole units, and what the layers require (attention heads)
    step = np.array([math.lcm(round_to, g.unit_size, g.width_multiple) for g in groups], dtype=np.int64)
    units = [g.units() for g in groups]
    per_group_order: list[np.ndarray] = []
    cand_scores, cand_groups = [], []
    min_keep = np.empty(len(widths), dtype=np.int64)
    for g in groups:
        if g.name not in scores:
            raise ValueError(f"scores are missing group {g.name!r}")
        s = torch.as_tensor(scores[g.name]).detach().float().cpu()
        if s.dim() != 1 or s.numel() != g.width:
            raise ValueError(f"scores for group {g.name!r} have shape {tuple(s.shape)}, expected ({g.width},)")
        if not torch.isfinite(s).all():
            raise ValueError(f"scores for group {g.name!r} contain NaN or infinity; check the loss and criterion")
        # a unit (position j of every convolution group, or one attention head) scores the mean of its channels
        unit_scores = s[units[g.index]].mean(1)
        order = torch.argsort(unit_scores, stable=True).numpy()
        per_group_order.append(order)
        keep = min(g.width, math.ceil(min_channels / step[g.index]) * step[g.index])
        min_keep[g.index] = keep
        n_cand = (g.width - keep) // g.unit_size
        cand_scores.append(unit_scores.numpy()[order[:n_cand]])
        cand_groups.append(np.full(n_cand, g.index, dtype=np.int64))
    cost = groups.cost
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
                kept = widths - removed
                rounded = np.round(kept / step).astype(np.int64) * step
                rounded = np.where(widths < step, widths, rounded)
                kept = np.clip(rounded, np.minimum(min_keep, widths), widths)
                removed = np.where(chosen, widths - kept, 0)
            return removed

        if len(members) < len(widths):  # one part of a per-part budget: channels of its groups
            baseline = float(np.asarray(groups.baseline_widths)[chosen].sum())
            measure = lambda r: float((widths - r)[chosen].sum())  # noqa: E731
            goal = (1.0 - part_amount) * baseline
        else:
            measure = {"channels": lambda r: float((widths - r).sum()), "flops": cost.macs,
                       "params": cost.params}[target]
            goal = (1.0 - float(part_amount)) * groups.baseline[{"flops": "macs"}.get(target, target)]
        lo, hi = 0, len(ranked_groups)
        if measure(removed_for(hi)) > goal + 1e-6:
            warnings.warn(
                f"cannot remove {part_amount:.1%} of the {target} with min_channels={min_channels}, "
                f"round_to={round_to}: pruning as far as the constraints allow", stacklevel=2)
            lo = hi
        while lo < hi:  # smallest n whose plan meets the goal; removal is monotone in n
            mid = (lo + hi) // 2
            if measure(removed_for(mid)) <= goal + 1e-6:
                hi = mid
            else:
                lo = mid + 1
        removed += removed_for(lo)
    remove = {}
    for i, g in enumerate(groups):
        if removed[i] > 0:
            positions = per_group_order[i][: removed[i] // g.unit_size]
            remove[names[i]] = sorted(units[i][torch.as_tensor(positions, dtype=torch.long)].reshape(-1).tolist())
    kept = (widths - removed).tolist()
    return Plan(remove=remove, structure=[int(k) for k in kept], names=names, channels=int(sum(kept)),
                macs=cost.macs(removed), params=cost.params(removed))


def _budgets(groups: ChannelGroups, amount: float, target: str) -> list[tuple[np.ndarray, float]]:
    """The groups ranked together and the fraction each such set loses: all groups and ``amount``, or — when
    :attr:`~earlyprune.groups.ChannelGroups.part_ratios` scales a part (attention heads) — one set per part,
    each losing ``amount × scale`` of its own original channels."""
    everything = np.arange(len(groups))
    if not groups.part_ratios:
        return [(everything, amount)]
    if target != "channels":
        raise ValueError(f"per-part ratios (e.g. a head ratio) count channels: use target='channels', not {target!r}")
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


def step_amounts(amount: float, steps: int, schedule: str = "exponential") -> list[float]:
    """Cumulative removal fractions for ``steps`` pruning steps under the named ``schedule`` (see
    :data:`SCHEDULES`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    return SCHEDULES[schedule](amount, steps)
