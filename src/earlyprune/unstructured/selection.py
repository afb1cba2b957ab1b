"""How many weights, and which: one global ranking of every prunable weight → a mask per tensor.

All weights of all masked tensors are ranked by score together (SNIP, GraSP, CroP and LTR rank globally) and the
highest are kept, so that ``amount`` of the ``baseline`` prunable weights are gone in total:

    kept = round((1 − amount) · baseline)

(weights removed with whole channels count as gone: they are not among the entries kept). Weights pruned by an
earlier mask stay pruned — a mask only ever loses entries, as in CroPit / SNIP-it's iterative schedule (rescore,
prune more) and LTR's rounds. Every tensor keeps at least ``min_weights`` of its best-scored entries (no layer is
cut off entirely; REFERENCE pitfall 2 at weight level). Ties are broken by position (a stable sort), so a plan is
reproducible.

The cumulative amounts of an iterative schedule come from :func:`earlyprune.planning.selection.step_amounts` — the
``"halving"`` one is CroPit's ``ρ_i = ρ − (ρ − 0.5)·0.5^i`` (EarlyCroP Algorithm 1, line 13).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Iterable, Mapping

import torch

from ..core.validation import Interval, InvalidParameterError, checked, rule
from ..graph.masks import MaskedWeights


@dataclass(frozen=True)
class MaskPlan:
    """The masks to apply (True = kept) and what remains."""

    keep: dict[str, torch.Tensor]
    structure: list[int]   #: kept weights per tensor, in tensor order
    names: list[str]
    kept: int              #: weights kept in the masked tensors
    baseline: int          #: the prunable weights ``amount`` refers to

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.baseline


#: the fraction of the prunable weights to prune (0 is a step that prunes nothing)
WEIGHT_AMOUNT = rule(Interval(Real, 0, 1, closed="left"), hint="the fraction of the weights to prune")
MIN_WEIGHTS = rule(Interval(Integral, 0, None), hint="weights every tensor keeps")


def validate_amount(amount: float) -> None:
    WEIGHT_AMOUNT.check("ratio", amount)


@dataclass(frozen=True)
class Ranking:
    """Every prunable weight in keep order: the per-tensor floor first, then by score (ties by position), weights
    pruned before last. ``order`` indexes the tensors' entries concatenated in tensor order."""

    order: torch.Tensor       #: flat indices, best first
    owner: torch.Tensor       #: tensor index of each flat entry
    n_forced: int             #: entries kept by the floor
    n_alive: int              #: entries not pruned before
    baseline: int

    def goal(self, amount: float) -> int:
        """Weights to keep for ``amount`` of the baseline pruned, within what the floor and the masks allow."""
        return min(max(round((1.0 - float(amount)) * self.baseline), self.n_forced), self.n_alive)


@checked({"min_weights": MIN_WEIGHTS})
def rank_weights(weights: MaskedWeights, scores: Mapping[str, torch.Tensor], *, min_weights: int = 1) -> Ranking:
    """One global ranking of every prunable weight (see the module docstring)."""
    flat, forced, alive_parts, owners = [], [], [], []
    for i, t in enumerate(weights):
        if t.name not in scores:
            raise InvalidParameterError(f"scores are missing weight {t.name!r}")
        s = torch.as_tensor(scores[t.name]).detach().float().cpu()
        if s.numel() != t.width:
            raise InvalidParameterError(f"scores for {t.name!r} have {s.numel()} entries, the weight {t.width}")
        if not torch.isfinite(s).all():
            raise InvalidParameterError(f"scores for {t.name!r} contain NaN or infinity; check the loss and criterion")
        s = s.reshape(-1).clone()
        mask = t.mask
        alive = torch.ones(t.width, dtype=torch.bool) if mask is None else mask.detach().cpu().reshape(-1)
        s[~alive] = -torch.inf                             # pruned before: stays pruned
        floor = torch.zeros(t.width, dtype=torch.bool)
        n_floor = min(min_weights, int(alive.sum()))
        if n_floor:
            floor[torch.argsort(s, descending=True, stable=True)[:n_floor]] = True
        flat.append(s.masked_fill(floor, torch.inf))       # the floor first, then the best of the rest
        forced.append(floor)
        alive_parts.append(alive)
        owners.append(torch.full((t.width,), i, dtype=torch.int32))
    ranked = torch.cat(flat)
    return Ranking(order=torch.argsort(ranked, descending=True, stable=True), owner=torch.cat(owners),
                   n_forced=int(torch.cat(forced).sum()), n_alive=int(torch.cat(alive_parts).sum()),
                   baseline=weights.baseline)


