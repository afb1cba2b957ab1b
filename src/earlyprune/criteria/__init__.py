"""Importance criteria ("what to prune"), one module each, all in the :data:`CRITERIA` registry."""

from .base import CRITERIA, Batch, Criterion
from .magnitude import Magnitude

__all__ = ["CRITERIA", "Batch", "Criterion", "Magnitude"]
