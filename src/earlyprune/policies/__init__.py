"""When-to-prune policies, one module each, all in the :data:`POLICIES` registry."""

from .base import POLICIES, EpochReport, Policy
from .schedules import FixedEpoch, Never

__all__ = ["POLICIES", "EpochReport", "FixedEpoch", "Never", "Policy"]
