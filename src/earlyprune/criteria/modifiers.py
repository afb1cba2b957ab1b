"""Modifiers that make any criterion cost-aware: compute-aware (3SP) and latency-aware (PaT §4.3).

Both wrap a criterion, delegate everything to it (batches, accumulation, hooks, state) and divide its scores
by a smoothed, normalised per-channel cost:

    c̄_g = c_g / Σ_j c_j,        c̃_g = (c̄_g + λ) / (Σ_j c̄_j + λ),        r_{g,n} = S_{g,n} / c̃_g

(3SP Eq. 3–4 with Laplace smoothing λ), the sums running over the channel groups — the paper's layers, each
counted once whatever its width. A larger λ makes the ranking follow the criterion more and the cost less;
λ = 0 is the pure compute-aware retention score. Any constant factor in c̃ leaves the global ranking unchanged;
we report ``c̃ / max c̃`` (in (0, 1]) for readability. The modifiers are meant for non-negative scores (every
criterion here except ``grasp``, whose signed scores are still ranked consistently within a group).

Use them as wrappers (``ComputeAware("snip", 0.05)``) or through ``compute_aware=λ`` / ``latency_aware=True``
of :func:`earlyprune.prune` and :class:`earlyprune.EarlyPruner` (see :func:`with_modifiers`).
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
import torch

from ..core.batch import Batch
from ..core.validation import (
    Boolean,
    HasAttributes,
    Interval,
    Options,
    Rule,
    check_args,
    checked,
    rule,
)
from ..graph.groups import ChannelGroups
from .base import Criterion
from .latency import LatencyTable
from .registry import CRITERIA

COSTS = ("removed", "filter")


def smoothed_costs(costs: np.ndarray, lam: float) -> np.ndarray:
    """3SP Eq. 3 with Laplace smoothing: ``c̃ = (c̄ + λ)/(Σ c̄ + λ)`` with ``c̄ = c/Σc``, scaled to max 1 (and kept
    strictly positive so that scores stay finite)."""
    costs = np.clip(np.asarray(costs, dtype=np.float64), 0.0, None)
    total = costs.sum()
    cbar = costs / total if total > 0 else np.full_like(costs, 1.0 / max(len(costs), 1))
    tilde = (cbar + lam) / (cbar.sum() + lam)
    top = tilde.max() if tilde.size else 1.0
    return np.maximum(tilde / top if top > 0 else np.ones_like(tilde), 1e-12)


#: Laplace smoothing λ of the modifiers (3SP Eq. 3)
_LAM_HINT = "a Laplace smoothing λ, e.g. 0.05; 0 = fully cost-driven"
LAM = rule(Interval(Real, 0, None), hint=_LAM_HINT)
#: ``compute_aware=`` of EarlyPruner / prune(): λ, or None for off
COMPUTE_AWARE = rule(Interval(Real, 0, None), None, hint=_LAM_HINT)
#: ``latency_aware=`` of EarlyPruner / prune()
LATENCY_AWARE = rule(Boolean(), hint="LatencyAware(criterion, lam, table) takes options")


class Modifier(Criterion):
    """A criterion wrapped to rescale its scores; everything else is delegated to ``inner``."""

    def __init__(self, criterion: str | Criterion) -> None:
        super().__init__()
        self.inner: Criterion = CRITERIA.build(criterion)

    # the class-level flags of the wrapped criterion, per instance
    @property  # type: ignore[override]
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property  # type: ignore[override]
    def family(self) -> str:  # type: ignore[override]
        return self.inner.family

    @property  # type: ignore[override]
    def uses_gradients(self) -> bool:  # type: ignore[override]
        return self.inner.uses_gradients

    @property  # type: ignore[override]
    def needs_batches(self) -> bool:  # type: ignore[override]
        return self.inner.needs_batches

    def costs(self, groups: ChannelGroups) -> dict[str, float]:
        """The raw per-channel cost ``c_g`` of every group."""
        raise NotImplementedError

    def lam(self) -> float:
        raise NotImplementedError

    def factors(self, groups: ChannelGroups) -> dict[str, float]:
        """``c̃_g`` per group (the divisor of its scores)."""
        raw = self.costs(groups)
        tilde = smoothed_costs(np.array([raw[g.name] for g in groups]), self.lam())
        return {g.name: float(t) for g, t in zip(groups, tilde)}

    def scores(self, groups: ChannelGroups) -> dict[str, torch.Tensor]:
        base = self.inner.scores(groups)
        factors = self.factors(groups)
        return {k: v / factors[k] if k in factors else v for k, v in base.items()}

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        return self.inner.compute(groups, batch)

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.inner.finalize(mean)

    def observe(self, groups: ChannelGroups, batch: Batch | None = None, *, loss: Any = None,
                label: Any = None) -> None:
        self.inner.observe(groups, batch, loss=loss, label=label)

    def skipped(self) -> list[Any]:
        return self.inner.skipped()

    @property
    def observations(self) -> int:
        return self.inner.observations

    def reset(self) -> None:
        if hasattr(self, "inner"):  # the base constructor calls reset() before inner exists
            self.inner.reset()

    def attach(self, groups: ChannelGroups) -> None:
        self.inner.attach(groups)

    def detach(self) -> None:
        self.inner.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class ComputeAware(Modifier):
    """3SP + CA (Eq. 3–4): each channel's score divided by its group's smoothed, normalised compute cost.

    The paper's per-layer cost is ``c_l = 2·H·W·C_in·K²`` per output channel. ``cost="filter"`` (default) is
    that: ``Σ`` over the group's producing layers (one for a plain layer; the convolutions feeding a residual
    add, a depthwise convolution and its producer for a coupled group) of ``H·W·C_in·K²/groups`` — their MACs
    per output channel, spatial sizes from the traced shapes. The factor 2 cancels in c̄. ``cost="removed"``
    counts the compute one channel's removal actually saves: the producing filters **plus** the input slices of
    the layers that consume it (:attr:`ChannelGroup.macs_per_channel`, the cost model's exact figure).

    Args:
        criterion: the criterion to wrap (name or instance).
        lam: Laplace smoothing λ ≥ 0 (3SP used 0.05 for its 80 %-FLOPs model; 0 = fully compute-driven).
        cost: ``"filter"`` (the paper's, default) or ``"removed"``.

    Example:
        >>> from earlyprune.criteria.modifiers import ComputeAware
        >>> ComputeAware("snip", lam=0.05)
        ComputeAware(Snip(), lam=0.05, cost='filter')
    """

    RULES: dict[str, Rule] = {"lam": LAM, "cost": rule(Options(COSTS))}

    @checked(RULES)
    def __init__(self, criterion: str | Criterion, lam: float = 0.0, cost: str = "filter") -> None:
        super().__init__(criterion)
        self._lam = float(lam)
        self.cost = cost

    def lam(self) -> float:
        return self._lam

    def costs(self, groups: ChannelGroups) -> dict[str, float]:
        if self.cost == "removed":
            return {g.name: g.macs_per_channel for g in groups}
        profile, out = groups.profile, {}
        for g in groups:
            total = 0.0
            for ref in g.producers():
                m = ref.module
                channels = getattr(m, "out_channels", None) or getattr(m, "out_features", 1)
                total += profile.macs(m) / max(channels, 1)
            out[g.name] = total
        return out

    def __repr__(self) -> str:
        return f"ComputeAware({self.inner!r}, lam={self._lam}, cost={self.cost!r})"


class LatencyAware(Modifier):
    """PaT §4.3 latency-aware pruning: "we penalize the neuron group's saliency with the latency reduction
    resulting from pruning them" — each channel's score divided by the smoothed, normalised latency its removal
    saves (same form as 3SP Eq. 4 with latency in place of FLOPs, so the two modifiers compose and λ means the
    same). The latency per channel is the slope of the group's measured latency over width
    (:class:`~.latency.LatencyTable`, timed on the model's device at a few widths and cached); a group whose
    narrowing saves no measurable time keeps its channels preferentially.

    Args:
        criterion: the criterion to wrap.
        lam: Laplace smoothing λ ≥ 0 (default 0.05: timing noise must not dominate the ranking).
        table: the :class:`LatencyTable` to use (default: forward + backward at widths 1, ¾, ½, ¼).
    """

    RULES: dict[str, Rule] = {"lam": LAM, "table": rule(HasAttributes(("savings",), "a LatencyTable"), None)}

    @checked(RULES)
    def __init__(self, criterion: str | Criterion, lam: float = 0.05, table: LatencyTable | None = None) -> None:
        super().__init__(criterion)
        self._lam = float(lam)
        self.table = table if table is not None else LatencyTable()
        self._cached: tuple[tuple[int, ...], dict[str, float]] | None = None

    def lam(self) -> float:
        return self._lam

    def costs(self, groups: ChannelGroups) -> dict[str, float]:
        key = tuple(groups.widths())
        if self._cached is None or self._cached[0] != key:  # re-measure only when the structure changed
            self._cached = (key, self.table.savings(groups))
        return self._cached[1]

    def __repr__(self) -> str:
        return f"LatencyAware({self.inner!r}, lam={self._lam})"


def with_modifiers(criterion: str | Criterion, compute_aware: float | None = None,
                   latency_aware: bool = False) -> Criterion:
    """``criterion`` built from its spec and wrapped by the requested modifiers (the keyword form used by
    :func:`earlyprune.prune` and :class:`earlyprune.EarlyPruner`)."""
    check_args({"compute_aware": COMPUTE_AWARE, "latency_aware": LATENCY_AWARE},
               {"compute_aware": compute_aware, "latency_aware": latency_aware})
    crit = CRITERIA.build(criterion)
    if compute_aware is not None:
        crit = ComputeAware(crit, compute_aware)
    if latency_aware:
        crit = LatencyAware(crit)
    return crit
