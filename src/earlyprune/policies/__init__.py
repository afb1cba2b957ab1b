"""When-to-prune policies, one module each, all in the :data:`POLICIES` registry."""

from .base import POLICIES, Decision, EpochReport, Policy, SignalPolicy
from .before import Before
from .earlybird import EarlyBird
from .earlycrop import EarlyCroP
from .epi import EPI
from .schedules import FixedEpoch, Init, Never, RandomEpoch

__all__ = ["EPI", "POLICIES", "Before", "Decision", "EarlyBird", "EarlyCroP", "EpochReport", "FixedEpoch", "Init",
           "Never", "Policy", "RandomEpoch", "SignalPolicy"]
