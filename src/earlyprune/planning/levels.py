"""What a pruning step acts on — whole channels (removed) or single weights (masked) — behind one interface, so
that :class:`~earlyprune.EarlyPruner` and :func:`~earlyprune.prune` conduct both alike.

A level owns the units a criterion scores (:class:`~earlyprune.graph.groups.ChannelGroups` or
:class:`~earlyprune.unstructured.MaskedWeights`), turns scores and a cumulative amount into a plan (one global
ranking either way) and carries it out (the engine's physical removal, or masks), and says what is left.
Granularity ``"both"`` runs a :class:`ChannelLevel` and then a :class:`WeightLevel` on what remains.

The channel level also owns what its plans need measured on the device, once, at its first step: the multiple of
``round_to="auto"`` (:mod:`earlyprune.planning.rounding`) and the step-time predictor of ``target="latency"``
(:mod:`earlyprune.speed.steptime`, measured on the dense model and refitted at the run's final plan) — so both entry
points measure them the same way.
"""

from __future__ import annotations

import logging
import warnings
from numbers import Integral
from typing import Any, Mapping

import numpy as np
import torch

from ..core.distributed import broadcast_object
from ..core.errors import InfeasibleTargetError
from ..core.timing import Stopwatch
from ..core.validation import (  # noqa: F401  (GRANULARITIES re-exported)
    EXAMPLE_INPUTS,
    GRANULARITIES,
    GRANULARITY,
    GROUP_RATIO,
    IGNORED_LAYERS,
    MIN_CHANNELS,
    MODEL,
    RATIO,
    STEPS,
    TARGET,
    Callable_,
    InstanceOf,
    Interval,
    InvalidParameterError,
    Rule,
    rule,
)
from ..criteria.modifiers import COMPUTE_AWARE, LATENCY_AWARE
from ..graph.groups import ChannelGroups
from ..graph.masks import MaskedWeights
from ..speed.steptime import StepTime, StepTimePredictor
from ..surgery.engine import PruningEngine
from ..unstructured.selection import rank_weights, select_weights, subnetwork_counts
from .rounding import ROUND_TO_RULE, AutoRoundTo, RoundToChoice
from .selection import Plan
from .spec import TargetSpec
from .targets import plan

log = logging.getLogger("earlyprune")

#: at most this many weight scores enter the rank correlations recorded per epoch (a fixed, seeded sample)
RANK_SAMPLE = 65_536

