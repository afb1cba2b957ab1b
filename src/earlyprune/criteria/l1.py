"""L1 filter-norm criterion — EfficientConvNets (Li et al. 2017)."""

from __future__ import annotations

import torch

from ..core.batch import Batch
from ..graph.groups import ChannelGroups
from .base import Criterion
from .gates import filter_view
from .registry import CRITERIA


@CRITERIA.register("l1")
class L1(Criterion):
    """Li et al. (2017), *Pruning Filters for Efficient ConvNets*: ``s_n = Σ_{w∈W_n} |w|``, the L1 norm of the
    filter producing output channel ``n`` (unnormalised, unlike PaT Eq. 2). Coupled channels score the **mean**
    over the group's producing layers (as :class:`~.magnitude.Magnitude`)."""

    family = "magnitude"

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for g in groups:
            producers = g.producers()
            parts = [g.gather(ref, filter_view(ref.module, ref.module.weight.detach()).abs().sum(1).float())
                     for ref in producers]
            out[g.name] = sum(parts) / len(parts) if parts else torch.zeros(g.width)
        return out
