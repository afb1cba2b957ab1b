"""What a pruning step acts on — whole channels (removed) or single weights (masked) — behind one interface, so
that :class:`~earlyprune.EarlyPruner` and :func:`~earlyprune.prune` conduct both alike.

A level owns the units a criterion scores (:class:`~earlyprune.graph.groups.ChannelGroups` or
:class:`~earlyprune.unstructured.MaskedWeights`), turns scores and a cumulative amount into a plan (one global
ranking either way) and carries it out (the engine's physical removal, or masks), and says what is left.
Granularity ``"both"`` runs a :class:`ChannelLevel` and then a :class:`WeightLevel` on what remains.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch

from ..core.errors import InfeasibleTargetError
from ..core.validation import GRANULARITIES, GRANULARITY, InvalidParameterError  # noqa: F401  (re-exported)
from ..graph.groups import ChannelGroups
from ..graph.masks import MaskedWeights
from ..speed.steptime import StepTimePredictor
from ..surgery.engine import PruningEngine
from ..unstructured.selection import rank_weights, select_weights, subnetwork_counts
from .selection import MAX_GROUP_RATIO, Plan
from .targets import select

#: at most this many weight scores enter the rank correlations recorded per epoch (a fixed, seeded sample)
RANK_SAMPLE = 65_536


def check_granularity(granularity: str, weight_ratio: float | None, weight_criterion: Any, **channel: Any
                       ) -> None:
    """What each granularity accepts: the channel options mean nothing to masks, ``weight_ratio`` belongs to
    ``"both"`` only."""
    if granularity == "both" and weight_ratio is None:
        raise InvalidParameterError("granularity='both' needs weight_ratio= (the final weight sparsity, after the "
                                    "channels are removed), e.g. weight_ratio=0.95")
    if granularity != "both" and (weight_ratio is not None or weight_criterion is not None):
        note = "; at weights, ratio is the weight sparsity" if granularity == "weights" else ""
        raise InvalidParameterError(f"weight_ratio= and weight_criterion= apply to granularity='both' only "
                                    f"(granularity={granularity!r}{note})")
    if granularity != "weights":
        return
    defaults = {"target": "channels", "round_to": 1, "min_channels": 1, "compute_aware": None,
                "latency_aware": False, "num_heads": None, "head_ratio": None}
    wrong = [k for k, v in channel.items() if not (v == defaults[k] or (k == "round_to" and v == "auto"))]
    if wrong:
        raise InvalidParameterError(f"{wrong[0]}= shapes channel pruning; it does not apply to granularity='weights' "
                                    f"(ratio is the weight sparsity): leave it at its default {defaults[wrong[0]]!r}")


class ChannelLevel:
    """Channels: a global ranking → :func:`~earlyprune.planning.selection.select` → :class:`~earlyprune.surgery.engine.PruningEngine`."""

    name = "channels"

    def __init__(self, groups: ChannelGroups, *, target: str = "channels", min_channels: int = 1,
                 max_group_ratio: float = MAX_GROUP_RATIO, clip: bool = False) -> None:
        self.groups = groups
        self.engine = PruningEngine(groups)
        self.target, self.min_channels, self.max_group_ratio = target, min_channels, max_group_ratio
        #: an unreachable amount prunes as far as the constraints allow (with a warning) instead of failing — for a
        #: pruner whose construction-time reachability check was skipped (``checks=False``)
        self.clip = clip
        self.removed: dict[str, list[int]] = {}
        self.plan: Plan | None = None   #: the last plan applied (its ``seconds``: the predicted step, time target)

    @property
    def units(self) -> ChannelGroups:
        return self.groups

    def prune(self, scores: Mapping[str, torch.Tensor], amount: float, optimizer: Any = None,
              round_to: int = 1, predictor: StepTimePredictor | None = None) -> int:
        """Remove channels until ``amount`` of the original ``target`` is gone (``predictor``: the step-time model
        of ``target="latency"``); returns how many were removed."""
        limits = {"target": self.target, "min_channels": self.min_channels, "round_to": round_to,
                  "max_group_ratio": self.max_group_ratio, "predictor": predictor}
        try:
            plan = select(self.groups, scores, amount, **limits)
        except InfeasibleTargetError as exc:
            if not self.clip:  # checked reachable at construction: a failure here is not the user's
                raise
            warnings.warn(f"{exc} — pruning as far as the constraints allow (checks=False skipped the "
                          f"construction-time check)", stacklevel=4)
            plan = select(self.groups, scores, amount, clip=True, **limits)
        self.plan = plan
        self.removed = self.engine.apply(plan, optimizer)
        return sum(len(v) for v in self.removed.values())

    def kept_scores(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``scores`` of the channels the last :meth:`prune` kept, in the numbering the model has after it."""
        out = {}
        for name, values in scores.items():
            keep = torch.ones(len(values), dtype=torch.bool)
            keep[list(self.removed.get(name, []))] = False
            out[name] = values[keep]
        return out

    def structure(self) -> list[int]:
        return self.groups.widths()

    def totals(self) -> dict[str, Any]:
        return {**self.groups.totals(), "structure": self.groups.widths()}


