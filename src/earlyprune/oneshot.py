"""Pruning outside a training loop — before training (3SP, CroP-S, CroPit, SNAP-it; at weight level CroP-U,
CroPit-U, SNIP, GraSP) or of a trained model: score, select, remove (or mask), once or in a few rescored steps;
optionally rescale or re-initialise what is left (3SP §3.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .core.batch import Batch
from .core.distributed import average_scores, check_unwrapped
from .core.validation import (
    BOOLEAN,
    Boolean,
    Callable_,
    InstanceOf,
    InvalidParameterError,
    Options,
    Rule,
    checked,
    rule,
    shown,
)
from .criteria import Criterion
from .criteria.modifiers import with_modifiers
from .graph.groups import ChannelGroups
from .graph.masks import MaskedWeights
from .graph.metrics import CHANNEL_LAYERS, ModelStats, measure
from .planning.levels import RUN_RULES, ChannelLevel, WeightLevel, check_granularity
from .planning.rounding import (
    AutoRoundTo,
    RoundToChoice,
    batch_size_of,
    split_round_to,
)
from .planning.selection import SCHEDULES, check_reachable, step_amounts
from .planning.spec import MAX_GROUP_RATIO, TargetSpec
from .speed.steptime import StepTime, StepTimePredictor
from .surgery.optimizer_state import check_covers
from .unstructured.criteria import resolve_criterion


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune` did."""

    before: ModelStats
    after: ModelStats
    structure: list[int]                     #: kept channels per group
    group_names: list[str]
    removed: list[dict[str, list[int]]] = field(default_factory=list)  #: per step: group → removed indices
    round_to: int = 1                        #: the multiple kept widths were rounded to
    round_to_choice: RoundToChoice | None = None  #: what ``round_to="auto"`` measured
    predictor: StepTimePredictor | None = None    #: the step-time predictor of ``target="latency"``
    granularity: str = "channels"
    #: per weight-level step: weights newly masked (granularity "weights" / "both")
    masked: list[int] = field(default_factory=list)
    weight_structure: list[int] = field(default_factory=list)   #: kept weights per masked tensor
    weight_names: list[str] = field(default_factory=list)


#: the arguments' rules of :func:`prune` (:mod:`earlyprune.core.validation`)
PRUNE_RULES: dict[str, Rule] = {
    **RUN_RULES,
    "optimizer": rule(InstanceOf(torch.optim.Optimizer, "a torch.optim.Optimizer"), None),
    "schedule": rule(Options(("auto",) + tuple(SCHEDULES))),
    "rescale": BOOLEAN,
    "reinit": rule(Boolean(), Callable_("a callable reinit(model)")),
}


