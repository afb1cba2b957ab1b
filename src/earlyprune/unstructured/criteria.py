"""Weight-level (unstructured) criteria: one score per weight, in the same :data:`~earlyprune.criteria.CRITERIA`
registry as the channel criteria, named with EarlyCroP's ``-u`` suffix.

=============  =====================================================  =======================================
name           score of weight θ (higher = keep)                      paper
=============  =====================================================  =======================================
``crop-u``     ``|θ ⊙ H·g|``                                          EarlyCroP Eq. 4 (Lubana & Dick), CroP-U
``snip-u``     ``|θ ⊙ g|``                                            SNIP (Lee et al. 2019), connection sens.
``grasp-u``    ``θ ⊙ H·g`` (GraSP removes the largest ``−θ ⊙ H·g``)   GraSP (Wang et al. 2020)
``magnitude-u`` ``|θ|``                                               LTR / IMP (Frankle & Carbin 2019)
``random-u``   ``U(0, 1)``, seeded                                     Random-U
=============  =====================================================  =======================================

``g = ∂L/∂θ`` and ``H = ∂²L/∂θ²`` over the prunable weights (the block of the Hessian that GraSP and the
EarlyCroP reference code use; biases and normalisation layers are not differentiated). ``H·g`` is taken by
double backpropagation without forming ``H``: ``g`` with ``create_graph``, then ``∂(g·sg(g))/∂θ = H·g``
(``sg`` = stop-gradient) — the same product :func:`earlyprune.criteria.gates.gate_hvp` takes on gates.

With granularity ``"weights"`` a plain name resolves to its weight form (``"crop"`` → ``"crop-u"``;
:func:`resolve_criterion`). The gradient criteria accumulate the signed per-batch value and take the absolute
value of the mean (:meth:`finalize`), as the channel criteria do.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from ..core.batch import Batch
from ..core.errors import UsageError
from ..core.validation import InvalidParameterError
from ..criteria.base import Criterion
from ..criteria.gates import preserve_norm_stats, twice_differentiable
from ..criteria.random_scores import Random
from ..criteria.registry import CRITERIA
from ..graph.masks import MaskedWeights

#: the suffix of a weight-level criterion's name
SUFFIX = "-u"


class WeightCriterion(Criterion):
    """Base of criteria that score single weights: :meth:`compute` returns ``{weight name: tensor shaped like
    the weight}`` for a :class:`~earlyprune.graph.masks.MaskedWeights`."""

    granularity: ClassVar[str] = "weights"

    def compute(self, groups: MaskedWeights,  # type: ignore[override]
                batch: Batch | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@CRITERIA.register("magnitude-u")
class MagnitudeU(WeightCriterion):
    """``|θ|`` — global magnitude pruning (Han et al. 2015; the pruning step of LTR / IMP)."""

    family = "magnitude"

    def compute(self, groups: MaskedWeights,  # type: ignore[override]
                batch: Batch | None = None) -> dict[str, torch.Tensor]:
        return {t.name: t.value.detach().abs().float() for t in groups}


@CRITERIA.register("random-u")
class RandomU(WeightCriterion, Random):
    """``U(0, 1)`` per weight from the criterion's own generator (``"random-u:SEED"``, default 0): Random-U, the
    uniform baseline — every layer loses the same fraction in expectation. Seed, spec and resumable generator
    state are :class:`~earlyprune.criteria.random_scores.Random`'s; only the shape of the scores differs."""

    def compute(self, groups: MaskedWeights,  # type: ignore[override]
                batch: Batch | None = None) -> dict[str, torch.Tensor]:
        return {t.name: torch.rand(t.shape, generator=self._generator) for t in groups}


@CRITERIA.register("snip-u")
class SnipU(WeightCriterion):
    """SNIP's connection sensitivity ``|∂L/∂c| = |θ ⊙ g|`` at ``c = 1`` (Lee et al. 2019, Eq. 6; the mask ``c``
    multiplies each weight). Read from ``.grad`` after the training step's backward — no pass of its own — so
    :meth:`observe` must run between ``backward`` and ``zero_grad`` (``EarlyPruner.step()`` does); ``prune()``
    runs the backward itself. ``scores`` is ``|mean over batches of θ ⊙ g|``."""

    family = "gradient"
    uses_gradients = True

    def compute(self, groups: MaskedWeights,  # type: ignore[override]
                batch: Batch | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for t in groups:
            grad = t.parameter.grad
            if grad is None:
                raise UsageError(f"criterion 'snip-u' reads gradients but {t.name} has none: call it after "
                                 f"loss.backward() and before optimizer.zero_grad()")
            out[t.name] = (t.value.detach() * grad.detach()).float()
        return out

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.abs() for k, v in mean.items()}


