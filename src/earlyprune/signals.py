"""Per-epoch signals for deciding when to prune, computed from what the pruner already has.

Every quantity here is computed **once per epoch** from the epoch-averaged criterion scores, the parameters and
the BatchNorm scales — never from extra passes over the data:

* the sub-network structure ``N_t`` (kept channels per group of the global top-k at a ratio) and PaT's Early
  Pruning Indicator (§3.3, Eq. 4–6) at several ratios at once (PaT Figure 6 draws 10 %–90 % from one run);
* EarlyCroP's weight change ``Δ_t = ‖θ_t − θ_0‖²`` (§4.3, Eq. 10) and its pruning-time score
  ``|Δ_t − Δ_{t−1}| / |Δ_1|``;
* Early-Bird's BatchNorm-γ mask (one global quantile) and its normalised Hamming distance to the previous masks;
* Kendall's τ and Spearman's ρ of the channel ranking between consecutive epochs (PaT appendix C compares EPI
  with them).

The functions are pure. :class:`SignalRecorder` is the small stateful part: it keeps ``θ_0``, the previous
structures, masks and ranking, and turns one epoch's material into one JSON-ready record of ``pruner.history``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .groups import ChannelGroups, scores_to_vector
from .selection import select, validate_target

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


# -- PaT: structure similarity and the Early Pruning Indicator ---------------------------------------------------
def _structure(n: Any, name: str) -> np.ndarray:
    arr = np.asarray(n.detach().cpu() if isinstance(n, torch.Tensor) else n)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of channel counts, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold numbers (channel counts per layer), got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative channel counts")
    return arr


def structure_similarity(n1: Sequence[int], n2: Sequence[int]) -> float:
    """PaT's structure similarity Ψ of two sub-networks (Eq. 4–5).

    ``d_l = |n1_l − n2_l| / (n1_l + n2_l)`` (Eq. 4) is the normalised difference of layer ``l``'s kept channels,
    and ``Ψ(N1, N2) = 1 − (1/L) Σ_l d_l`` (Eq. 5): 1 for identical structures, towards 0 as they diverge.

    Args:
        n1, n2: kept channels per layer (group) of the two sub-networks — structure vectors of equal length L.

    Raises:
        ValueError: different lengths, an empty or non-numeric vector, a negative count, or a layer with zero
            channels in both (``d_l = 0/0`` is undefined).
    """
    a, b = _structure(n1, "n1"), _structure(n2, "n2")
    if a.size != b.size:
        raise ValueError(f"structure vectors must have the same length (one count per layer), got {a.size} and "
                         f"{b.size}; were they taken from different models?")
    total = a + b
    empty = np.flatnonzero(total == 0)
    if empty.size:
        raise ValueError(f"layer {int(empty[0])} has zero channels in both structures: its difference "
                         f"|n1 − n2|/(n1 + n2) is 0/0 (Eq. 4 is undefined for a removed layer)")
    return float(1.0 - np.mean(np.abs(a - b) / total))


def early_pruning_indicator(history: Sequence[Sequence[int]], r: int) -> float:
    """PaT's Early Pruning Indicator for the last structure of ``history`` (Eq. 6).

    ``EPI_t = (1/r) Σ_{j=1..r} Ψ(N_t, N_{t−j})``: the mean structure similarity (Eq. 5) of the newest
    sub-network ``N_t = history[-1]`` to the ``r`` before it.

    Args:
        history: structure vectors ``[…, N_{t−r}, …, N_{t−1}, N_t]`` in epoch order (at least ``r + 1``).
        r: the look-back, a positive integer. For a truncated window in early epochs pass
            ``min(r, len(history) - 1)``.

    Raises:
        ValueError: a bad ``r``, fewer than ``r + 1`` structures, or invalid structure vectors (see
            :func:`structure_similarity`).
    """
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
        raise ValueError(f"r must be a positive integer (epochs to look back), got {r!r}")
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise ValueError(f"history must be a list of structure vectors, got {type(history).__name__}")
    if len(history) < r + 1:
        raise ValueError(f"EPI_t with r={r} compares N_t with the {r} structures before it: history needs at least "
                         f"{r + 1} structure vectors, got {len(history)} (use r=min(r, len(history) - 1) for a "
                         f"truncated window)")
    newest = history[-1]
    return float(np.mean([structure_similarity(newest, history[-1 - j]) for j in range(1, r + 1)]))


def subnetwork_structures(groups: ChannelGroups, scores: Mapping[str, torch.Tensor], ratios: Iterable[float], *,
                          target: str = "channels", min_channels: int = 1, round_to: int = 1,
                          max_group_ratio: float = 1.0, predictor: Any = None) -> dict[float, list[int]]:
    """``N_t`` at each ratio: kept channels per group of the sub-network the global ranking of ``scores`` would
    select now (PaT: "the top k neurons by ranking the importance scores"), with the run's target and
    constraints. One ranking serves every ratio — no pass over the data."""
    out = {}
    with warnings.catch_warnings():  # a ratio the constraints cannot reach is pruned as far as they allow
        warnings.simplefilter("ignore")
        for ratio in ratios:
            out[ratio] = select(groups, scores, ratio, target=target, min_channels=min_channels,
                                round_to=round_to, max_group_ratio=max_group_ratio,
                                predictor=predictor).structure
    return out


# -- EarlyCroP: weight change --------------------------------------------------------------------------------
def weight_distance(params: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """``Δ = ‖θ − θ_0‖²`` over all parameter tensors (EarlyCroP Eq. 10): a float32 dot product per tensor (BLAS:
    3.5× faster than a float64 sum on ResNet-50, relative difference ~1e-6), summed in float64.

    Raises:
        ValueError: the two lists do not match tensor for tensor (the model changed shape).
    """
    if len(params) != len(reference):
        raise ValueError(f"θ has {len(params)} tensors but θ_0 has {len(reference)}: the model changed")
    total = 0.0
    with torch.no_grad():
        for p, p0 in zip(params, reference):
            if p.shape != p0.shape:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} no longer matches θ_0's {tuple(p0.shape)}")
            diff = (p.detach().to(device=p0.device, dtype=torch.float32) - p0).flatten()
            total += float(torch.dot(diff, diff))
    return total


def weight_change_score(delta_t: float, delta_prev: float, delta_ref: float | None) -> float | None:
    """EarlyCroP's pruning-time score ``|Δ_t − Δ_{t−1}| / |Δ_1|`` (§4.3); prune once it is below ``th = 1 − ρ``.

    ``delta_ref`` is ``Δ_1`` — the change of the first epoch that moved the weights. None (no epoch has moved
    them yet: frozen weights, a zero learning rate) or non-finite inputs give None instead of a division by zero.
    """
    if delta_ref is None or not (math.isfinite(delta_t) and math.isfinite(delta_prev) and math.isfinite(delta_ref)):
        return None
    if delta_ref == 0:
        return None
    return abs(delta_t - delta_prev) / abs(delta_ref)


# -- Early-Bird: BatchNorm-γ masks --------------------------------------------------------------------------
def batchnorm_scales(model: nn.Module) -> torch.Tensor | None:
    """``|γ|`` of every affine BatchNorm layer of ``model``, concatenated in module order (None if it has none)."""
    gammas = [m.weight.detach().abs().flatten().float().cpu() for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    return torch.cat(gammas) if gammas else None


def bn_mask(model: nn.Module, ratio: float) -> torch.Tensor | None:
    """Early-Bird's channel mask: ``|γ|`` above **one global** threshold over all BatchNorm layers (not per
    layer): the ``k = ⌊n·ratio⌋``-th smallest ``|γ|``, so the ``k`` smallest are masked (ties at the threshold
    too). Early-Bird's code thresholds at sorted position ``k`` instead, masking one channel more; we mask exactly
    the ratio. Returns a bool tensor (True = kept), or None when the model has no affine BatchNorm."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be a number in [0, 1), got {ratio!r}")
    gamma = batchnorm_scales(model)
    if gamma is None:
        return None
    k = int(gamma.numel() * ratio)
    if k == 0:
        return torch.ones_like(gamma, dtype=torch.bool)
    return gamma > torch.kthvalue(gamma, k).values