@checked(PRUNE_RULES)
def prune(model: nn.Module, example_inputs: Any, ratio: float, *, criterion: str | Criterion = "magnitude",
          target: str = "channels", steps: int = 1, min_channels: int = 1,
          round_to: int | str | AutoRoundTo = 1, max_group_ratio: float = MAX_GROUP_RATIO,
          ignored_layers: Iterable[nn.Module] | None = None,
          optimizer: torch.optim.Optimizer | None = None,
          batches: Iterable[tuple[Any, Any]] | None = None,
          loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
          compute_aware: float | None = None, latency_aware: bool = False, schedule: str = "auto",
          rescale: bool = False, reinit: bool | Callable[[nn.Module], Any] = False,
          step_time: StepTime | StepTimePredictor | None = None, granularity: str = "channels",
          weight_ratio: float | None = None, weight_criterion: str | Criterion | None = None,
          min_weights: int = 1) -> PruneResult:
    """Prune ``model`` in place to remove ``ratio`` of its channels (or MACs / parameters / training-step time, see
    ``target``) — or to mask ``ratio`` of its weights (``granularity="weights"``), or both in turn (``"both"``).

    Pruning before training: 3SP is ``criterion="snip"`` with one batch (``compute_aware=λ`` for 3SP + CA,
    ``rescale=True`` / ``reinit=True`` for its initialisation options); CroP-S is ``criterion="crop"``; CroPit /
    SNAP-it are ``crop`` / ``snip`` with ``steps > 1`` (rescored after every step, ``"halving"`` schedule). At
    ``granularity="weights"``: CroP-U ``criterion="crop"``, CroPit-U the same with ``steps > 1``, SNIP ``"snip"``,
    GraSP ``"grasp"``, Random-U ``"random"`` (names take their weight form, :mod:`earlyprune.unstructured.criteria`).

    Args:
        model: the network, pruned in place.
        example_inputs: a batch (tensor, tuple or dict) to trace the model with.
        ratio: fraction of the original ``target`` quantity to remove, in (0, 1).
        criterion: a criterion name (``"snip"``, ``"crop:mixed"``…) or instance.
        target: ``"channels"``, ``"flops"``, ``"params"`` or ``"latency"`` (the measured training-step time at the
            batch size of ``batches`` — or of ``example_inputs`` — see :class:`~earlyprune.EarlyPruner`).
        steps: rescore and remove in this many steps (1 = one shot).
        min_channels, round_to, max_group_ratio, ignored_layers, step_time, compute_aware, latency_aware: as for
            :class:`~earlyprune.EarlyPruner` (``round_to="auto"`` measures at the first step, at the batch size of
            ``batches``; the choice is in the result; ``compute_aware=λ`` is 3SP's compute-aware scores).
        optimizer: if given, its param groups and state follow the removal.
        batches: ``(inputs, targets)`` training batches to score with (data-driven criteria); every step rescores
            on all of them (for gradient criteria, a forward/backward each; ``.grad`` is left cleared). Not
            needed by criteria that score from the weights alone (``magnitude``, ``l1``, ``bn_scale``, ``random``).
        loss_fn: ``loss_fn(outputs, targets)`` for scoring on ``batches``.
        schedule: cumulative fractions of the steps: ``"halving"`` (CroPit / SNAP-it, ``ρ − (ρ − 0.5)·0.5^i``),
            ``"exponential"`` (PaT Algorithm 1), or ``"auto"`` — halving for criteria that score batches with
            passes of their own (``snip``, ``crop``, ``grasp``: pruning before training), exponential otherwise.
        rescale: multiply every convolution / linear weight by ``√(original fan-out / pruned fan-out)`` after
            pruning (3SP: restores the He-initialisation variance; fan-out = ``C_out/groups·K²``).
        reinit: re-initialise the pruned model: True calls every layer's ``reset_parameters()`` (PyTorch's
            default initialisation); a callable ``reinit(model)`` applies your own scheme (as SNIP does).
        granularity, weight_ratio, weight_criterion, min_weights: as for :class:`~earlyprune.EarlyPruner` —
            ``"weights"`` masks ``ratio`` of the prunable weights; ``"both"`` removes channels, then masks weights
            until ``weight_ratio`` of the dense model's are gone. ``rescale`` / ``reinit`` apply to channels only.
    """
    check_unwrapped(model)
    if optimizer is not None:
        check_covers(model, optimizer)
    check_granularity(granularity, weight_ratio, weight_criterion, target=target, round_to=round_to,
                      min_channels=min_channels, compute_aware=compute_aware, latency_aware=latency_aware)
    _check_options(granularity, criterion, weight_criterion, rescale, reinit)
    weights = {"steps": steps, "ignored_layers": ignored_layers, "optimizer": optimizer, "batches": batches,
               "loss_fn": loss_fn, "min_weights": min_weights}
    if granularity == "weights":
        return _prune_weights(model, example_inputs, ratio, criterion=criterion, schedule=schedule, **weights)
    baseline = MaskedWeights(model, ignored_layers=ignored_layers).baseline if granularity == "both" else None
    crit = with_modifiers(resolve_criterion(criterion, "channels"), compute_aware=compute_aware,
                          latency_aware=latency_aware)
    if schedule == "auto":
        schedule = "halving" if crit.needs_batches else "exponential"
    batch_list = _batches(batches, loss_fn, crit)
    fixed, auto = split_round_to(round_to)
    spec = TargetSpec(float(ratio), target, min_channels, fixed, max_group_ratio)
    groups = ChannelGroups(model, example_inputs, ignored_layers=ignored_layers)
    check_reachable(groups, ratio, spec)
    level = ChannelLevel(groups, spec, auto=auto, step_time=step_time)
    before = measure(model, example_inputs)
    fan_out = {m: _fan_out(m) for m in model.modules() if isinstance(m, CHANNEL_LAYERS)}
    removed = _run_steps(model, level, crit, batch_list, step_amounts(float(ratio), steps, schedule), optimizer)
    _restore_initialisation(model, fan_out, rescale, reinit)
    masked = (_prune_weights(model, example_inputs, weight_ratio,  # type: ignore[arg-type]
                             criterion=weight_criterion if weight_criterion is not None else criterion,
                             schedule=schedule, baseline=baseline, **weights) if granularity == "both" else None)
    return PruneResult(before=before, after=measure(model, example_inputs, baseline=before),
                       structure=groups.widths(), group_names=groups.names, removed=removed,
                       round_to=level.spec.round_to, round_to_choice=level.round_to_choice,
                       predictor=level.predictor, granularity=granularity, masked=masked.masked if masked else [],
                       weight_structure=masked.weight_structure if masked else [],
                       weight_names=masked.weight_names if masked else [])


def _check_options(granularity: str, criterion: Any, weight_criterion: Any, rescale: bool, reinit: Any) -> None:
    """What :func:`prune`'s options exclude: 3SP's initialisation options follow removed channels, and exclude
    each other; ``"both"`` with a Criterion instance cannot guess its weight form."""
    if granularity == "weights" and (rescale or reinit is not False):
        raise InvalidParameterError("rescale= and reinit= restore the initialisation after channels are removed; "
                                    "they do not apply to granularity='weights'")
    if granularity == "both" and weight_criterion is None and not isinstance(criterion, str):
        raise InvalidParameterError("granularity='both' with a Criterion instance: pass weight_criterion= as well "
                                    "(the weight-level criterion, e.g. 'crop-u')")
    if rescale and reinit is not False:
        raise InvalidParameterError("rescale and reinit exclude each other: rescaling keeps the initial weights, "
                                    "re-initialising replaces them")