class WeightLevel:
    """Single weights: a global ranking → :func:`~earlyprune.unstructured.select_weights` → masks."""

    name = "weights"

    def __init__(self, weights: MaskedWeights, *, min_weights: int = 1) -> None:
        self.weights = weights
        self.min_weights = min_weights
        self._sample: torch.Tensor | None = None

    @property
    def units(self) -> MaskedWeights:
        return self.weights

    def prune(self, scores: Mapping[str, torch.Tensor], amount: float, optimizer: Any = None,
              round_to: int = 1) -> int:
        """Mask weights until ``amount`` of the baseline weights are gone; returns how many were newly masked."""
        plan = select_weights(self.weights, scores, amount, min_weights=self.min_weights)
        return self.weights.apply(plan.keep, optimizer)

    def kept_scores(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The scores as they are: masks keep every shape, and masked weights are never chosen again."""
        return dict(scores)

    def fallback_scores(self) -> dict[str, torch.Tensor]:
        """``|θ|``: what a step scores with when its criterion has seen no batch (a pruning epoch cut short)."""
        return {t.name: t.value.detach().abs().float() for t in self.weights}

    def structure(self) -> list[int]:
        return self.weights.widths()

    def totals(self) -> dict[str, Any]:
        return {**self.weights.totals(), "weight_structure": self.weights.widths()}

    # -- what the signal recorder asks of a level (see SignalRecorder.start(level=)) ----------------------------
    def subnetworks(self, scores: Mapping[str, torch.Tensor], ratios: list[float]) -> dict[float, list[int]]:
        """Kept weights per tensor of the top-k at each ratio: the weight-level N_t (Ψ / EPI)."""
        return subnetwork_counts(self.weights, scores, ratios, min_weights=self.min_weights)

    def keep_masks(self, scores: Mapping[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
        """The masks the global ranking would give at ``ratio`` (for the mask distance between epochs)."""
        rank = rank_weights(self.weights, scores, min_weights=self.min_weights)
        return select_weights(self.weights, scores, ratio, min_weights=self.min_weights, ranking=rank).keep

    def score_vector(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The scores of a fixed, seeded sample of at most :data:`RANK_SAMPLE` weights, for rank correlations
        (Kendall's τ over millions of weights every epoch would cost seconds)."""
        flat = torch.cat([torch.as_tensor(scores[t.name]).detach().float().cpu().reshape(-1) for t in self.weights])
        if flat.numel() <= RANK_SAMPLE:
            return flat
        if self._sample is None or int(self._sample.max()) >= flat.numel():
            self._sample = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:RANK_SAMPLE]
        return flat[self._sample]


__all__ = ["ChannelLevel", "GRANULARITIES", "GRANULARITY", "WeightLevel", "check_granularity"]