#: the rules of what both entry points take — the model, the target and its limits, the levels' options — one table
#: that :attr:`earlyprune.EarlyPruner.RULES` and :data:`earlyprune.oneshot.PRUNE_RULES` extend with their own
RUN_RULES: dict[str, Rule] = {
    "model": MODEL,
    "example_inputs": EXAMPLE_INPUTS,
    "ratio": RATIO,
    "target": TARGET,
    "steps": STEPS,
    "min_channels": MIN_CHANNELS,
    "round_to": ROUND_TO_RULE,
    "max_group_ratio": GROUP_RATIO,
    "ignored_layers": IGNORED_LAYERS,
    "loss_fn": rule(Callable_("callable as loss_fn(outputs, targets)"), None),
    "compute_aware": COMPUTE_AWARE,
    "latency_aware": LATENCY_AWARE,
    "step_time": rule(InstanceOf((StepTime, StepTimePredictor),
                                 "an earlyprune.StepTime (how to measure) or a measured StepTimePredictor"), None),
    "granularity": GRANULARITY,
    "weight_ratio": rule(RATIO.constraints[0], None, hint="the final weight sparsity at granularity='both'"),
    "min_weights": rule(Interval(Integral, 0, None), hint="weights every masked tensor keeps"),
}


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
    """Channels: a global ranking → :func:`~earlyprune.planning.selection.select` → :class:`~earlyprune.surgery.engine.PruningEngine`.

    Args:
        groups: the model's channel groups.
        spec: the target and its limits; ``spec.ratio`` (the run's final fraction) is what ``round_to="auto"``
            plans and the step-time predictor is refined at.
        auto: ``round_to="auto"``'s settings, measured at the first step (until then plans round to ``spec.round_to``).
        step_time: how ``target="latency"`` measures the step, or an already measured predictor.
        clip: an unreachable amount prunes as far as the constraints allow (with a warning) instead of failing — for a
            pruner whose construction-time reachability check was skipped (``checks=False``).
    """

    name = "channels"

    def __init__(self, groups: ChannelGroups, spec: TargetSpec, *, auto: AutoRoundTo | None = None,
                 step_time: StepTime | StepTimePredictor | None = None, clip: bool = False) -> None:
        self.groups = groups
        self.engine = PruningEngine(groups)
        self.spec = spec
        self.auto = auto
        self.round_to_choice: RoundToChoice | None = None   #: what ``"auto"`` measured and chose
        self.step_time = step_time if isinstance(step_time, StepTime) else None
        #: the step-time predictor of ``target="latency"`` (measured at first need)
        self.predictor = step_time if isinstance(step_time, StepTimePredictor) else None
        self.clip = clip
        self.removed: dict[str, list[int]] = {}
        self.plan: Plan | None = None   #: the last plan applied (its ``seconds``: the predicted step, time target)

    @property
    def units(self) -> ChannelGroups:
        return self.groups

    @property
    def round_to(self) -> int | AutoRoundTo:
        """The multiple kept widths are rounded to — the :class:`AutoRoundTo` until ``"auto"`` has measured."""
        return self.auto if self.auto is not None else self.spec.round_to

    @round_to.setter
    def round_to(self, value: int | AutoRoundTo) -> None:
        if isinstance(value, AutoRoundTo):
            self.auto, self.spec = value, self.spec.but(round_to=1)
        else:
            self.auto, self.spec = None, self.spec.but(round_to=value)

    def choose_round_to(self, scores: Mapping[str, torch.Tensor], batch_size: int | None = None) -> int:
        """``round_to="auto"``: time the final plan at every candidate multiple, once (rank 0 decides)."""
        if self.auto is not None:
            # the latency target needs the multiple before its predictor exists: plans of equal MACs stand in
            spec = self.spec.but(target="flops") if self.spec.target == "latency" else self.spec
            choice = self.auto.choose(self.groups, scores, self.spec.ratio, spec, batch_size=batch_size)
            self.round_to_choice = broadcast_object(choice)  # timings differ per rank: rank 0 decides
            self.round_to = self.round_to_choice.value
            log.info("round_to='auto': %s", self.round_to_choice.describe())
        return self.spec.round_to

    def ensure_predictor(self, scores: Mapping[str, torch.Tensor], batch_size: int | None = None
                         ) -> StepTimePredictor:
        """The step-time predictor, measured on the (still dense) model the first time it is needed, and refined
        on the structure the run's ratio would reach with these scores (rank 0's timings decide)."""
        if self.predictor is None:
            settings = self.step_time or StepTime()
            with Stopwatch() as clock:
                predictor = settings.measure(self.groups, batch_size=batch_size, align=self.spec.round_to)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")   # an unreachable ratio is reported when it is pruned
                    final = plan(self.groups, scores, self.spec.ratio, self.spec, predictor=predictor)
                settings.refit(predictor, self.groups, np.array(predictor.widths) - np.array(final.structure),
                               batch_size=batch_size)
                self.predictor = broadcast_object(predictor)
            log.info("target='latency': step-time predictor measured in %.1f s (dense step %.1f ms predicted, "
                     "%.1f ms measured)", clock.seconds, self.predictor.predict() * 1e3,
                     (self.predictor.dense_seconds or 0) * 1e3)
        return self.predictor

    def prune(self, scores: Mapping[str, torch.Tensor], amount: float, optimizer: Any = None, *,
              batch_size: int | None = None) -> int:
        """Remove channels until ``amount`` of the original ``spec.target`` is gone — measuring ``round_to="auto"``
        and the step-time predictor first if they are not yet (at the training ``batch_size``); returns how many
        were removed."""
        self.choose_round_to(scores, batch_size)
        predictor = self.ensure_predictor(scores, batch_size) if self.spec.target == "latency" else None
        try:
            chosen = plan(self.groups, scores, amount, self.spec, predictor=predictor)
        except InfeasibleTargetError as exc:
            if not self.clip:  # checked reachable at construction: a failure here is not the user's
                raise
            warnings.warn(f"{exc} — pruning as far as the constraints allow (checks=False skipped the "
                          f"construction-time check)", stacklevel=4)
            chosen = plan(self.groups, scores, amount, self.spec, predictor=predictor, clip=True)
        self.plan = chosen
        self.removed = self.engine.apply(chosen, optimizer)
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

    def prune(self, scores: Mapping[str, torch.Tensor], amount: float, optimizer: Any = None, *,
              batch_size: int | None = None) -> int:
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


__all__ = ["ChannelLevel", "GRANULARITIES", "GRANULARITY", "RUN_RULES", "WeightLevel", "check_granularity"]
