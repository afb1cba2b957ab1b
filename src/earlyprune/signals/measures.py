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

Every function here is pure (no state between calls); :mod:`earlyprune.signals.recorder` is the small stateful
part that keeps what they compare against across epochs.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core.validation import AMOUNT, Interval, InvalidParameterError, rule
from ..graph.groups import ChannelGroups
from ..planning.spec import UNLIMITED, TargetSpec
from ..planning.targets import select_many

#: EPI's look-back r
LOOKBACK = rule(Interval(Integral, 0, None, closed="neither"), hint="epochs to look back")

# -- PaT: structure similarity and the Early Pruning Indicator ---------------------------------------------------
def _structure(n: Any, name: str) -> np.ndarray:
    arr = np.asarray(n.detach().cpu() if isinstance(n, torch.Tensor) else n)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidParameterError(f"{name} must be a non-empty 1-D sequence of channel counts, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidParameterError(f"{name} must hold numbers (channel counts per layer), got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InvalidParameterError(f"{name} must hold finite, non-negative channel counts")
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
        raise InvalidParameterError(f"structure vectors must have the same length (one count per layer), got "
                                    f"{a.size} and {b.size}; were they taken from different models?")
    total = a + b
    empty = np.flatnonzero(total == 0)
    if empty.size:
        raise InvalidParameterError(f"layer {int(empty[0])} has zero channels in both structures: its difference "
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
    LOOKBACK.check("r", r)
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise InvalidParameterError(f"history must be a list of structure vectors, got {type(history).__name__}")
    if len(history) < r + 1:
        raise InvalidParameterError(f"EPI_t with r={r} compares N_t with the {r} structures before it: history "
                                    f"needs at least {r + 1} structure vectors, got {len(history)} (use "
                                    f"r=min(r, len(history) - 1) for a truncated window)")
    newest = history[-1]
    return float(np.mean([structure_similarity(newest, history[-1 - j]) for j in range(1, r + 1)]))


def subnetwork_structures(groups: ChannelGroups, scores: Mapping[str, torch.Tensor], ratios: Iterable[float],
                          spec: TargetSpec | None = None, *, predictor: Any = None, **limits: Any
                          ) -> dict[float, list[int]]:
    """``N_t`` at each ratio: kept channels per group of the sub-network the global ranking of ``scores`` would
    select now (PaT: "the top k neurons by ranking the importance scores"), under ``spec``'s target and limits (or
    its fields as keywords; no group limit by default). One ranking serves every ratio — no pass over the data;
    with ``target="latency"`` one greedy pass of the time-budget selection (``predictor``) gives every ratio's
    plan."""
    spec = TargetSpec.of(spec, limits, UNLIMITED)
    ratios = list(ratios)
    with warnings.catch_warnings():  # a ratio the constraints cannot reach is pruned as far as they allow (clip)
        warnings.simplefilter("ignore")
        plans = select_many(groups, scores, ratios, spec, predictor=predictor, clip=True)
    return {ratio: plan.structure for ratio, plan in zip(ratios, plans)}


# -- EarlyCroP: weight change --------------------------------------------------------------------------------
def weight_distance(params: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """``Δ = ‖θ − θ_0‖²`` over all parameter tensors (EarlyCroP Eq. 10): a float32 dot product per tensor (BLAS:
    3.5× faster than a float64 sum on ResNet-50, relative difference ~1e-6), summed in float64.

    Raises:
        ValueError: the two lists do not match tensor for tensor (the model changed shape).
    """
    if len(params) != len(reference):
        raise InvalidParameterError(f"θ has {len(params)} tensors but θ_0 has {len(reference)}: the model changed")
    total = 0.0
    with torch.no_grad():
        for p, p0 in zip(params, reference):
            if p.shape != p0.shape:
                raise InvalidParameterError(f"a parameter of shape {tuple(p.shape)} no longer matches θ_0's "
                                            f"{tuple(p0.shape)}")
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


#: the normalisations of EarlyCroP's pruning-time score the paper writes (see :func:`pruning_time_score`)
PRUNING_TIME_NORMS = ("algorithm1", "eq11", "current")


def pruning_time_score(norm: str, delta_t: float, delta_prev: float, delta_ref: float | None,
                       initial_norm: float | None) -> float | None:
    """EarlyCroP's pruning-time score in one of the three forms the paper writes (prune once it is ≤ ``th``):

    * ``"algorithm1"`` — Appendix B, Algorithm 1, line 6: ``(Δ_t − Δ_{t−1}) / ‖Θ_0‖²`` (signed, as written);
    * ``"eq11"`` — §4.3, Eq. 11: ``|Δ_t − Δ_{t−1}| / |Δ_1|`` (:func:`weight_change_score`);
    * ``"current"`` — the end of §4.3: ``|Δ_t − Δ_{t−1}| / |Δ_t|``.

    None where the denominator is zero, unknown or a value is not finite (no division by zero).
    """
    if norm == "eq11":
        return weight_change_score(delta_t, delta_prev, delta_ref)
    if norm not in PRUNING_TIME_NORMS:
        raise InvalidParameterError(f"unknown pruning-time normalisation {norm!r}; choose one of {PRUNING_TIME_NORMS}")
    denominator = initial_norm if norm == "algorithm1" else delta_t
    if denominator is None or not all(math.isfinite(v) for v in (delta_t, delta_prev, denominator)) \
            or denominator == 0:
        return None
    if norm == "algorithm1":
        return (delta_t - delta_prev) / abs(denominator)
    return abs(delta_t - delta_prev) / abs(denominator)


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
    AMOUNT.check("ratio", ratio)
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
        raise InvalidParameterError(f"masks must have the same size, got {m1.numel()} and {m2.numel()}")
    if m1.numel() == 0:
        raise InvalidParameterError("masks must not be empty")
    return int((m1.flatten().bool() != m2.flatten().bool()).sum()) / m1.numel()  # exact: 2/20 is 0.1


# -- rank correlations (numpy; scipy is not a dependency) ----------------------------------------------------
def _paired(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).ravel()
    b = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64).ravel()
    if a.size != b.size:
        raise InvalidParameterError(f"rankings must have the same length, got {a.size} and {b.size}")
    if a.size < 2:
        raise InvalidParameterError(f"rank correlation needs at least 2 items, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidParameterError("rank correlation needs finite values")
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
