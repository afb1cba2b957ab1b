"""EarlyPruner: the conductor a user's own training loop calls (``step()`` per batch, ``epoch_end()`` per epoch).

It owns no method: the criterion scores, the selection ranks, the engine removes (or the masks mask), the policy
decides when. Its only job is PaT Algorithm 2's bookkeeping — dense epochs until the policy triggers, one pruning
epoch in which Algorithm 1 removes channels in ``steps`` exponentially scheduled steps (scores averaged over the
batches between steps), then sparse training to the end. At ``granularity="weights"`` the same steps mask single
weights (:mod:`earlyprune.unstructured`); at ``"both"`` the pruning epoch removes channels, then masks weights of
what remains (:mod:`earlyprune.planning.levels`).
"""

from __future__ import annotations

import json
import logging
import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

from .core.batch import Batch
from .core.distributed import average_scores, check_unwrapped
from .core.errors import StructureMismatchError, UsageError
from .core.timing import Stopwatch, device_of
from .core.validation import (
    BOOLEAN,
    RATIO,
    Each,
    InstanceOf,
    Interval,
    InvalidParameterError,
    Options,
    Rule,
    check_args,
    rule,
)
from .criteria import Criterion
from .criteria.modifiers import with_modifiers
from .graph.groups import ChannelGroups
from .graph.masks import MaskedWeights, masked_counts
from .graph.metrics import ModelStats, measure
from .planning.levels import RUN_RULES, ChannelLevel, WeightLevel, check_granularity
from .planning.rounding import (
    AutoRoundTo,
    RoundToChoice,
    batch_size_of,
    split_round_to,
)
from .planning.selection import (
    MAX_GROUP_RATIO,
    SCHEDULES,
    check_reachable,
    step_amounts,
)
from .planning.spec import TargetSpec
from .planning.timebudget import fit_ratio, reachable_ratio
from .policies import POLICIES, EpochReport, Policy
from .signals.recorder import SignalRecorder
from .speed.steptime import StepTime, StepTimePredictor
from .surgery.optimizer_state import check_covers
from .surgery.prunability import check_prunable
from .unstructured.criteria import resolve_criterion

log = logging.getLogger("earlyprune")

_REQUIRED = object()
PHASES = ("dense", "pruning", "sparse")


