"""First-order Taylor criterion — PaT Eq. 3, read from the gradients of the user's own backward pass."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..core.batch import Batch
from ..core.errors import UsageError
from ..core.validation import BOOLEAN, InvalidParameterError, Rule, checked
from ..graph.groups import ChannelGroups
from .base import Criterion
from .gates import complete, gate_points, parameter_taylor
from .registry import CRITERIA


@CRITERIA.register("taylor")
class Taylor(Criterion):
    """PaT Eq. 3: ``I_n = Σ_{w∈W_n} g_w·w`` — the first-order Taylor estimate of the loss change when neuron
    ``n`` is removed; for a channel followed by BatchNorm ``I_n = γ_n·∂L/∂γ_n + β_n·∂L/∂β_n`` (Molchanov et al.),
    which equals ``Σ y·∂L/∂y`` at the BatchNorm output, i.e. the gradient of a gate placed there.

    Per batch the signed value is read from ``.grad`` (left by the user's ``loss.backward()``: no extra pass, so
    it is cheap enough to accumulate every batch of dense training); :meth:`scores` returns the **absolute value
    of the mean over the batches** since the last reset — L1, which PaT found better than Molchanov's L2 during
    training. ``Taylor(per_batch=True)`` (spec ``"taylor:batch"``) averages ``|I_n|`` of each batch instead.

    Gate points (see :mod:`.gates`): BatchNorm/GroupNorm outputs, and layers not followed by one (there
    ``Σ_{w∈W_n} w·∂L/∂w + b_n·∂L/∂b_n`` equals the gradient of a gate at the layer output). Coupled channels
    **sum** the terms of all the group's gate points — the derivative of removing the channel from every layer
    at once. The weights have already taken the optimizer step when the pruner reads ``.grad``; the resulting
    ``lr``-sized difference from the pre-step value is ignored.
    """

    family = "gradient"
    uses_gradients = True

    RULES: ClassVar[dict[str, Rule]] = {"per_batch": BOOLEAN}

    @checked(RULES)
    def __init__(self, per_batch: bool = False) -> None:
        super().__init__()
        self.per_batch = per_batch

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "Taylor":
        if arg != "batch":
            raise InvalidParameterError(f"criterion 'taylor' takes ':batch' (mean of per-batch |I|) or nothing, got "
                             f"'taylor:{arg}'")
        return cls(per_batch=True, **kwargs)

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        missing, seen_grad = [], False
        for g in groups:
            total: torch.Tensor | None = None
            for point in gate_points(groups, g):
                value = parameter_taylor(point)
                if value is not None:  # summed on the model's device: no host sync per batch
                    part = g.gather(point.ref, value)
                    total = part if total is None else total + part
            seen_grad = seen_grad or total is not None
            if total is not None:
                out[g.name] = total.abs() if self.per_batch else total
            else:
                missing.append(g.name)
        if not seen_grad:
            raise UsageError("criterion 'taylor' reads the gradients of your backward pass, but the model has none: "
                             "call pruner.step() after loss.backward() and before optimizer.zero_grad()")
        return complete(groups, out, missing, self.name)

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return mean if self.per_batch else {k: v.abs() for k, v in mean.items()}

    def __repr__(self) -> str:
        return "Taylor(per_batch=True)" if self.per_batch else "Taylor()"