def _run_steps(model: nn.Module, level: ChannelLevel | WeightLevel, crit: Criterion, batch_list: list[Batch],
               amounts: list[float], optimizer: Any) -> list[Any]:
    """Score on every batch and prune to each cumulative amount in turn, through the level (which measures
    ``round_to="auto"`` and the step-time predictor at the first step, at the batches' size); what each step
    removed (channels: group → indices) or masked (weights: a count)."""
    batch_size = batch_size_of(batch_list[0].inputs) if batch_list else None
    out = []
    crit.attach(level.units)
    try:
        for amount in amounts:
            _observe(model, crit, level.units, batch_list)
            count = level.prune(average_scores(crit.scores(level.units)), amount, optimizer, batch_size=batch_size)
            out.append(level.removed if isinstance(level, ChannelLevel) else count)
            crit.reset()
    finally:
        crit.detach()
    return out


def _restore_initialisation(model: nn.Module, fan_out: dict[nn.Module, int], rescale: bool,
                            reinit: bool | Callable[[nn.Module], Any]) -> None:
    """3SP's options after channels are removed: rescale the kept weights, or re-initialise (True: every layer's
    ``reset_parameters()``; a callable: the user's scheme)."""
    if rescale:
        rescale_(fan_out)
    elif reinit is True:
        for m in model.modules():
            if callable(getattr(m, "reset_parameters", None)) and any(True for _ in m.parameters(recurse=False)):
                m.reset_parameters()
    elif callable(reinit):
        reinit(model)


def _prune_weights(model: nn.Module, example_inputs: Any, ratio: float, *, criterion: str | Criterion, steps: int,
                   schedule: str, ignored_layers: Iterable[nn.Module] | None, optimizer: Any,
                   batches: Iterable[tuple[Any, Any]] | None, loss_fn: Any, min_weights: int,
                   baseline: int | None = None) -> PruneResult:
    """Weight-level :func:`prune`: rescore on ``batches`` and mask, ``steps`` times (CroPit-U, SNIP-it at weight
    level), one global ranking each time."""
    crit = resolve_criterion(criterion, "weights")
    if schedule == "auto":
        schedule = "halving" if crit.needs_batches or crit.uses_gradients else "exponential"
    batch_list = _batches(batches, loss_fn, crit)
    before = measure(model, example_inputs)
    weights = MaskedWeights(model, ignored_layers=ignored_layers, baseline=baseline)
    level = WeightLevel(weights, min_weights=min_weights)
    masked = _run_steps(model, level, crit, batch_list, step_amounts(float(ratio), steps, schedule), optimizer)
    after = measure(model, example_inputs, baseline=before)
    return PruneResult(before=before, after=after, structure=weights.widths(), group_names=weights.names,
                       granularity="weights", masked=masked, weight_structure=weights.widths(),
                       weight_names=weights.names)


def _observe(model: nn.Module, crit: Criterion, units: Any, batch_list: list[Batch]) -> None:
    """Every batch through the criterion (gradient criteria read ``.grad``: each gets its batch's)."""
    for batch in batch_list:
        if crit.uses_gradients:
            model.zero_grad(set_to_none=True)
            batch.loss(model).backward()
        crit.observe(units, batch)
    if crit.uses_gradients:
        model.zero_grad(set_to_none=True)


def _fan_out(m: nn.Module) -> int:
    """Outputs each input unit connects to: ``C_out/groups·K^d`` for a convolution, ``out_features`` for linear."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels // m.groups * math.prod(m.kernel_size)
    return m.out_features


def rescale_(original_fan_out: dict[nn.Module, int]) -> None:
    """3SP's rescaled initialisation: multiply each layer's weight by ``√(original fan-out / pruned fan-out)``,
    recovering the variance of He et al.'s (fan-out) initialisation after channels were removed."""
    with torch.no_grad():
        for m, before in original_fan_out.items():
            now = _fan_out(m)
            if now != before and now > 0:
                m.weight.mul_(math.sqrt(before / now))


def _batches(batches: Iterable[tuple[Any, Any]] | None, loss_fn: Any, crit: Criterion) -> list[Batch]:
    if batches is None:
        if crit.needs_batches or crit.uses_gradients:
            raise InvalidParameterError(f"criterion {crit.name!r} scores from training data: pass "
                                        f"batches=[(inputs, targets), ...] and loss_fn=")
        return []
    if loss_fn is None or not callable(loss_fn):
        raise InvalidParameterError("batches= needs loss_fn= as well (loss_fn(outputs, targets) -> scalar tensor)")
    out = []
    for item in batches:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise InvalidParameterError(f"batches must yield (inputs, targets) pairs, got {shown(item)}")
        out.append(Batch(item[0], item[1], loss_fn))
    if not out:
        raise InvalidParameterError("batches= is empty: give at least one (inputs, targets) batch")
    return out
