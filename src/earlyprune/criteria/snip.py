"""Structured SNIP (3SP / SNAP): the loss gradient of per-channel masks."""

from __future__ import annotations

import torch

from ..core.batch import Batch
from ..core.validation import InvalidParameterError
from ..graph.groups import ChannelGroups
from .gates import GatedCriterion, complete, gate_gradients
from .registry import CRITERIA


@CRITERIA.register("snip")
class Snip(GatedCriterion):
    """3SP §3.1: ``S = |∂L/∂M̃|`` at ``M̃ = 1``, one mask entry per output channel of a convolution and per hidden
    unit of a linear layer (SNAP / SNIP-it score the same gate gradient).

    Each batch runs one forward and backward of its own through per-channel gates (:mod:`.gates`: after
    BatchNorm, shared by coupled layers — their contributions add up); :meth:`scores` is
    ``|mean over batches of ∂L/∂M̃|`` (3SP uses one batch; SNAP sums several before the absolute value). The
    model's ``.grad`` and BatchNorm running statistics are left untouched; the pass runs in the model's current
    mode (train mode uses batch statistics, as at initialisation).
    """

    family = "gradient"

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        if batch is None:
            raise InvalidParameterError("criterion 'snip' scores a batch: pass one")
        gates = self.gates_for(groups)
        grads = gate_gradients(groups, batch, gates)
        out = {k: v.float() for k, v in grads.items() if k not in gates.ungated}  # on the model's device
        return complete(groups, out, gates.ungated, self.name)

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.abs() for k, v in mean.items()}
