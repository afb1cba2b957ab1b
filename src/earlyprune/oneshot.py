"""One-shot pruning outside a training loop: score, select, remove — once or in a few rescored steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from .criteria import CRITERIA, Criterion
from .engine import PruningEngine
from .groups import ChannelGroups
from .metrics import ModelStats, measure
from .pruner import check_steps
from .selection import iterative_amounts, select, validate_target


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune` did."""

    before: ModelStats
    after: ModelStats
    structure: list[int]                     #: kept channels per group
    group_names: list[str]
    removed: list[dict[str, list[int]]] = field(default_factory=list)  #: per step: group → removed indices


def prune(model: nn.Module, example_inputs: Any, ratio: float, *, criterion: str | Criterion = "magnitude",
          target: str = "channels", steps: int = 1, min_channels: int = 1, round_to: int = 1,
          ignored_layers: Iterable[nn.Module] | None = None,
          optimizer: torch.optim.Optimizer | None = None) -> PruneResult:
    """Prune ``model`` in place to remove ``ratio`` of its channels (or MACs / parameters, see ``target``).

    Args:
        model: the network, pruned in place.
        example_inputs: a batch (tensor, tuple or dict) to trace the model with.
        ratio: fraction of the original ``target`` quantity to remove, in [0, 1).
        criterion: a criterion name or instance (scores from the current weights).
        target: ``"channels"``, ``"flops"`` or ``"params"``.
        steps: rescore and remove in this many exponentially scheduled steps (1 = one shot).
        min_channels, round_to, ignored_layers: as for :class:`~earlyprune.EarlyPruner`.
        optimizer: if given, its param groups and state follow the removal.
    """
    validate_target(ratio, target, min_channels, round_to)
    check_steps(steps, None)
    crit = CRITERIA.build(criterion)
    groups = ChannelGroups(model, example_inputs, ignored_layers=ignored_layers)
    before = measure(model, example_inputs)
    engine = PruningEngine(groups)
    removed = []
    crit.attach(groups)
    try:
        for amount in iterative_amounts(float(ratio), steps):
            plan = select(groups, crit.scores(groups), amount, target=target, min_channels=min_channels,
                          round_to=round_to)
            removed.append(engine.apply(plan, optimizer))
            crit.reset()
    finally:
        crit.detach()
    after = measure(model, example_inputs, baseline=before)
    return PruneResult(before=before, after=after, structure=groups.widths(), group_names=groups.names,
                       removed=removed)
