"""Importance criteria ("what to prune"), one module each, all in the :data:`CRITERIA` registry."""

from .base import CRITERIA, Criterion
from .magnitude import Magnitude

__all__ = ["CRITERIA", "Criterion", "Magnitude"]
