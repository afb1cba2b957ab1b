"""One-shot pruning outside a training loop: score, select, remove — once or in a few rescored steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .criteria import CRITERIA, Batch, Criterion
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
          optimizer: torch.optim.Optimizer | None = None,
          batches: Iterable[tuple[Any, Any]] | None = None,
          loss_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> PruneResult:
    """Prune ``model`` in place to remove ``ratio`` of its channels (or MACs / parameters, see ``target``).

    Args:
        model: the network, pruned in place.
        example_inputs: a batch (tensor, tuple or dict) to trace the model with.
        ratio: fraction of the original ``target`` quantity to remove, in [0, 1).
        criterion: a criterion name or instance.
        target: ``"channels"``, ``"flops"`` or ``"params"``.
        steps: rescore and remove in this many exponentially scheduled steps (1 = one shot).
        min_channels, round_to, ignored_layers: as for :class:`~earlyprune.EarlyPruner`.
        optimizer: if given, its param groups and state follow the removal.
        batches: ``(inputs, targets)`` training batches to score with (data-driven criteria); every step rescores
            on all of them (for gradient criteria, a forward/backward each; ``.grad`` is left cleared). Not
            needed by criteria that score from the weights alone (``magnitude``).
        loss_fn: ``loss_fn(outputs, targets)`` for scoring on ``batches``.
    """
    validate_target(ratio, target, min_channels, round_to)
    check_steps(steps, None)
    crit = CRITERIA.build(criterion)
    batch_list = _batches(batches, loss_fn, crit)
    groups = ChannelGroups(model, example_inputs, ignored_layers=ignored_layers)
    before = measure(model, example_inputs)
    engine = PruningEngine(groups)
    removed = []
    crit.attach(groups)
    try:
        for amount in iterative_amounts(float(ratio), steps):
            for batch in batch_list:
                if crit.uses_gradients:  # gradient criteria read .grad: give them this batch's
                    model.zero_grad(set_to_none=True)
                    batch.loss(model).backward()
                crit.observe(groups, batch)
            if crit.uses_gradients:
                model.zero_grad(set_to_none=True)
            plan = select(groups, crit.scores(groups), amount, target=target, min_channels=min_channels,
                          round_to=round_to)
            removed.append(engine.apply(plan, optimizer))
            crit.reset()
    finally:
        crit.detach()
    after = measure(model, example_inputs, baseline=before)
    return PruneResult(before=before, after=after, structure=groups.widths(), group_names=groups.names,
                       removed=removed)


def _batches(batches: Iterable[tuple[Any, Any]] | None, loss_fn: Any, crit: Criterion) -> list[Batch]:
    if batches is None:
        if crit.needs_batches or crit.uses_gradients:
            raise ValueError(f"criterion {crit.name!r} scores from training data: pass batches=[(inputs, targets), "
                             f"...] and loss_fn=")
        return []
    if loss_fn is None or not callable(loss_fn):
        raise ValueError("batches= needs loss_fn= as well (loss_fn(outputs, targets) -> scalar tensor)")
    out = []
    for item in batches:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError("batches must yield (inputs, targets) pairs")
        out.append(Batch(item[0], item[1], loss_fn))
    if not out:
        raise ValueError("batches= is empty: give at least one (inputs, targets) batch")
    return out