def hessian_gradient(weights: MaskedWeights, batch: Batch) -> dict[str, torch.Tensor]:
    """``H·g`` per prunable weight for one batch, by double backpropagation (one forward, a backward with
    ``create_graph`` and one more backward); ``.grad`` and BatchNorm running statistics are left untouched."""
    model = weights.model
    params: Sequence[torch.Tensor] = [t.parameter for t in weights]
    with torch.enable_grad(), preserve_norm_stats(model), twice_differentiable():
        loss = batch.loss(model)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        z = sum((g * g.detach()).sum() for g in grads if g is not None and g.requires_grad)
        if not isinstance(z, torch.Tensor):  # nothing is differentiable twice (a linear model): H·g = 0
            return {t.name: torch.zeros(t.shape, device=t.parameter.device) for t in weights}
        hg = torch.autograd.grad(z, params, allow_unused=True)
    return {t.name: (torch.zeros(t.shape, device=t.parameter.device) if h is None else h.detach())
            for t, h in zip(weights, hg)}


@CRITERIA.register("crop-u")
class CroPU(WeightCriterion):
    """CroP-U — EarlyCroP's gradient-flow preservation score per weight, ``I(θ) = |θ ⊙ H·g|`` (Eq. 4, the score of
    Lubana & Dick that Eq. 6 carries to gates): by Eq. 3, ``Δ‖g‖² ≈ 2(H·g)ᵀΔθ``, so removing weight ``i``
    (``Δθ_i = −θ_i``) changes the gradient flow by about ``−2·θ_i·(H·g)_i``; the weights whose removal changes it
    least go first. Each batch is one forward and two backwards of its own (training batches, not the reference
    code's test loader); ``scores`` is ``|θ ⊙ mean over batches of H_b·g_b|``."""

    family = "gradient"
    needs_batches = True
    #: GraSP keeps the signed value
    absolute: ClassVar[bool] = True

    def compute(self, groups: MaskedWeights,  # type: ignore[override]
                batch: Batch | None = None) -> dict[str, torch.Tensor]:
        if batch is None:
            raise InvalidParameterError(f"criterion {self.name!r} scores a batch: pass one")
        hg = hessian_gradient(groups, batch)
        return {t.name: (t.value.detach() * hg[t.name]).float() for t in groups}

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.abs() for k, v in mean.items()} if self.absolute else mean


@CRITERIA.register("grasp-u")
class GraSPU(CroPU):
    """GraSP (Wang et al. 2020): ``S(−θ) = −θ ⊙ H·g``; GraSP removes the weights with the **largest** ``S`` (their
    removal increases the gradient flow most). Scores here mean "higher = keep", so this returns ``θ ⊙ H·g``
    signed: ranking by it prunes exactly GraSP's weights. (GraSP's temperature on the logits is not applied.)"""

    absolute = False


def weight_criteria() -> list[str]:
    """Names of the registered weight-level criteria."""
    return [n for n in CRITERIA.names() if getattr(CRITERIA.get(n), "granularity", "channels") == "weights"]


def resolve_criterion(spec: str | Criterion, granularity: str) -> Criterion:
    """A criterion instance for ``granularity``: at ``"weights"`` a plain name takes its weight form
    (``"crop"`` → ``"crop-u"``, ``"random:3"`` → ``"random-u:3"``); a weight criterion at ``"channels"`` is an
    error naming the fix."""
    if isinstance(spec, Criterion):
        level = getattr(spec, "granularity", "channels")
        if level != granularity:
            raise InvalidParameterError(f"criterion {spec.name!r} scores {level}, but granularity={granularity!r}: "
                                        f"pass granularity={level!r} or a {granularity}-level criterion")
        return spec
    if not isinstance(spec, str):
        return CRITERIA.build(spec)  # refuses what is neither a name nor a Criterion, as for any criterion
    name, sep, arg = spec.partition(":")
    name = CRITERIA.resolve(name.strip())  # a renamed criterion: its current name (with one warning)
    spec = name + sep + arg
    level = getattr(CRITERIA.get(name), "granularity", "channels")  # "unknown criterion …; available: …"
    if granularity == "weights" and level != "weights":
        weight_name = name + SUFFIX
        if weight_name not in CRITERIA:
            raise InvalidParameterError(f"criterion {name!r} has no weight-level form; weight criteria: "
                                        f"{', '.join(weight_criteria())} (or a plain name of one: crop, snip, grasp, "
                                        f"magnitude, random)")
        spec = weight_name + sep + arg
    elif granularity == "channels" and level == "weights":
        raise InvalidParameterError(f"criterion {name!r} scores single weights: pass granularity='weights' (or "
                                    f"{name.removesuffix(SUFFIX)!r} to score channels)")
    return CRITERIA.build(spec)


__all__ = ["CroPU", "GraSPU", "MagnitudeU", "RandomU", "SnipU", "WeightCriterion", "hessian_gradient",
           "resolve_criterion", "weight_criteria"]
