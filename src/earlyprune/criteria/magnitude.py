"""Magnitude criterion — PaT Eq. 2."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.batch import Batch
from ..graph.groups import ChannelGroups
from .base import Criterion
from .registry import CRITERIA


def filter_norms(module: nn.Module) -> torch.Tensor:
    """``‖W_n‖₂ / √P`` for every output neuron ``n`` of a convolution or linear layer (PaT Eq. 2), where
    ``P = C_in·K·K`` is the number of weights per filter (per group for grouped convolutions)."""
    weight = module.weight.detach()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # (C_in, C_out/groups, K…) → one filter per output channel
        g = module.groups
        weight = weight.reshape(g, weight.shape[0] // g, *weight.shape[1:]).transpose(1, 2)
        weight = weight.reshape(module.out_channels, -1)
    else:
        weight = weight.reshape(weight.shape[0], -1)
    return weight.float().norm(dim=1) / math.sqrt(weight.shape[1])


@CRITERIA.register("magnitude")
class Magnitude(Criterion):
    """PaT Eq. 2: ``I_n = ‖W_n‖₂ / √P`` — the L2 norm of a neuron's filter divided by the square root of its
    number of weights, so neurons of layers of different sizes compare.

    Coupled groups: a channel shared by several producing layers (the convolutions feeding one residual add,
    or a depthwise convolution and its producer) scores the **mean of Eq. 2 over those producers**: each layer's
    filter counts once whatever its size, which keeps the per-layer normalisation of Eq. 2. Input-side slices
    (next layer's kernels) are not filters in Eq. 2 and are not counted.
    """

    family = "magnitude"

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for g in groups:
            producers = g.producers()
            total = torch.zeros(g.width)
            for ref in producers:
                total += g.gather(ref, filter_norms(ref.module).cpu())
            out[g.name] = total / max(len(producers), 1)
        return out
