"""CroP-S — EarlyCroP's structured gradient-flow preservation criterion."""

from __future__ import annotations

from typing import Any

import torch

from ..core.batch import Batch
from ..core.validation import InvalidParameterError, checked
from ..graph.groups import ChannelGroups
from .gates import PRODUCT, PRODUCTS, GatedCriterion, complete, gate_hvp
from .registry import CRITERIA


@CRITERIA.register("crop")
class CroP(GatedCriterion):
    """EarlyCroP Eq. 6: ``I(f_l) = |H_L(c_l)·g_L(c_l)|`` — the structured form of the gradient-flow preserving
    score ``|Θᵀ·H·g|`` (Eq. 4, Lubana & Dick) on per-channel gates ``c = 1`` (Eq. 5). Channels whose removal
    changes the gradient flow ``‖g‖²`` least are removed (Eq. 3: ``Δ‖g‖² ≈ 2(H·g)ᵀΔΘ``).

    The Hessian-vector product is taken by double backpropagation, never forming ``H`` (:func:`.gates.gate_hvp`):

    * ``product="gate"`` (default, spec ``"crop"``): the pure gate Hessian ``H_cc·g_c`` — Eq. 6 as written;
    * ``product="mixed"`` (``"crop:mixed"``): ``H_cw·g_w``, what the EarlyCroP reference code computes
      (the weight gradient backpropagated into the gates);
    * ``product="full"`` (``"crop:full"``): ``H_cc·g_c + H_cw·g_w``, the gate entries of ``H·g`` over
      weights and gates together.

    Each batch is one forward and two backward passes of its own (training batches: the reference code's test
    loader is a leak); :meth:`scores` is ``|mean over batches of H_b·g_b|`` (gradient and Hessian of the same
    batch). Gates sit after BatchNorm and are shared by coupled layers (:mod:`.gates`).
    """

    family = "gradient"

    @checked({"product": PRODUCT})
    def __init__(self, product: str = "gate") -> None:
        super().__init__()
        self.product = product

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "CroP":
        if arg not in PRODUCTS:
            raise InvalidParameterError(f"criterion '{cls.name}:PRODUCT' takes one of {', '.join(PRODUCTS)}, got {cls.name}:{arg}")
        return cls(product=arg, **kwargs)

    def hessian_gradient(self, groups: ChannelGroups, batch: Batch | None) -> dict[str, torch.Tensor]:
        """Signed ``(H·g)`` per group channel for one batch (the product chosen at construction)."""
        if batch is None:
            raise InvalidParameterError(f"criterion {self.name!r} scores a batch: pass one")
        gates = self.gates_for(groups)
        hg = gate_hvp(groups, batch, self.product, gates)
        out = {k: v.float() for k, v in hg.items() if k not in gates.ungated}  # on the model's device
        return complete(groups, out, gates.ungated, self.name)

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        return self.hessian_gradient(groups, batch)

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.abs() for k, v in mean.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(product={self.product!r})"
