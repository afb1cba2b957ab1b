"""BatchNorm scale criterion — network slimming / Early-Bird tickets."""

from __future__ import annotations

import torch

from ..core.batch import Batch
from ..graph.groups import ChannelGroups
from .base import Criterion
from .gates import complete, is_norm
from .registry import CRITERIA


@CRITERIA.register("bn_scale")
class BNScale(Criterion):
    """``I_n = |γ_n|``, the scale factor of the normalisation layer on channel ``n`` (Liu et al. 2017, network
    slimming; the Early-Bird mask is ``|γ|`` above one global quantile). Coupled channels score the **mean**
    ``|γ|`` over the group's normalisation layers (each layer counts once, as in the global quantile over all
    BatchNorm layers). Groups with no affine normalisation layer cannot be scored: they score the maximum and
    are removed last (with a warning).
    """

    family = "magnitude"

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        out, missing = {}, []
        for g in groups:
            refs, seen = [], set()
            for ref in g.layers:
                m = ref.module
                if isinstance(m, torch.nn.Module) and is_norm(m) and getattr(m, "weight", None) is not None \
                        and id(m) not in seen:
                    seen.add(id(m))
                    refs.append(ref)
            if not refs:
                missing.append(g.name)
                continue
            out[g.name] = sum(g.gather(r, r.module.weight.detach().abs().float()) for r in refs) / len(refs)
        return complete(groups, out, missing, self.name)
