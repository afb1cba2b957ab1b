"""Policies with a fixed answer: a pre-defined epoch, or never."""

from __future__ import annotations

from typing import Any

from .base import POLICIES, EpochReport, Policy


@POLICIES.register("epoch")
class FixedEpoch(Policy):
    """``epoch:K`` — prune during epoch ``K`` (0-based; ``epoch:0`` prunes during the first epoch), then train
    the sparse model to the end. PaT's "pre-defined" baseline and the building block of the oracle grid."""

    def __init__(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch:K needs a whole number K ≥ 0, got {epoch!r}")
        self.epoch = epoch

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "FixedEpoch":
        try:
            return cls(int(arg), **kwargs)
        except ValueError:
            raise ValueError(f"policy 'epoch:K' needs a whole number K ≥ 0, got 'epoch:{arg}'") from None

    def start(self) -> bool:
        return self.epoch == 0

    def update(self, report: EpochReport) -> bool:
        return report.epoch + 1 == self.epoch

    def __repr__(self) -> str:
        return f"FixedEpoch({self.epoch})"


@POLICIES.register("never")
class Never(Policy):
    """``never`` — train dense to the end (the reference run; signals are still recorded)."""

    def update(self, report: EpochReport) -> bool:
        return False
