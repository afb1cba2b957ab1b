"""Importance criteria ("what to prune"), one module each, all in the :data:`CRITERIA` registry.

Layout: :mod:`.base` (:class:`Criterion`), :mod:`.registry` (:data:`CRITERIA`), :mod:`.gates` (per-channel gates
and :class:`GatedCriterion`), one module per criterion, :mod:`.modifiers` (compute- / latency-aware wrappers),
:mod:`.latency` (the per-layer latency table). :class:`~earlyprune.core.batch.Batch` is re-exported here.
"""

from ..core.batch import Batch
from .base import Criterion
from .bn_scale import BNScale
from .crop import CroP
from .gates import GatedCriterion
from .grasp import GraSP
from .l1 import L1
from .latency import LatencyTable
from .magnitude import Magnitude
from .modifiers import ComputeAware, LatencyAware, with_modifiers
from .random_scores import Random
from .registry import CRITERIA
from .snip import Snip
from .taylor import Taylor

__all__ = ["CRITERIA", "BNScale", "Batch", "ComputeAware", "CroP", "Criterion", "GatedCriterion", "GraSP", "L1",
           "LatencyAware", "LatencyTable", "Magnitude", "Random", "Snip", "Taylor", "with_modifiers"]