def select_weights(weights: MaskedWeights, scores: Mapping[str, torch.Tensor], amount: float, *,
                   min_weights: int = 1, ranking: Ranking | None = None) -> MaskPlan:
    """Keep the globally highest-scored weights so that ``amount`` of ``weights.baseline`` are pruned.

    Args:
        weights: the model's prunable weights (their current masks are respected).
        scores: one tensor per weight name, shaped like the weight (higher = keep).
        amount: cumulative fraction in [0, 1) of the baseline weights pruned after this plan.
        min_weights: entries every tensor keeps at least (default 1).
        ranking: a :func:`rank_weights` of the same scores, to reuse.
    """
    validate_amount(amount)
    rank = ranking if ranking is not None else rank_weights(weights, scores, min_weights=min_weights)
    wanted = round((1.0 - float(amount)) * rank.baseline)
    if wanted < rank.n_forced:
        warnings.warn(f"cannot prune {amount:.1%} of the weights with min_weights={min_weights}: every tensor keeps "
                      f"{min_weights}", stacklevel=2)
    if wanted > rank.n_alive:
        warnings.warn(f"{amount:.1%} of the weights are already pruned (or removed with channels): nothing more to "
                      f"prune", stacklevel=2)
    keep_all = torch.zeros(rank.order.numel(), dtype=torch.bool)
    keep_all[rank.order[:rank.goal(amount)]] = True
    keep, structure, offset = {}, [], 0
    for t in weights:
        part = keep_all[offset:offset + t.width]
        offset += t.width
        keep[t.name] = part.reshape(t.shape)
        structure.append(int(part.sum()))
    return MaskPlan(keep=keep, structure=structure, names=weights.names, kept=int(keep_all.sum()),
                    baseline=weights.baseline)


def subnetwork_counts(weights: MaskedWeights, scores: Mapping[str, torch.Tensor], ratios: Iterable[float], *,
                      min_weights: int = 1) -> dict[float, list[int]]:
    """Kept weights per tensor of the sub-network the global ranking selects at each ratio — the weight-level
    ``N_t`` that PaT's Ψ / EPI compare between epochs (see :class:`~earlyprune.policies.EPI`). One ranking serves
    every ratio."""
    rank = rank_weights(weights, scores, min_weights=min_weights)
    out = {}
    for ratio in ratios:
        validate_amount(ratio)
        counts = torch.bincount(rank.owner[rank.order[:rank.goal(ratio)]].long(), minlength=len(weights))
        out[ratio] = [int(c) for c in counts]
    return out


def mask_distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Normalised Hamming distance of two weight masks (Early-Bird's mask distance, at weight level): the
    fraction of entries kept in one and pruned in the other."""
    if set(a) != set(b):
        raise InvalidParameterError("the masks cover different weights")
    differ = total = 0
    for name, m in a.items():
        other = b[name]
        if other.shape != m.shape:
            raise InvalidParameterError(f"masks of {name!r} have different shapes {tuple(m.shape)} and {tuple(other.shape)}")
        differ += int((m.bool() != other.bool()).sum())
        total += m.numel()
    if total == 0:
        raise InvalidParameterError("masks must not be empty")
    return differ / total


__all__ = ["MaskPlan", "Ranking", "mask_distance", "rank_weights", "select_weights", "subnetwork_counts",
           "validate_amount"]
