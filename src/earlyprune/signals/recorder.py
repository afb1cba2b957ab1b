"""The stateful part of the per-epoch signals: :class:`SignalRecorder` keeps ``θ_0``, the previous structures,
masks and ranking, and turns one epoch's material into one JSON-ready record of ``pruner.history`` (the
quantities themselves are the pure functions of :mod:`earlyprune.signals.measures`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import torch

from ..core.validation import RATIO, Each, Interval, InvalidParameterError, Rule, checked, rule
from ..graph.groups import ChannelGroups, scores_to_vector
from ..planning.spec import UNLIMITED, TargetSpec
from ..unstructured.selection import mask_distance as weight_mask_distance
from .measures import (
    LOOKBACK,
    bn_mask,
    early_pruning_indicator,
    kendall_tau,
    mask_distance,
    spearman_rho,
    subnetwork_structures,
    weight_change_score,
    weight_distance,
)

#: pruning ratios whose EPI curve is recorded every epoch (PaT Figure 6: 10 %–90 %)
DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: EPI look-back r of the recorded curves (the ``epi`` policy's default, see :class:`~earlyprune.policies.EPI`)
DEFAULT_WINDOW = 5
#: Early-Bird keeps the last 5 masks
DEFAULT_QUEUE = 5
#: the keys every history record carries (None where a signal is undefined)
SIGNAL_KEYS = ("epi", "subnetwork", "weight_change", "weight_change_score", "earlybird_distance",
               "kendall_tau", "spearman_rho")
#: what a policy can ask the pruner for (``Policy.needs_signals``)
SIGNALS = frozenset({"structure", "weight_change", "bn_mask"})


def ratio_key(ratio: float) -> str:
    """JSON key of a ratio in the ``"epi"`` record: ``0.5 → "0.5"``."""
    return f"{ratio:g}"


def _clean(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass
class EpochSignals:
    """One epoch's signals: the JSON-ready ``record`` for ``pruner.history`` and the raw material policies use."""

    record: dict[str, Any]
    structure: list[int] | None = None          #: N_t at the run's ratio
    weight_change: float | None = None          #: Δ_t
    initial_norm: float | None = None           #: ‖θ_0‖² (EarlyCroP's Algorithm 1 divides by it)
    bn_mask: torch.Tensor | None = None         #: Early-Bird mask at the run's ratio
    seconds: float = 0.0                        #: time spent computing them


def empty_record(ratios: Iterable[float] = ()) -> dict[str, Any]:
    """The record of an epoch without signals (pruning and sparse epochs): every key, every value None."""
    record: dict[str, Any] = {key: None for key in SIGNAL_KEYS}
    record["epi"] = {ratio_key(r): None for r in ratios}
    return record