class _SpecField:
    """A field of the pruner's :class:`~earlyprune.planning.spec.TargetSpec`, read as ``pruner.<field>``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, pruner: Any, owner: type | None = None) -> Any:
        return self if pruner is None else getattr(pruner.spec, self.name)


class EarlyPruner:
    """Prune whole channels (or single weights) early in training, inside your own loop.

    .. code-block:: python

        pruner = EarlyPruner(model, example_inputs, ratio=0.5, criterion="magnitude",
                             policy="epoch:3", optimizer=optimizer)
        for epoch in range(epochs):
            for x, y in loader:
                optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
                pruner.step()        # per batch, after the optimizer step
            pruner.epoch_end()       # per epoch

    Args:
        model: the network; it is pruned in place.
        example_inputs: a batch (tensor, tuple or dict) to trace the model with.
        ratio: fraction of the original ``target`` quantity to remove, in (0, 1) (PaT's α); at
            ``granularity="weights"`` the fraction of the prunable weights to mask (the weight sparsity).
        criterion: a :data:`~earlyprune.criteria.CRITERIA` name or a :class:`~earlyprune.criteria.Criterion`.
        policy: a :data:`~earlyprune.policies.POLICIES` spec (``"epoch:3"``, ``"never"``…) or a Policy.
        optimizer: the optimizer training ``model`` (or a list of them); param groups and state follow every
            removal. Required:
            pass ``None`` explicitly only if you rebuild your optimizer yourself after each pruning step.
        target: what ``ratio`` counts — ``"channels"`` (PaT), ``"flops"`` (MACs), ``"params"`` or ``"latency"``:
            the measured training-step time (forward + backward at the training batch size on this device),
            predicted per structure by :mod:`earlyprune.speed.steptime` and met by the greedy knapsack of
            :mod:`earlyprune.planning.timebudget` (importance per second saved). The predictor is measured once, at the
            first epoch end or pruning step (seconds to a minute), and kept in ``state_dict()``.
        steps: pruning steps inside the pruning epoch (PaT Algorithm 1's S), exponentially scheduled.
        steps_per_epoch: batches per epoch; learned from the first epoch when None (then required only if the
            policy prunes during epoch 0).
        min_channels: channels every group keeps at least.
        round_to: kept widths are rounded to multiples of this; ``"auto"`` (or an
            :class:`~earlyprune.planning.rounding.AutoRoundTo`) measures which multiple makes the pruned layers fastest on
            this device at the first pruning step (see :mod:`earlyprune.planning.rounding`; the choice is in
            ``round_to_choice``). Signals recorded before that use 1.
        ignored_layers: modules whose output channels must be kept (the output layer is detected by itself).
        num_heads: ``{layer: heads}`` for the query / key / value projections of attention blocks: their groups
            lose whole heads (see :class:`~earlyprune.graph.groups.ChannelGroups`).
        head_ratio: fraction of the attention heads to remove, ranked apart from the other channels (which lose
            ``ratio``); None ranks heads and channels together under ``ratio``. Needs ``num_heads`` and
            ``target="channels"``; the step schedule and the signals scale it with ``ratio``.
        loss_fn: ``loss_fn(outputs, targets)``, needed by criteria that score batches with passes of their own
            (then call ``pruner.step(inputs, targets)``); ignored otherwise.
        record_signals: record every when-to-prune signal of :mod:`earlyprune.signals` in ``history`` at the end
            of each dense epoch (EPI at 10 %–90 %, weight change, Early-Bird distance, rank correlations); the
            criterion is then accumulated over the dense epochs' batches (unless it runs passes of its own) and
            ``θ_0`` is kept in host memory. False computes only what the policy needs.
        compute_aware: Laplace smoothing λ ≥ 0 of 3SP's compute-aware scores (score / normalised MACs per
            channel); None: off. See :class:`~earlyprune.criteria.ComputeAware`.
        latency_aware: penalise scores by the latency a channel's removal saves, measured on this device (PaT
            §4.3). See :class:`~earlyprune.criteria.LatencyAware`.
        max_group_ratio: no group loses more than this fraction of its original channels (1.0: no limit). A
            global ranking compares scores across layers whose scale differs (PaT Eq. 2 early in training is the
            layer's initialisation scale), and would otherwise cut whole wide layers to ``min_channels``.
        step_time: how ``target="latency"`` measures the step (:class:`~earlyprune.speed.steptime.StepTime`: batch
            size, autocast dtype, memory format, clock), or an already measured
            :class:`~earlyprune.speed.steptime.StepTimePredictor`.
        checks: check at construction that the target is reachable under ``min_channels`` / ``round_to``
            (:func:`~earlyprune.planning.selection.check_reachable`) and that every group can be narrowed without breaking
            the model (:func:`~earlyprune.surgery.prunability.check_prunable`, on a copy of the model: it costs about as
            much as building the groups again). False skips both — e.g. for a model restored from a checkpoint
            whose pruner state is loaded next.
        granularity: ``"channels"`` (removed: a smaller, faster model), ``"weights"`` (masked: ``ratio`` is the
            weight sparsity over the prunable weights, :mod:`earlyprune.unstructured`; a plain criterion name
            takes its weight form, ``"crop"`` → ``"crop-u"``; ``target``, ``round_to``, ``min_channels``,
            ``num_heads``, ``head_ratio`` and the modifiers do not apply), or ``"both"``: the pruning epoch removes
            channels (``ratio`` of ``target``), then masks weights of what remains until ``weight_ratio`` of the
            dense model's prunable weights are gone.
        weight_ratio: the final weight sparsity at ``granularity="both"`` (required there, refused elsewhere).
        weight_criterion: the weight-level criterion at ``"both"`` (default: the weight form of ``criterion``).
        min_weights: weights every masked tensor keeps at least.
        schedule: the cumulative step fractions — ``"exponential"`` (PaT Algorithm 1) or ``"halving"`` (EarlyCroP
            Algorithm 1 / CroPit: ``ρ − (ρ − 0.5)·0.5^i``); None: the policy's (``before`` halves, others
            exponential).

    Raises:
        InvalidParameterError: an argument breaks its rule (:attr:`RULES`), or the optimizer does not hold
            the model's trainable parameters, or ``steps`` exceeds ``steps_per_epoch``.
        InfeasibleTargetError: ``min_channels`` / ``round_to`` / ``max_group_ratio`` make ``ratio``
            unreachable (counted targets; the time target prunes as far as they allow, with a warning).
        UnprunableGroupsError: narrowing some group breaks the model's forward.
    """

    #: the arguments' rules (:mod:`earlyprune.core.validation`); ``criterion`` / ``policy`` are checked by their registries
    RULES: ClassVar[dict[str, Rule]] = {
        **RUN_RULES,
        "optimizer": rule(InstanceOf(torch.optim.Optimizer, "a torch.optim.Optimizer"),
                          Each(InstanceOf(torch.optim.Optimizer, "a torch.optim.Optimizer")), None),
        "num_heads": rule(InstanceOf(Mapping, "a mapping {layer: number of heads}"), None),
        "head_ratio": rule(Interval(Real, 0, 1, closed="left"), None, hint="the fraction of attention heads to remove"),
        "steps_per_epoch": rule(Interval(Integral, 0, None, closed="neither"), None, hint="batches per epoch"),
        "record_signals": BOOLEAN,
        "checks": BOOLEAN,
        "schedule": rule(Options(tuple(SCHEDULES)), None),
    }

    def __init__(self, model: nn.Module, example_inputs: Any, ratio: float, *,
                 criterion: str | Criterion = "magnitude", policy: str | Policy = "epoch:1",
                 optimizer: torch.optim.Optimizer | None = _REQUIRED,  # type: ignore[assignment]
                 target: str = "channels", steps: int = 8, steps_per_epoch: int | None = None,
                 min_channels: int = 1, round_to: int | str | AutoRoundTo = 1,
                 ignored_layers: Iterable[nn.Module] | None = None,
                 num_heads: Mapping[nn.Module, int] | None = None, head_ratio: float | None = None,
                 loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
                 record_signals: bool = True,
                 compute_aware: float | None = None, latency_aware: bool = False, checks: bool = True,
                 granularity: str = "channels", weight_ratio: float | None = None,
                 weight_criterion: str | Criterion | None = None, min_weights: int = 1,
                 schedule: str | None = None, max_group_ratio: float = MAX_GROUP_RATIO,
                 step_time: StepTime | StepTimePredictor | None = None) -> None:
        self._check_arguments(**{k: v for k, v in locals().items() if k != "self"})   # the arguments, as given
        check_granularity(granularity, weight_ratio, weight_criterion, target=target, round_to=round_to,
                          min_channels=min_channels, compute_aware=compute_aware, latency_aware=latency_aware,
                          num_heads=num_heads, head_ratio=head_ratio)
        self.granularity = granularity
        self.weight_ratio = None if weight_ratio is None else float(weight_ratio)
        self.min_weights = min_weights
        self.model = model
        self.example_inputs = example_inputs
        self.steps = steps
        self.steps_per_epoch = steps_per_epoch
        fixed, auto = split_round_to(round_to) if granularity != "weights" else (1, None)
        #: the channel level, which owns the target, round_to="auto" and the step-time predictor (None: weights)
        self.channels: ChannelLevel | None = None
        self._spec = TargetSpec(float(ratio), target, min_channels, fixed, float(max_group_ratio))
        self._auto, self._step_time = auto, step_time
        self._batch_size: int | None = None
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.record_signals = record_signals
        self.checks = checks
        self.ignored_layers = list(ignored_layers or [])
        self._build_method(criterion, policy, compute_aware, latency_aware, weight_criterion)
        self._check_method()
        self._build_model_parts(ignored_layers, num_heads, head_ratio)
        self._reset_progress(schedule)
        if self.policy.start():
            self._begin_pruning()

    # -- construction, step by step -------------------------------------------------------------------------
    def _check_arguments(self, **arguments: Any) -> None:
        """Every argument against :attr:`RULES`, before anything is built."""
        if arguments["optimizer"] is _REQUIRED:
            raise InvalidParameterError("EarlyPruner needs optimizer=: its param groups and momentum/Adam state must "
                                        "follow the pruned parameters (pass optimizer=None only if you rebuild it "
                                        "after each pruning step)")
        check_args(self.RULES, arguments)
        check_unwrapped(arguments["model"])
        if arguments["optimizer"] is not None:
            check_covers(arguments["model"], arguments["optimizer"])

    # -- the target, owned by the channel level once it exists ----------------------------------------------------
    @property
    def spec(self) -> TargetSpec:
        """The run's target and limits (:class:`~earlyprune.planning.spec.TargetSpec`)."""
        return self.channels.spec if self.channels is not None else self._spec

    def _set_spec(self, spec: TargetSpec) -> None:
        self._spec = spec
        if self.channels is not None:
            self.channels.spec = spec

    @property
    def ratio(self) -> float:
        return self.spec.ratio  # type: ignore[return-value]

    @ratio.setter
    def ratio(self, value: float) -> None:
        self._set_spec(self.spec.but(ratio=float(value)))

    # read from the spec, which the channel level owns
    target, min_channels, max_group_ratio = _SpecField(), _SpecField(), _SpecField()

    @property
    def round_to(self) -> int | AutoRoundTo:
        """The multiple kept widths are rounded to — an AutoRoundTo until "auto" has measured."""
        if self.channels is not None:
            return self.channels.round_to
        return self._auto if self._auto is not None else self._spec.round_to

    @round_to.setter
    def round_to(self, value: int | AutoRoundTo) -> None:
        if self.channels is not None:
            self.channels.round_to = value

    @property
    def round_to_choice(self) -> RoundToChoice | None:
        """What ``round_to="auto"`` measured and chose (None before, or for an integer)."""
        return self.channels.round_to_choice if self.channels is not None else None

    @round_to_choice.setter
    def round_to_choice(self, choice: RoundToChoice | None) -> None:
        if self.channels is not None:
            self.channels.round_to_choice = choice

    @property
    def predictor(self) -> StepTimePredictor | None:
        """The step-time predictor of ``target="latency"`` (measured at first need, kept in the state)."""
        if self.channels is not None:
            return self.channels.predictor
        return self._step_time if isinstance(self._step_time, StepTimePredictor) else None

    @predictor.setter
    def predictor(self, predictor: StepTimePredictor | None) -> None:
        if self.channels is not None:
            self.channels.predictor = predictor

    def _build_method(self, criterion: str | Criterion, policy: str | Policy, compute_aware: float | None,
                      latency_aware: bool, weight_criterion: str | Criterion | None) -> None:
        """The criterion of each level (channel criteria wrapped by their modifiers: everything downstream sees one
        Criterion) and the policy. ``criterion`` is the first level's: it is accumulated in dense epochs and its
        family picks the policy's defaults."""
        if self.granularity == "weights":
            self.criterion: Criterion = resolve_criterion(criterion, "weights")
        else:
            self.criterion = with_modifiers(resolve_criterion(criterion, "channels"), compute_aware=compute_aware,
                                            latency_aware=latency_aware)
        self._criteria = [self.criterion]
        if self.granularity == "both":
            if weight_criterion is None and not isinstance(criterion, str):
                raise InvalidParameterError("granularity='both' with a Criterion instance: pass weight_criterion= as "
                                            "well (the weight-level criterion, e.g. 'crop-u')")
            self._criteria.append(resolve_criterion(weight_criterion if weight_criterion is not None else criterion,
                                                    "weights"))
        self.policy: Policy = POLICIES.build(policy)

    def _check_method(self) -> None:
        """What the criteria and the policy need from the other arguments."""
        policy = self.policy
        for crit in self._criteria:
            if crit.needs_batches and self.loss_fn is None:
                raise InvalidParameterError(f"criterion {crit.name!r} scores batches with passes of its own: pass "
                                            f"loss_fn= (e.g. torch.nn.functional.cross_entropy) and call "
                                            f"pruner.step(inputs, targets)")
        if policy.start() and self.steps_per_epoch is None and policy.pruning_batches is None:
            raise InvalidParameterError(f"policy {policy!r} prunes during epoch 0, before the number of batches per "
                                        f"epoch is known: pass steps_per_epoch=len(train_loader)")
        total = self._total_steps
        levels = " (steps × 2 levels)" if len(self._criteria) > 1 else ""
        rescoring = [c.name for c in self._criteria if _rescores(c)]
        if policy.pruning_batches is not None and total > policy.pruning_batches and rescoring:
            raise InvalidParameterError(f"policy {policy!r} prunes within {policy.pruning_batches} batch(es) but "
                                        f"takes {total} steps{levels}: criterion {rescoring[0]!r} rescores on fresh "
                                        f"batches before every step, so steps{levels} must be ≤ "
                                        f"{policy.pruning_batches}")
        if policy.pruning_batches is None and self.steps_per_epoch is not None and total > self.steps_per_epoch:
            n = self.steps_per_epoch
            why = (f"criterion {rescoring[0]!r} scores fresh batches before every pruning step" if rescoring
                   else "the pruning epoch prunes at most once per batch")
            most = max(1, n // len(self._criteria))
            raise InvalidParameterError(
                f"steps={self.steps}{levels} but an epoch has {n} batch(es) (steps_per_epoch={n}): {why}, so the "
                f"pruning epoch can hold at most {n} steps — pass steps={most} or fewer, or use more batches per "
                f"epoch")

    @property
    def _rescores(self) -> bool:
        """Whether every pruning step of the level being pruned needs batches observed since the previous one
        (gradient criteria, criteria with passes of their own): then a step cannot follow another without a batch
        in between."""
        return _rescores(self._criterion_now)

    def _build_model_parts(self, ignored_layers: Iterable[nn.Module] | None,
                           num_heads: Mapping[nn.Module, int] | None = None, head_ratio: float | None = None) -> None:
        """Trace the model once: channel groups (heads ranked apart when ``head_ratio`` is given), the engine, the
        dense statistics, the criterion's hooks and the signal recorder (which takes θ_0 now). At granularity
        "weights" the first level is the prunable weights, traced by nothing."""
        self.groups: ChannelGroups | None = None
        self.weights: MaskedWeights | None = None
        if self.granularity == "weights":
            self.weights = MaskedWeights(self.model, ignored_layers=ignored_layers)
            first: ChannelLevel | WeightLevel = WeightLevel(self.weights, min_weights=self.min_weights)
        else:
            self.groups = ChannelGroups(self.model, self.example_inputs, ignored_layers=ignored_layers,
                                        num_heads=num_heads)
            if len(self.groups) == 0:
                raise InvalidParameterError("the model has no prunable channel groups (only output or ignored layers "
                                            "were found): channels are removed from hidden convolution / linear "
                                            "layers not in ignored_layers=")
            if head_ratio is not None:
                self.groups.part_ratios = _head_scale(self.groups, head_ratio, self.ratio, self.target)
            # before the criterion's hooks: the prunability check copies the model; a model with weight masks is
            # past its channel steps ("both", resumed): nothing is left to check
            if self.checks and not masked_counts(self.model):   # "auto" rounds to 1: it skips what cannot reach
                check_reachable(self.groups, self.ratio, self.spec)
                check_prunable(self.groups, min_channels=self.min_channels, round_to=self.spec.round_to)
            first = self.channels = ChannelLevel(self.groups, self._spec, auto=self._auto, step_time=self._step_time,
                                                 clip=not self.checks)
            self.engine = first.engine
        #: the prunable weights of the dense model, which ``weight_ratio`` refers to (granularity "both")
        self.weight_baseline: int | None = (MaskedWeights(self.model, ignored_layers=ignored_layers).baseline
                                            if self.granularity == "both" else None)
        self.levels: list[ChannelLevel | WeightLevel] = [first]
        self.policy.validate(first.units, self.criterion)
        self.dense_stats: ModelStats = measure(self.model, self.example_inputs)
        self.criterion.attach(first.units)
        self.signals = SignalRecorder()
        self.signals.start(first.units, self.spec, needs=None if self.record_signals else self.policy.needs_signals,
                           level=first if isinstance(first, WeightLevel) else None)
        # dense epochs accumulate the criterion when the policy reads scores, or to record the score-based
        # signals — unless that costs passes of the criterion's own (needs_batches)
        self._accumulate = self.policy.needs_scores or (self.record_signals and not self.criterion.needs_batches)

    def _reset_progress(self, schedule: str | None = None) -> None:
        """Epoch 0, dense, nothing recorded; the cumulative fraction of each pruning step of each level under the
        step schedule (PaT's exponential one unless the policy names another — ``before`` prunes before training
        with CroPit / SNAP-it's halving schedule — or ``schedule=`` does)."""
        self.epoch = 0
        self.batch = 0
        #: optimizer steps (calls of :meth:`step`) since training started: the signal policies' clock
        self.steps_taken = 0
        self.phase = "dense"
        self.prune_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        #: batches left out of the scores for NaN / infinite loss or scores (see :meth:`step`)
        self.skipped_batches = 0
        self.schedule_name = schedule or self.policy.schedule
        self._set_steps(self.steps)
        self._schedule: list[int] = []
        self._next_step = 0
        self._batches_seen_last_epoch: int | None = None
        self._last_scores: dict[str, torch.Tensor] | None = None

    # -- the two calls of the training loop -----------------------------------------------------------------
    def step(self, inputs: Any = None, targets: Any = None, *, loss: Any = None) -> bool:
        """Call once per training batch, after ``optimizer.step()`` (gradients still in place).

        Criteria that score batches with passes of their own (``criterion.needs_batches``) need the batch:
        ``pruner.step(inputs, targets)``. ``loss`` (optional) is the batch's training loss: a batch whose loss or
        scores are NaN or infinite is left out of the scores, and a warning names it when the scores are next
        used (no host sync per batch). Returns True when this call removed channels or masked weights (rebuild a
        DDP wrapper or a compiled model then).
        """
        if inputs is not None and self._batch_size is None:
            self._batch_size = batch_size_of(inputs)
        events = len(self.events)
        crit = self._criterion_now
        batch = None
        if crit.needs_batches:
            if inputs is None:
                raise InvalidParameterError(f"criterion {crit.name!r} needs the batch: call "
                                            f"pruner.step(inputs, targets)")
            batch = Batch(inputs, targets, self.loss_fn)  # type: ignore[arg-type]
        label = (self.epoch, self.batch)
        self.batch += 1
        self.steps_taken += 1
        if self.phase == "dense":
            if self._accumulate:
                crit.observe(self.levels[0].units, batch, loss=loss, label=label)
        elif self.phase == "pruning":
            crit.observe(self.levels[-1].units, batch, loss=loss, label=label)
            while self._next_step < self._total_steps and self.batch >= self._schedule[self._next_step]:
                self._prune_step()
            if self._next_step == self._total_steps:
                self._finish_pruning()
        return len(self.events) != events

    def epoch_end(self) -> None:
        """Call once at the end of every epoch."""
        entry: dict[str, Any] = {"epoch": self.epoch,
                                 "phase": "pruning" if self.prune_epoch == self.epoch else self.phase}
        if self.phase == "dense":
            scores = self._epoch_scores()
            if scores is not None and self.target == "latency" and self.signals.active and self.policy.prunes:
                self.signals.predictor = self.channels.ensure_predictor(scores, self._batch_size)  # type: ignore[union-attr]
            signals = self.signals.epoch_end(scores)
            report = EpochReport(self.epoch, self.model, self.levels[0].units, scores, self.ratio,
                                 structure=signals.structure, weight_change=signals.weight_change,
                                 bn_mask=signals.bn_mask, criterion_family=self.criterion.family,
                                 signals=signals.record, steps=self.steps_taken,
                                 initial_norm=signals.initial_norm)
            decision = self.policy.decide(report)
            self._report_skipped()
            self.criterion.reset()
            entry["trigger"] = decision.trigger
            entry["trigger_reason"] = decision.reason
            entry["policy_signal"] = _json_float(self.policy.signal())
            entry.update(signals.record)
            if decision.trigger:
                if decision.reason == "cap":
                    log.warning("%s", decision.message)
                else:
                    log.info("policy %r triggers: epoch %d will prune", self.policy, self.epoch + 1)
        else:
            if self.phase == "pruning":
                if self._next_step < self._total_steps:  # fewer batches than scheduled: finish at the boundary
                    self._finish_short_epoch()
                self._finish_pruning()
            entry.update({"trigger": False, "trigger_reason": None, "policy_signal": None})
            entry.update(self.signals.empty())
        for level in self.levels:
            entry.update(level.totals())
        self.history.append(entry)
        self._batches_seen_last_epoch = self.batch
        self.batch = 0
        self.epoch += 1
        if entry.get("trigger"):
            self._begin_pruning()

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the model has been pruned to its target."""
        return self.phase == "sparse"

    @property
    def round_to_record(self) -> dict[str, Any] | int | str:
        """What kept widths are rounded to, for reports: the integer, what ``"auto"`` measured and chose, or
        ``"auto (not measured yet)"`` before the first pruning step."""
        if self.round_to_choice is not None:
            return self.round_to_choice.to_dict()
        return self.round_to if isinstance(self.round_to, int) else "auto (not measured yet)"

    def retarget(self, ratio: float, *, clip: bool = False) -> float:
        """Change ``ratio`` before the first channel is removed — e.g. to fit a time budget once the policy has
        said when pruning starts (``earlyprune train --time-budget``) — and return the ratio set.

        A count target (channels, FLOPs, parameters) that ``min_channels`` / ``round_to`` / ``max_group_ratio``
        cannot reach raises :class:`~earlyprune.core.errors.InfeasibleTargetError` here, as at construction — not in
        the pruning epoch — or, with ``clip=True``, is lowered to the most they allow. The time target is
        predicted, not counted: once its predictor is measured, ``clip=True`` lowers it to the most the predictor
        says the limits allow (:func:`~earlyprune.planning.timebudget.reachable_time`); otherwise the selection prunes as
        far as they allow and warns.
        """
        if self.events or self.phase == "sparse":
            raise UsageError("retarget() must come before the first pruning step: channels were already removed")
        if self.groups is not None and self.groups.part_ratios:
            raise InvalidParameterError("retarget() cannot rescale a separate head_ratio; build the pruner with the "
                                        "ratio instead")
        ratio = float(RATIO.check("ratio", ratio))
        if self.groups is not None and self.granularity != "weights":
            ratio = fit_ratio(self.groups, self.spec, ratio, self.predictor, clip=clip, check=self.checks)
        self.ratio = ratio
        self._set_steps(self.steps)
        return ratio

    def reachable_ratio(self) -> float | None:
        """The largest ``ratio`` that ``min_channels`` / ``round_to`` / ``max_group_ratio`` allow before the first
        removal: counted for a count target (:func:`~earlyprune.planning.selection.reachable`), predicted for the time
        target once its predictor is measured (:func:`~earlyprune.planning.timebudget.reachable_time`); None when unknown
        (time target before its predictor, weight masks)."""
        if self.groups is None or self.granularity == "weights":
            return None
        return reachable_ratio(self.groups, self.spec, self.predictor)

    def structure(self) -> list[int]:
        """Kept channels per group (the structure vector), in group order — or, at ``granularity="weights"``, kept
        weights per masked tensor."""
        return self.levels[0].structure()

    def history_json(self, path: str | Path | None = None, *, indent: int | None = 1) -> str:
        """``history`` (one record per epoch: phase, trigger, signals, structure, size) and ``events`` as JSON,
        written to ``path`` if given; returns the text."""
        text = json.dumps({"ratio": self.ratio, "target": self.target, "criterion": self.criterion.name,
                           "policy": repr(self.policy), "prune_epoch": self.prune_epoch,
                           "round_to": self.round_to_record, "granularity": self.granularity,
                           "weight_ratio": self.weight_ratio,
                           "weight_criterion": self._criteria[-1].name if self.granularity == "both" else None,
                           "group_names": self.groups.names if self.groups is not None else None,
                           "weight_names": self.weights.names if self.weights is not None else None,
                           "history": self.history, "events": self.events},
                          indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def stats(self) -> ModelStats:
        """Parameters, MACs and sparsities of the model now, relative to the dense model."""
        return measure(self.model, self.example_inputs, baseline=self.dense_stats)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule identically (the model's shape is saved separately,
        with :func:`earlyprune.save`)."""
        return {"epoch": self.epoch, "batch": self.batch, "phase": self.phase, "prune_epoch": self.prune_epoch,
                "steps_taken": self.steps_taken,
                "steps": self.steps, "next_step": self._next_step, "schedule": list(self._schedule),
                "last_scores": self._last_scores,
                "batches_seen_last_epoch": self._batches_seen_last_epoch,
                "history": [dict(h) for h in self.history], "events": [dict(e) for e in self.events],
                "policy": self.policy.state_dict(), "criterion": self.criterion.state_dict(),
                "criteria": [c.state_dict() for c in self._criteria], "levels": len(self.levels),
                "weight_baseline": self.weight_baseline,
                "signals": self.signals.state_dict(), "dense_stats": self.dense_stats.to_dict(),
                "round_to_choice": self.round_to_choice.to_dict() if self.round_to_choice is not None else None,
                "original_widths": dict(self.groups.original_widths) if self.groups is not None else None,
                "ratio": self.ratio,
                "predictor": self.predictor.to_dict() if self.predictor is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("phase") not in PHASES:
            raise StructureMismatchError("not an EarlyPruner state dict (missing or unknown 'phase'): pass what "
                                         "pruner.state_dict() returned")
        self.epoch, self.batch, self.phase = int(state["epoch"]), int(state["batch"]), state["phase"]
        # a state from before the step count: every past epoch as long as the last one
        self.steps_taken = int(state.get("steps_taken", self.epoch * (state.get("batches_seen_last_epoch") or 0)
                                         + self.batch))
        self.prune_epoch = state["prune_epoch"]
        if state.get("steps", self.steps) != self.steps:  # fitted into a short pruning epoch before the checkpoint
            self._set_steps(int(state["steps"]))
        if state.get("weight_baseline") is not None:
            self.weight_baseline = int(state["weight_baseline"])
        while len(self.levels) < int(state.get("levels", 1)):  # "both", past its channel steps
            self._next_level()
        self._next_step, self._schedule = int(state["next_step"]), list(state["schedule"])
        self._last_scores = state.get("last_scores")
        self._batches_seen_last_epoch = state["batches_seen_last_epoch"]
        self.history, self.events = list(state["history"]), list(state["events"])
        self.policy.load_state_dict(state["policy"])
        for crit, crit_state in zip(self._criteria, state.get("criteria") or [state["criterion"]]):
            crit.load_state_dict(crit_state)
        if "signals" in state:
            self.signals.load_state_dict(state["signals"])
        else:  # a state from before signals were recorded: θ_0 and the previous epochs are unknown
            self.signals.stop()
        if state.get("dense_stats") is not None:  # after a resume the model given may already be pruned
            self.dense_stats = ModelStats(**state["dense_stats"])
        if state.get("round_to_choice") is not None:  # "auto" measured before the checkpoint: keep its choice
            self.round_to_choice = RoundToChoice.from_dict(state["round_to_choice"])
            self.round_to = self.round_to_choice.value
        if state.get("ratio") is not None and float(state["ratio"]) != self.ratio:   # retargeted before the checkpoint
            self.ratio = float(state["ratio"])
            self._set_steps(self.steps)
        if state.get("original_widths") and self.groups is not None:   # max_group_ratio counts from the first widths
            self.groups.original_widths = {k: int(v) for k, v in state["original_widths"].items()}
            self.groups.baseline_widths = [self.groups.original_widths.get(n, w)
                                           for n, w in zip(self.groups.names, self.groups.widths())]
        if state.get("predictor") is not None:
            self.predictor = StepTimePredictor.from_dict(state["predictor"])
        if self.phase == "sparse":
            self._criterion_now.detach()

    # -- internals ------------------------------------------------------------------------------------------
    @property
    def _criterion_now(self) -> Criterion:
        """The criterion of the level being pruned (the first level's before and during its steps)."""
        return self._criteria[len(self.levels) - 1] if hasattr(self, "levels") else self.criterion

    @property
    def _total_steps(self) -> int:
        return self.steps * len(self._criteria)

    def _next_level(self) -> WeightLevel:
        """``"both"``: after the channel steps, the weights of what remains (their count relative to the dense
        model's) become the units; the weight criterion takes over."""
        self._criterion_now.detach()
        self.weights = MaskedWeights(self.model, ignored_layers=self.ignored_layers, baseline=self.weight_baseline)
        level = WeightLevel(self.weights, min_weights=self.min_weights)
        self.levels.append(level)
        self._criterion_now.attach(level.units)
        self._criterion_now.reset()
        self._last_scores = None
        return level

    def _finish_pruning(self) -> None:
        self.phase = "sparse"
        self._criterion_now.detach()

    def _epoch_scores(self) -> dict[str, torch.Tensor] | None:
        """The dense epoch's averaged criterion scores, if the policy needs them or they were accumulated."""
        if self.policy.needs_scores:
            return self._scores()
        if not self._accumulate or (self.criterion.observations == 0
                                    and (self.criterion.uses_gradients or self.criterion.needs_batches)):
            return None
        return self._scores()

    def _scores(self) -> dict[str, torch.Tensor]:
        """The current criterion's scores, averaged over the ranks under torch.distributed (identical
        decisions)."""
        self._report_skipped()
        return average_scores(self._criterion_now.scores(self.levels[-1].units))

    def _report_skipped(self) -> None:
        """Say which batches the criterion left out for NaN / infinite values since the scores were last read."""
        crit = self._criterion_now
        skipped = crit.skipped()
        if not skipped:
            return
        self.skipped_batches += len(skipped)
        shown = ", ".join(f"{b}" for _, b in skipped[:8]) + (" …" if len(skipped) > 8 else "")
        log.warning("%d batch(es) left out of the %s scores because their loss or scores were NaN or infinite "
                    "(epoch %d, batch %s): the learning rate is the usual cause (too high, the loss diverges), or "
                    "fp16/bf16 overflow; the scores average the other batches", len(skipped), crit.name,
                    skipped[0][0], shown)

    def _begin_pruning(self) -> None:
        n_batches = self.policy.pruning_batches or self.steps_per_epoch or self._batches_seen_last_epoch
        if not n_batches:
            raise UsageError("cannot schedule pruning steps: the number of batches per epoch is unknown; "
                             "pass steps_per_epoch=len(train_loader)")
        levels = len(self._criteria)
        per_level = " per level" if levels > 1 else ""
        if any(_rescores(c) for c in self._criteria) and self._total_steps > n_batches:
            # learned only now (no steps_per_epoch): fit the steps into the epoch rather than fail after the dense
            # phase — each step needs a batch of its own
            fitted = max(1, n_batches // levels)
            log.warning("steps=%d%s but the pruning epoch has %d batch(es): criterion %r scores fresh batches before "
                        "every step, so epoch %d prunes in %d steps%s (pass steps_per_epoch= to be told at "
                        "construction)", self.steps, per_level, n_batches, self.criterion.name, self.epoch, fitted,
                        per_level)
            self._set_steps(fitted)
        elif n_batches < self._total_steps:
            log.warning("steps=%d%s pruning steps in an epoch of %d batches: several steps run in one batch (pass "
                        "steps ≤ %d, or steps_per_epoch= to be told at construction)", self.steps, per_level,
                        n_batches, max(1, n_batches // levels))
        self.phase = "pruning"
        self.prune_epoch = self.epoch
        self.signals.stop()  # the signals describe the dense phase: release θ_0 and the previous epochs
        total = self._total_steps
        self._schedule = [math.ceil((i + 1) * n_batches / total) for i in range(total)]
        self._next_step = 0
        self.criterion.reset()

    def _set_steps(self, steps: int) -> None:
        """``steps`` per level, and the cumulative fraction of each under the step schedule."""
        self.steps = steps
        ratios = [self.ratio] + ([self.weight_ratio] if self.granularity == "both" else [])
        self._amounts = [step_amounts(r, steps, self.schedule_name) for r in ratios]  # type: ignore[arg-type]

    def _finish_short_epoch(self) -> None:
        """The pruning epoch ended before its last scheduled steps (it had fewer batches than scheduled). Level by
        level: criteria that score from the weights take the remaining steps now; criteria that need fresh batches
        take one step to the level's final target — on the batches since the last step, or, when the last step
        came with the last batch, on that step's scores restricted to what it kept (with a warning)."""
        while self._next_step < self._total_steps:
            index = self._next_step // self.steps
            if not self._rescores:
                self._prune_step()
                continue
            self._next_step = (index + 1) * self.steps - 1
            crit, level = self._criterion_now, self.levels[index]
            if crit.observations == 0 and self._last_scores is None and isinstance(level, WeightLevel):
                log.warning("the pruning epoch ended before criterion %r saw a batch at weight level: its last step "
                            "ranks the weights by magnitude (pass steps_per_epoch= matching the epoch)", crit.name)
                self._prune_step(level.fallback_scores())
                continue
            if crit.observations > 0 or self._last_scores is None:
                self._prune_step()
                continue
            log.warning("the pruning epoch had fewer batches than scheduled and its last batch was used by a pruning "
                        "step: the final step reuses that step's %r scores (pass steps_per_epoch= matching the "
                        "epoch)", crit.name)
            self._prune_step(self._last_scores)

    def _prune_step(self, scores: dict[str, torch.Tensor] | None = None) -> None:
        index, k = divmod(self._next_step, self.steps)
        level = self.levels[index]
        with Stopwatch(device_of(self.model)) as clock:
            scores = self._scores() if scores is None else scores
            amount = self._amounts[index][k]
            removed = level.prune(scores, amount, self.optimizer, batch_size=self._batch_size)
            self._criterion_now.reset()
            self._last_scores = level.kept_scores(scores)
        self._next_step += 1
        event = {"epoch": self.epoch, "batch": self.batch, "step": self._next_step, "level": level.name,
                 "amount": amount, "removed": removed, "seconds": clock.seconds,
                 **{key: v for key, v in level.totals().items() if not isinstance(v, list)}}
        if isinstance(level, ChannelLevel):
            event["round_to"] = self.round_to
            if self.target == "latency":   # predicted step seconds of the structure left, and of the dense model
                event["predicted_step_seconds"] = level.plan.seconds  # type: ignore[union-attr]
                event["predicted_dense_step_seconds"] = level.predictor.predict()  # type: ignore[union-attr]
        self.events.append(event)
        left = (f"{event['channels']:.0f} channels" if isinstance(level, ChannelLevel) else
                f"{event['weights']:.0f} weights ({event['weight_sparsity']:.1%} sparse)")
        log.info("pruning step %d/%d (epoch %d, batch %d): %d %s %s, %s left", self._next_step, self._total_steps,
                 self.epoch, self.batch, removed, level.name,
                 "removed" if isinstance(level, ChannelLevel) else "masked", left)
        if k == self.steps - 1 and index + 1 < len(self._criteria):
            self._next_level()

    def __repr__(self) -> str:
        return (f"EarlyPruner(ratio={self.ratio}, granularity={self.granularity!r}, target={self.target!r}, "
                f"criterion={self.criterion!r}, "
                f"policy={self.policy!r}, phase={self.phase!r}, epoch={self.epoch})")


def _rescores(criterion: Criterion) -> bool:
    """Whether ``criterion`` needs batches observed since the previous pruning step."""
    return bool(criterion.needs_batches or criterion.uses_gradients)


def _json_float(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _head_scale(groups: ChannelGroups, head_ratio: float, ratio: float, target: str) -> dict[str, float]:
    """``part_ratios`` giving the head groups ``head_ratio`` when the others get ``ratio``."""
    if target != "channels":
        raise InvalidParameterError(f"head_ratio counts heads: use target='channels' with it, not {target!r}")
    if not any(g.part == "heads" for g in groups):
        raise InvalidParameterError("head_ratio= needs attention-head groups: declare the query/key/value "
                                    "projections with num_heads={layer: heads}")
    return {"heads": float(head_ratio) / float(ratio)}
