"""earlyprune — prune whole channels early in training, so most epochs run on a smaller, faster model.

Public API:

* :class:`EarlyPruner` — add ``pruner.step()`` / ``pruner.epoch_end()`` to your own training loop;
* :func:`prune` — one-shot (or few-step) pruning outside a training loop;
* :func:`save` / :func:`load` — safetensors weights + the pruned structure, no pickle;
* :func:`measure` — parameters, MACs, node and weight sparsity;
* :func:`pruning_outcome` — whether a pruner removed channels, and why not when it did not;
* :func:`structure_similarity` / :func:`early_pruning_indicator` — PaT's Ψ (Eq. 5) and EPI (Eq. 6) on your own
  structure vectors;
* :data:`CRITERIA` / :data:`POLICIES` — registries of what to prune and when;
* :class:`AutoRoundTo` — ``round_to="auto"``: kept widths rounded to the multiple measured fastest here;
* :class:`StepTime` / :func:`measure_step_time` — the measured step-time predictor of ``target="latency"``.
* :class:`EarlyPruneError` — the base of every error earlyprune raises on purpose (see ``docs/errors.md``).
"""

from .criteria import CRITERIA, Criterion
from .core.errors import ConfigError, EarlyPruneError, InfeasibleTargetError, NonFiniteError, UnprunableGroupsError
from .graph.groups import ChannelGroup, ChannelGroups
from .io import StructureMismatchError, load, save
from .graph.metrics import ModelStats, measure
from .oneshot import PruneResult, prune
from .outcome import PruningOutcome, pruning_outcome
from .policies import POLICIES, EpochReport, Policy
from .pruner import EarlyPruner
from .planning.rounding import AutoRoundTo, RoundToChoice
from .planning.selection import Plan
from .planning.targets import select
from .signals.measures import early_pruning_indicator, structure_similarity
from .speed.steptime import StepTime, StepTimePredictor, measure_step_time
from .core.validation import InvalidParameterError
from .unstructured import criteria as _weight_criteria  # registers crop-u, snip-u, grasp-u, magnitude-u, random-u

__version__ = "0.1.0"

__all__ = [
    "CRITERIA", "POLICIES", "AutoRoundTo", "ChannelGroup", "ChannelGroups", "ConfigError", "Criterion", "EarlyPruneError",
    "EarlyPruner", "EpochReport", "InfeasibleTargetError", "InvalidParameterError", "ModelStats", "NonFiniteError", "Plan",
    "Policy", "PruneResult", "PruningOutcome", "RoundToChoice", "StepTime", "StepTimePredictor", "StructureMismatchError",
    "UnprunableGroupsError", "early_pruning_indicator", "load", "measure", "measure_step_time", "prune",
    "pruning_outcome", "save", "select", "structure_similarity",
]
