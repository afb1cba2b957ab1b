"""Importance criteria ("what to prune"), one module each, all in the :data:`CRITERIA` registry."""

from .base import CRITERIA, Batch, Criterion
from .bn_scale import BNScale
from .crop import CroP
from .grasp import GraSP
from .l1 import L1
from .latency import LatencyTable
from .magnitude import Magnitude
from .modifiers import ComputeAware, LatencyAware, with_modifiers
from .random_scores import Random
from .snip import Snip
from .taylor import Taylor

__all__ = ["CRITERIA", "BNScale", "Batch", "ComputeAware", "CroP", "Criterion", "GraSP", "L1", "LatencyAware",
           "LatencyTable", "Magnitude", "Random", "Snip", "Taylor", "with_modifiers"]