def mask_distance(m1: torch.Tensor, m2: torch.Tensor) -> float:
    """Normalised Hamming distance of two masks: the fraction of entries that differ (Early-Bird)."""
    if m1.numel() != m2.numel():
        raise ValueError(f"masks must have the same size, got {m1.numel()} and {m2.numel()}")
    if m1.numel() == 0:
        raise ValueError("masks must not be empty")
    return int((m1.flatten().bool() != m2.flatten().bool()).sum()) / m1.numel()  # exact: 2/20 is 0.1


# -- rank correlations (numpy; scipy is not a dependency) ----------------------------------------------------
def _paired(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).ravel()
    b = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"rankings must have the same length, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"rank correlation needs at least 2 items, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("rank correlation needs finite values")
    return a, b


def _tied_pairs(sorted_values: np.ndarray) -> int:
    """Σ c(c−1)/2 over the runs of equal values of a sorted array."""
    _, counts = np.unique(sorted_values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _count_inversions(a: np.ndarray) -> int:
    """Pairs i < j with a[i] > a[j], for non-negative integer ``a``: a bottom-up merge sort, each level
    vectorised (block-offset keys keep the blocks apart; searchsorted counts the cross-half inversions)."""
    a = np.asarray(a, dtype=np.int64)
    n = a.size
    if n < 2:
        return 0
    m = int(a.max()) + 1
    idx = np.arange(n, dtype=np.int64)
    inversions = 0
    width = 1
    while width < n:
        block = idx // (2 * width)
        right = (idx // width) % 2 == 1
        key = block * m + a                     # both halves of every block are sorted
        left_keys = key[~right]                 # hence globally sorted
        rb, rk = block[right], key[right]
        greater = (np.searchsorted(left_keys, rb * m + m, side="left")
                   - np.searchsorted(left_keys, rk, side="right"))
        inversions += int(greater.sum())
        a = np.sort(key, kind="stable") - block * m  # merge: sort within blocks (timsort: two runs each)
        width *= 2
    return inversions


def kendall_tau(x: Any, y: Any) -> float | None:
    """Kendall's τ-b of two score vectors (ties handled as scipy's ``kendalltau`` does), in O(n log² n).

    τ_b = (n0 − n1 − n2 + n3 − 2·D) / √((n0 − n1)(n0 − n2)), with n0 the pairs, n1 / n2 the pairs tied in x / y,
    n3 those tied in both and D the discordant pairs. None when either vector is constant.
    """
    a, b = _paired(x, y)
    n = a.size
    order = np.lexsort((b, a))                  # by x, then by y: tied-x pairs are never inversions
    a, b = a[order], b[order]
    n0 = n * (n - 1) // 2
    n1 = _tied_pairs(a)
    n2 = _tied_pairs(np.sort(b))
    new_pair = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    runs = np.diff(np.r_[np.flatnonzero(new_pair), n])
    n3 = int((runs * (runs - 1) // 2).sum())
    discordant = _count_inversions(np.unique(b, return_inverse=True)[1])
    denominator = (n0 - n1) * (n0 - n2)
    if denominator <= 0:
        return None
    return float((n0 - n1 - n2 + n3 - 2 * discordant) / math.sqrt(denominator))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]  # 1-based mean rank of each tie run
    return ranks


def spearman_rho(x: Any, y: Any) -> float | None:
    """Spearman's ρ of two score vectors: Pearson's correlation of their average ranks (None if one is
    constant)."""
    a, b = _paired(x, y)
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    if denominator == 0:
        return None
    return float((ra * rb).sum() / denominator)


# -- the recorder ---------------------------------------------------------------------------------------------
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

    def __init__(self, ratios: Sequence[float] = DEFAULT_RATIOS, r: int = DEFAULT_WINDOW,
                 queue: int = DEFAULT_QUEUE) -> None:
        ratios = list(ratios)
        for ratio in ratios:
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio < 1.0:
                raise ValueError(f"signal ratios must be numbers in (0, 1), got {ratio!r}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be a positive integer, got {r!r}")
        if isinstance(queue, bool) or not isinstance(queue, int) or queue < 2:
            raise ValueError(f"queue must be an integer ≥ 2, got {queue!r}")
        self.ratios = sorted(set(float(x) for x in ratios))
        self.r = r
        self.queue = queue
        self.groups: ChannelGroups | None = None
        self.needs: frozenset[str] | None = None
        self.active = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._theta0: list[torch.Tensor] | None = None
        self._delta_prev = 0.0
        self._delta_ref: float | None = None
        self._structures: dict[str, list[list[int]]] = {}
        self._masks: list[torch.Tensor] = []
        self._ranking: torch.Tensor | None = None

    def start(self, groups: ChannelGroups, *, ratio: float, target: str = "channels", min_channels: int = 1,
              round_to: int = 1, needs: Iterable[str] | None = None, max_group_ratio: float = 1.0,
              predictor: Any = None) -> None:
        """Bind to a model before training and take ``θ_0``.

        ``needs=None`` records every signal; otherwise only those named (``"structure"``, ``"weight_change"``,
        ``"bn_mask"`` — what the policy asks for), and ``θ_0`` is copied only if ``"weight_change"`` is among them.
        """
        validate_target(ratio, target, min_channels, round_to, max_group_ratio)
        if needs is not None:
            needs = frozenset(needs)
            unknown = needs - SIGNALS
            if unknown:
                raise ValueError(f"unknown signals {sorted(unknown)}; known: {sorted(SIGNALS)}")
        self.groups, self.needs = groups, needs
        self.ratio, self.target, self.min_channels, self.round_to = float(ratio), target, min_channels, round_to
        self.max_group_ratio = float(max_group_ratio)
        #: the step-time predictor of ``target="latency"`` (set before the first epoch end; a callable returning
        #: one is resolved then)
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
    def curve_ratios(self) -> list[float]:
        return sorted(set(self.ratios) | {self.ratio}) if self.needs is None else []

    def _wants(self, signal: str) -> bool:
        return self.needs is None or signal in self.needs

    def empty(self) -> dict[str, Any]:
        return empty_record(self.curve_ratios if self.groups is not None else self.ratios)

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
            predictor = self.predictor() if callable(self.predictor) else self.predictor
            structures = subnetwork_structures(groups, scores, ratios, target=self.target,
                                               min_channels=self.min_channels, round_to=self.round_to,
                                               max_group_ratio=self.max_group_ratio, predictor=predictor)
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
        if scores is not None and self.needs is None:
            vector = scores_to_vector(groups, dict(scores))
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
                "ranking": self._ranking.clone() if self._ranking is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.active = bool(state["active"])
        self._theta0 = [t.detach().to("cpu", torch.float32).clone() for t in state["theta0"]] \
            if state["theta0"] is not None else None
        self._delta_prev = float(state["delta_prev"])
        self._delta_ref = None if state["delta_ref"] is None else float(state["delta_ref"])
        self._structures = {k: [list(map(int, s)) for s in v] for k, v in state["structures"].items()}
        self._masks = [m.clone().bool() for m in state["masks"]]
        self._ranking = state["ranking"].clone() if state["ranking"] is not None else None
