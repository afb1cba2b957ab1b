"""The registry of importance criteria by name: ``CRITERIA.build("magnitude")``, ``@CRITERIA.register("mine")``."""

from __future__ import annotations

from ..core.registry import Registry
from .base import Criterion

CRITERIA: Registry[Criterion] = Registry("criterion", Criterion)

__all__ = ["CRITERIA"]