class SignalRecorder:
    """Computes every per-epoch signal from one epoch's material, keeping the state they need.

    State: ``θ_0`` (a float32 copy of the parameters in host memory, so GPU memory is untouched — EarlyCroP's
    reference point), ``Δ_{t−1}`` and ``Δ_1``, the last ``r`` structures at every ratio, the last ``queue − 1``
    Early-Bird masks and the previous epoch's channel scores. Everything is released when pruning starts: the
    signals describe the dense phase (after a removal the weights no longer match ``θ_0`` and no scores are
    accumulated), and pruning/sparse epochs get :func:`empty_record`.

    Args:
        ratios: ratios of the recorded EPI curves (the run's ratio is added).
        r: EPI look-back of the recorded curves (truncated to the epochs available early on).
        queue: Early-Bird's mask queue; the recorded distance is the largest to the ``queue − 1`` previous masks.
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "ratios": rule(Each(RATIO.constraints[0], nonempty=False), hint="ratios of the recorded EPI curves"),
        "r": LOOKBACK,
        "queue": rule(Interval(Integral, 2, None), hint="Early-Bird masks compared"),
    }

    @checked(RULES)
    def __init__(self, ratios: Sequence[float] = DEFAULT_RATIOS, r: int = DEFAULT_WINDOW,
                 queue: int = DEFAULT_QUEUE) -> None:
        ratios = list(ratios)
        self.ratios = sorted(set(float(x) for x in ratios))
        self.r = r
        self.queue = queue
        self.groups: ChannelGroups | None = None
        self.needs: frozenset[str] | None = None
        self.level: Any = None
        self.active = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._theta0: list[torch.Tensor] | None = None
        self._initial_norm: float | None = None
        self._delta_prev = 0.0
        self._delta_ref: float | None = None
        self._structures: dict[str, list[list[int]]] = {}
        self._masks: list[torch.Tensor] = []
        self._ranking: torch.Tensor | None = None
        self._weight_mask: dict[str, torch.Tensor] | None = None

    def start(self, groups: ChannelGroups, spec: TargetSpec | None = None, *, needs: Iterable[str] | None = None,
              level: Any = None, predictor: Any = None, **limits: Any) -> None:
        """Bind to a model before training and take ``θ_0``.

        ``spec``: the run's target (its ``ratio`` required) — or its fields as keywords (``ratio=0.5``,
        ``target="flops"``); N_t itself ignores the limits (PaT's unconstrained top-k).

        ``needs=None`` records every signal; otherwise only those named (``"structure"``, ``"weight_change"``,
        ``"bn_mask"`` — what the policy asks for), and ``θ_0`` is copied only if ``"weight_change"`` is among them.

        ``level``: for pruning units other than channel groups (single weights: a
        :class:`~earlyprune.planning.levels.WeightLevel`, with ``groups`` its :class:`~earlyprune.unstructured.MaskedWeights`)
        — an object whose ``subnetworks(scores, ratios)`` gives ``N_t`` per ratio, ``score_vector(scores)`` the
        scores ranked for Kendall / Spearman and ``keep_masks(scores, ratio)`` the top-k masks, whose normalised
        Hamming distance between consecutive epochs is recorded as ``weight_mask_distance``.
        """
        RATIO.check("ratio", spec.ratio if spec is not None else limits.get("ratio"))   # a run's ratio: required
        spec = TargetSpec.of(spec, limits, UNLIMITED)
        if needs is not None:
            needs = frozenset(needs)
            unknown = needs - SIGNALS
            if unknown:
                raise InvalidParameterError(f"unknown signals {sorted(unknown)}; known: {sorted(SIGNALS)}")
        self.groups, self.needs, self.level = groups, needs, level
        self.spec = spec
        self.ratio, self.target = float(spec.ratio), spec.target  # type: ignore[arg-type]
        #: the step-time predictor of ``target="latency"`` (the pruner sets it before the first epoch end)
        self.predictor = predictor
        self._reset_state()
        if self._wants("weight_change"):
            with torch.no_grad():
                self._theta0 = [p.detach().to(device="cpu", dtype=torch.float32, copy=True)
                                for p in groups.model.parameters()]
        self.active = True

    def stop(self) -> None:
        """Release θ_0 and the previous masks / structures / scores (pruning has started)."""
        self._reset_state()
        self.active = False

    @property
    def initial_norm(self) -> float | None:
        """``‖θ_0‖²`` (None without θ_0), summed in float64 like Δ."""
        if self._theta0 is None:
            return None
        if getattr(self, "_initial_norm", None) is None:
            self._initial_norm = float(sum(float(torch.dot(t.flatten(), t.flatten())) for t in self._theta0))
        return self._initial_norm

    @property
    def curve_ratios(self) -> list[float]:
        return sorted(set(self.ratios) | {self.ratio}) if self.needs is None else []

    def _wants(self, signal: str) -> bool:
        return self.needs is None or signal in self.needs

    def empty(self) -> dict[str, Any]:
        record = empty_record(self.curve_ratios if self.groups is not None else self.ratios)
        if self.level is not None:
            record["weight_mask_distance"] = None
        return record

    # -- one epoch -------------------------------------------------------------------------------------------
    def epoch_end(self, scores: Mapping[str, torch.Tensor] | None) -> EpochSignals:
        """All signals of the epoch that just ended; ``scores`` are its epoch-averaged criterion scores (None if
        none were accumulated: the score-based signals are then None)."""
        if not self.active or self.groups is None:
            return EpochSignals(self.empty())
        t0 = time.perf_counter()
        groups = self.groups
        record = self.empty()
        out = EpochSignals(record)
        if scores is not None and (self._wants("structure")):
            ratios = self.curve_ratios or [self.ratio]
            # PaT's N_t is the unconstrained global top-k: min_channels, round_to and max_group_ratio shape the
            # removal, not the signal — with them a pinned structure (every group at its floor or rounded to the
            # same multiple) cannot change, and EPI reads 1.0 from the first epoch
            # the time target before (or without: policy "never") a step-time predictor: equal MACs stand in
            target = "flops" if self.target == "latency" and self.predictor is None else self.target
            structures = (self.level.subnetworks(scores, ratios) if self.level is not None else
                          subnetwork_structures(groups, scores, ratios, target=target, predictor=self.predictor))
            out.structure = structures[self.ratio]
            record["subnetwork"] = list(out.structure)
            for ratio in self.curve_ratios:
                key = ratio_key(ratio)
                past = self._structures.get(key, [])
                if past and len(past[-1]) == len(structures[ratio]):
                    history = past + [structures[ratio]]
                    record["epi"][key] = early_pruning_indicator(history, min(self.r, len(past)))
                else:
                    past = []
                self._structures[key] = (past + [structures[ratio]])[-self.r:]
        if self._theta0 is not None:
            try:
                delta = weight_distance(list(groups.model.parameters()), self._theta0)
            except ValueError:  # the model changed shape under us: θ_0 no longer applies
                self._theta0 = None
            else:
                if self._delta_ref is None and math.isfinite(delta) and delta > 0:
                    self._delta_ref = delta       # Δ_1: the first epoch that moved the weights
                out.weight_change = _clean(delta)
                out.initial_norm = self.initial_norm
                record["weight_change"] = out.weight_change
                record["weight_change_score"] = _clean(weight_change_score(delta, self._delta_prev, self._delta_ref))
                self._delta_prev = delta
        if self._wants("bn_mask"):
            mask = bn_mask(groups.model, self.ratio)
            out.bn_mask = mask
            if mask is not None and self.needs is None:
                older = [m for m in self._masks if m.numel() == mask.numel()]
                if older:
                    record["earlybird_distance"] = max(mask_distance(mask, m) for m in older)
                self._masks = (older + [mask])[-(self.queue - 1):]
        if scores is not None and self.needs is None and self.level is not None:
            keep = self.level.keep_masks(scores, self.ratio)
            if self._weight_mask is not None and self._weight_mask.keys() == keep.keys() and all(
                    self._weight_mask[k].shape == v.shape for k, v in keep.items()):
                record["weight_mask_distance"] = weight_mask_distance(keep, self._weight_mask)
            self._weight_mask = keep
        if scores is not None and self.needs is None:
            vector = (self.level.score_vector(scores) if self.level is not None
                      else scores_to_vector(groups, dict(scores)))
            if self._ranking is not None and self._ranking.numel() == vector.numel() and vector.numel() >= 2:
                record["kendall_tau"] = _clean(kendall_tau(self._ranking, vector))
                record["spearman_rho"] = _clean(spearman_rho(self._ranking, vector))
            self._ranking = vector.clone()
        out.seconds = time.perf_counter() - t0
        return out

    # -- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """θ_0, Δ_{t−1}, Δ_1, previous structures, masks and scores — what a resumed run needs to record (and
        decide) identically."""
        return {"active": self.active,
                "theta0": [t.clone() for t in self._theta0] if self._theta0 is not None else None,
                "delta_prev": self._delta_prev, "delta_ref": self._delta_ref,
                "structures": {k: [list(s) for s in v] for k, v in self._structures.items()},
                "masks": [m.clone() for m in self._masks],
                "ranking": self._ranking.clone() if self._ranking is not None else None,
                "weight_mask": ({k: v.clone() for k, v in self._weight_mask.items()}
                                if self._weight_mask is not None else None)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.active = bool(state["active"])
        self._theta0 = [t.detach().to("cpu", torch.float32).clone() for t in state["theta0"]] \
            if state["theta0"] is not None else None
        self._initial_norm = None
        self._delta_prev = float(state["delta_prev"])
        self._delta_ref = None if state["delta_ref"] is None else float(state["delta_ref"])
        self._structures = {k: [list(map(int, s)) for s in v] for k, v in state["structures"].items()}
        self._masks = [m.clone().bool() for m in state["masks"]]
        self._ranking = state["ranking"].clone() if state["ranking"] is not None else None
        weight_mask = state.get("weight_mask")
        self._weight_mask = {k: v.clone().bool() for k, v in weight_mask.items()} if weight_mask else None
