"""A run whose loss diverges stops, naming the hyper-parameter to check, before a bad checkpoint is written.

Per batch, on the device (no host sync): whether the loss was finite, and the streak of consecutive batches whose
loss was NaN or infinite. Every :data:`CHECK_EVERY` batches one sync reads the streak; :data:`PATIENCE` in a row
stops the run with :class:`~earlyprune.core.errors.NonFiniteError`. At the end of the epoch the parameters are checked
as well (an update with NaN gradients poisons every later step). The error is raised inside the epoch, before
its checkpoint, so the last good checkpoint is what ``--resume`` finds. Isolated non-finite batches — fp16
overflow that the gradient scaler skips — only count: ``nonfinite_batches`` in the epoch's metrics row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.errors import NonFiniteError

#: consecutive batches with a NaN / infinite loss that stop a run
PATIENCE = 20
#: batches between two reads of the streak (a host sync each)
CHECK_EVERY = 25


class LossGuard:
    """Watches one epoch's training losses; see the module docstring."""

    def __init__(self, cfg: Any, device: torch.device, epoch: int) -> None:
        self.cfg, self.epoch = cfg, epoch
        self.streak = torch.zeros((), dtype=torch.long, device=device)
        self.bad = torch.zeros((), dtype=torch.long, device=device)
        self.batches = 0

    def observe(self, loss: torch.Tensor) -> None:
        """Count this batch's loss (device-side)."""
        finite = torch.isfinite(loss.detach()).all()
        self.streak = torch.where(finite, torch.zeros_like(self.streak), self.streak + 1)
        self.bad += (~finite).long()
        self.batches += 1
        if self.batches % CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        """Stop when the streak reached :data:`PATIENCE` (one host sync)."""
        streak = int(self.streak)
        if streak >= PATIENCE:
            raise NonFiniteError(self.message(f"was NaN or infinite for {streak} consecutive batches (epoch "
                                              f"{self.epoch}, up to batch {self.batches - 1})"))

    def explain(self, error: NonFiniteError) -> None:
        """Re-raise ``error`` (met by the pruner) with the loss's story and the hyper-parameter to check."""
        streak = int(self.streak)
        if streak == 0:
            raise error
        raise NonFiniteError(self.message(f"was NaN or infinite for the last {streak} batch(es) (epoch {self.epoch}, "
                                          f"up to batch {self.batches - 1}), and then {error}")) from None

    def end_epoch(self, model: nn.Module) -> int:
        """Check the whole epoch and the parameters; the number of batches with a non-finite loss."""
        bad = int(self.bad)
        if self.batches and bad == self.batches:
            raise NonFiniteError(self.message(f"was NaN or infinite in every batch of epoch {self.epoch}"))
        self.check()
        params = [p.detach() for p in model.parameters() if p.is_floating_point()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise NonFiniteError(self.message(f"left NaN or infinite weights after epoch {self.epoch} ({bad} "
                                              f"batch(es) had a non-finite loss)"))
        return bad

    def message(self, what: str) -> str:
        cfg = self.cfg
        precision = (f"; with --precision {cfg.precision}, overflow is likely: try --precision fp32"
                     if cfg.precision != "fp32" else "")
        return (f"the training loss {what}: the run cannot recover. Check --lr (now {cfg.lr:g}; the loss diverges "
                f"when it is too high, also with --warmup-epochs too short){precision}")


__all__ = ["CHECK_EVERY", "LossGuard", "PATIENCE"]
