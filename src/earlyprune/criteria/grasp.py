"""Structured GraSP — gradient-flow *increasing* score on per-channel gates (for comparison)."""

from __future__ import annotations

import torch

from .crop import CroP
from .registry import CRITERIA


@CRITERIA.register("grasp")
class GraSP(CroP):
    """Structured GraSP (Wang et al. 2020, applied to masks as in 3SP §5): ``S(M) = −M⊙H·g`` with ``M = 1`` the
    per-channel gates, ``H·g`` the gate Hessian-gradient product (``product="gate"`` by default; the CroP options
    apply).

    GraSP **removes the channels with the largest** ``S`` (their removal increases the gradient flow most) and
    keeps the smallest. Our scores mean "higher = keep", so this criterion returns ``−S = M⊙H·g``, signed (the
    mean over batches of ``H_b·g_b``, no absolute value): ranking by it removes exactly GraSP's channels.
    3SP reports structured GraSP worse than uniform pruning; it is here for comparison.
    """

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return mean
