"""EarlyPruner: the conductor a user's own training loop calls (``step()`` per batch, ``epoch_end()`` per epoch).

It owns no method: the criterion scores, the selection ranks, the engine removes, the policy decides when.
Its only job is PaT Algorithm 2's bookkeeping — dense epochs until the policy triggers, one pruning epoch in
which Algorithm 1 removes channels in ``steps`` exponentially scheduled steps (scores averaged over the batches
between steps), then sparse training to the end.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from numbers import Integral, Real
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

from .batch import Batch
from .criteria import Criterion
from .criteria.modifiers import COMPUTE_AWARE, LATENCY_AWARE, with_modifiers
from .distributed import average_scores, broadcast_object, check_unwrapped
from .engine import PruningEngine
from .groups import ChannelGroups
from .metrics import ModelStats, measure
from .policies import POLICIES, EpochReport, Policy
from .rounding import ROUND_TO_RULE, AutoRoundTo, RoundToChoice, batch_size_of, check_round_to
from .selection import select, step_amounts
from .signals.recorder import SignalRecorder
from .timing import Stopwatch, device_of
from .validation import (BOOLEAN, MIN_CHANNELS, MODEL, RATIO, STEPS, TARGET, Callable_, Each, InstanceOf, Interval,
                         Rule, check_args, rule)

log = logging.getLogger("earlyprune")

_REQUIRED = object()
PHASES = ("dense", "pruning", "sparse")


class EarlyPruner:
    """Prune whole channels early in training, inside your own loop.

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
        ratio: fraction of the original ``target`` quantity to remove, in (0, 1) (PaT's α).
        criterion: a :data:`~earlyprune.criteria.CRITERIA` name or a :class:`~earlyprune.criteria.Criterion`.
        policy: a :data:`~earlyprune.policies.POLICIES` spec (``"epoch:3"``, ``"never"``…) or a Policy.
        optimizer: the optimizer training ``model`` (or a list of them); param groups and state follow every
            removal. Required:
            pass ``None`` explicitly only if you rebuild your optimizer yourself after each pruning step.
        target: what ``ratio`` counts — ``"channels"`` (PaT), ``"flops"`` (MACs) or ``"params"``.
        steps: pruning steps inside the pruning epoch (PaT Algorithm 1's S), exponentially scheduled.
        steps_per_epoch: batches per epoch; learned from the first epoch when None (then required only if the
            policy prunes during epoch 0).
        min_channels: channels every group keeps at least.
        round_to: kept widths are rounded to multiples of this; ``"auto"`` (or an
            :class:`~earlyprune.rounding.AutoRoundTo`) measures which multiple makes the pruned layers fastest on
            this device at the first pruning step (see :mod:`earlyprune.rounding`; the choice is in
            ``round_to_choice``). Signals recorded before that use 1.
        ignored_layers: modules whose output channels must be kept (the output layer is detected by itself).
        num_heads: ``{layer: heads}`` for the query / key / value projections of attention blocks: their groups
            lose whole heads (see :class:`~earlyprune.groups.ChannelGroups`).
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
    """

    #: the arguments' rules (:mod:`earlyprune.validation`); ``criterion`` / ``policy`` are checked by their registries
    RULES: ClassVar[dict[str, Rule]] = {
        "model": MODEL,
        "ratio": RATIO,
        "optimizer": rule(InstanceOf(torch.optim.Optimizer, "a torch.optim.Optimizer"),
                          Each(InstanceOf(torch.optim.Optimizer, "a torch.optim.Optimizer")), None),
        "num_heads": rule(InstanceOf(Mapping, "a mapping {layer: number of heads}"), None),
        "head_ratio": rule(Interval(Real, 0, 1, closed="left"), None, hint="the fraction of attention heads to remove"),
        "target": TARGET,
        "steps": STEPS,
        "steps_per_epoch": rule(Interval(Integral, 0, None, closed="neither"), None, hint="batches per epoch"),
        "min_channels": MIN_CHANNELS,
        "round_to": ROUND_TO_RULE,
        "loss_fn": rule(Callable_("callable as loss_fn(outputs, targets)"), None),
        "record_signals": BOOLEAN,
        "compute_aware": COMPUTE_AWARE,
        "latency_aware": LATENCY_AWARE,
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
                 compute_aware: float | None = None, latency_aware: bool = False) -> None:
        self._check_arguments(model=model, ratio=ratio, optimizer=optimizer, target=target, steps=steps,
                              steps_per_epoch=steps_per_epoch, min_channels=min_channels, round_to=round_to,
                              loss_fn=loss_fn, record_signals=record_signals, compute_aware=compute_aware,
                              latency_aware=latency_aware, num_heads=num_heads, head_ratio=head_ratio)
        self.model = model
        self.example_inputs = example_inputs
        self.ratio = float(ratio)
        self.target = target
        self.steps = steps
        self.steps_per_epoch = steps_per_epoch
        self.min_channels = min_channels
        #: the multiple kept widths are rounded to — an AutoRoundTo until "auto" has measured
        self.round_to: int | AutoRoundTo = check_round_to(round_to)
        self.round_to_choice: RoundToChoice | None = None
        self._batch_size: int | None = None
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.record_signals = record_signals
        self._build_method(criterion, policy, compute_aware, latency_aware)
        self._check_method()
        self._build_model_parts(ignored_layers, num_heads, head_ratio)
        self._reset_progress()
        if self.policy.start():
            self._begin_pruning()

    # -- construction, step by step -------------------------------------------------------------------------
    def _check_arguments(self, **arguments: Any) -> None:
        """Every argument against :attr:`RULES`, before anything is built."""
        if arguments["optimizer"] is _REQUIRED:
            raise TypeError("EarlyPruner needs optimizer=: its param groups and momentum/Adam state must follow the "
                            "pruned parameters (pass optimizer=None only if you rebuild it after each pruning step)")
        check_args(self.RULES, arguments)
        check_unwrapped(arguments["model"])

    def _build_method(self, criterion: str | Criterion, policy: str | Policy, compute_aware: float | None,
                      latency_aware: bool) -> None:
        """The criterion (wrapped by its modifiers: everything downstream sees one Criterion) and the policy."""
        self.criterion: Criterion = with_modifiers(criterion, compute_aware=compute_aware,
                                                   latency_aware=latency_aware)
        self.policy: Policy = POLICIES.build(policy)

    def _check_method(self) -> None:
        """What the criterion and the policy need from the other arguments."""
        crit, policy = self.criterion, self.policy
        if crit.needs_batches and self.loss_fn is None:
            raise ValueError(f"criterion {crit.name!r} scores batches with passes of its own: pass "
                             f"loss_fn= (e.g. torch.nn.functional.cross_entropy) and call pruner.step(inputs, targets)")
        if policy.start() and self.steps_per_epoch is None and policy.pruning_batches is None:
            raise ValueError(f"policy {policy!r} prunes during epoch 0, before the number of batches per epoch "
                             f"is known: pass steps_per_epoch=len(train_loader)")
        if (policy.pruning_batches is not None and self.steps > policy.pruning_batches
                and (crit.needs_batches or crit.uses_gradients)):
            raise ValueError(f"policy {policy!r} prunes within {policy.pruning_batches} batch(es) but steps="
                             f"{self.steps}: criterion {crit.name!r} rescores on fresh batches before every step, "
                             f"so steps must be ≤ {policy.pruning_batches}")

    def _build_model_parts(self, ignored_layers: Iterable[nn.Module] | None,
                           num_heads: Mapping[nn.Module, int] | None = None, head_ratio: float | None = None) -> None:
        """Trace the model once: channel groups (heads ranked apart when ``head_ratio`` is given), the engine, the
        dense statistics, the criterion's hooks and the signal recorder (which takes θ_0 now)."""
        self.groups = ChannelGroups(self.model, self.example_inputs, ignored_layers=ignored_layers,
                                    num_heads=num_heads)
        if len(self.groups) == 0:
            raise ValueError("the model has no prunable channel groups (only output or ignored layers were found)")
        if head_ratio is not None:
            self.groups.part_ratios = _head_scale(self.groups, head_ratio, self.ratio, self.target)
        self.policy.validate(self.groups, self.criterion)
        self.engine = PruningEngine(self.groups)
        self.dense_stats: ModelStats = measure(self.model, self.example_inputs)
        self.criterion.attach(self.groups)
        self.signals = SignalRecorder()
        self.signals.start(self.groups, ratio=self.ratio, target=self.target, min_channels=self.min_channels,
                           round_to=self.round_to if isinstance(self.round_to, int) else 1,
                           needs=None if self.record_signals else self.policy.needs_signals)
        # dense epochs accumulate the criterion when the policy reads scores, or to record the score-based
        # signals — unless that costs passes of the criterion's own (needs_batches)
        self._accumulate = self.policy.needs_scores or (self.record_signals and not self.criterion.needs_batches)

    def _reset_progress(self) -> None:
        """Epoch 0, dense, nothing recorded; the cumulative fraction of each pruning step under the policy's
        step schedule (PaT's exponential one unless the policy names another: ``before`` prunes before training
        with CroPit / SNAP-it's halving schedule)."""
        self.epoch = 0
        self.batch = 0
        self.phase = "dense"
        self.prune_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._amounts = step_amounts(self.ratio, self.steps, self.policy.schedule)
        self._schedule: list[int] = []
        self._next_step = 0
        self._batches_seen_last_epoch: int | None = None

    # -- the two calls of the training loop -----------------------------------------------------------------
    def step(self, inputs: Any = None, targets: Any = None) -> bool:
        """Call once per training batch, after ``optimizer.step()`` (gradients still in place).

        Criteria that score batches with passes of their own (``criterion.needs_batches``) need the batch:
        ``pruner.step(inputs, targets)``. Returns True when this call removed channels (rebuild a DDP wrapper
        or a compiled model then).
        """
        if inputs is not None and self._batch_size is None:
            self._batch_size = batch_size_of(inputs)
        events = len(self.events)
        batch = None
        if self.criterion.needs_batches:
            if inputs is None:
                raise ValueError(f"criterion {self.criterion.name!r} needs the batch: call pruner.step(inputs, "
                                 f"targets)")
            batch = Batch(inputs, targets, self.loss_fn)  # type: ignore[arg-type]
        self.batch += 1
        if self.phase == "dense":
            if self._accumulate:
                self.criterion.observe(self.groups, batch)
        elif self.phase == "pruning":
            self.criterion.observe(self.groups, batch)
            while self._next_step < self.steps and self.batch >= self._schedule[self._next_step]:
                self._prune_step()
            if self._next_step == self.steps:
                self._finish_pruning()
        return len(self.events) != events

    def epoch_end(self) -> None:
        """Call once at the end of every epoch."""
        entry: dict[str, Any] = {"epoch": self.epoch,
                                 "phase": "pruning" if self.prune_epoch == self.epoch else self.phase}
        if self.phase == "dense":
            scores = self._epoch_scores()
            signals = self.signals.epoch_end(scores)
            report = EpochReport(self.epoch, self.model, self.groups, scores, self.ratio,
                                 structure=signals.structure, weight_change=signals.weight_change,
                                 bn_mask=signals.bn_mask, criterion_family=self.criterion.family,
                                 signals=signals.record)
            decision = self.policy.decide(report)
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
                while self._next_step < self.steps:  # fewer batches than scheduled: finish at the epoch boundary
                    self._prune_step()
                self._finish_pruning()
            entry.update({"trigger": False, "trigger_reason": None, "policy_signal": None})
            entry.update(self.signals.empty())
        entry.update(self.groups.totals())
        entry["structure"] = self.groups.widths()
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

    def structure(self) -> list[int]:
        """Kept channels per group (the structure vector), in group order."""
        return self.groups.widths()

    def history_json(self, path: str | Path | None = None, *, indent: int | None = 1) -> str:
        """``history`` (one record per epoch: phase, trigger, signals, structure, size) and ``events`` as JSON,
        written to ``path`` if given; returns the text."""
        text = json.dumps({"ratio": self.ratio, "target": self.target, "criterion": self.criterion.name,
                           "policy": repr(self.policy), "prune_epoch": self.prune_epoch,
                           "round_to": self.round_to_record,
                           "group_names": self.groups.names, "history": self.history, "events": self.events},
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
                "next_step": self._next_step, "schedule": list(self._schedule),
                "batches_seen_last_epoch": self._batches_seen_last_epoch,
                "history": [dict(h) for h in self.history], "events": [dict(e) for e in self.events],
                "policy": self.policy.state_dict(), "criterion": self.criterion.state_dict(),
                "signals": self.signals.state_dict(), "dense_stats": self.dense_stats.to_dict(),
                "round_to_choice": self.round_to_choice.to_dict() if self.round_to_choice is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("phase") not in PHASES:
            raise ValueError("not an EarlyPruner state dict (missing or unknown 'phase')")
        self.epoch, self.batch, self.phase = int(state["epoch"]), int(state["batch"]), state["phase"]
        self.prune_epoch = state["prune_epoch"]
        self._next_step, self._schedule = int(state["next_step"]), list(state["schedule"])
        self._batches_seen_last_epoch = state["batches_seen_last_epoch"]
        self.history, self.events = list(state["history"]), list(state["events"])
        self.policy.load_state_dict(state["policy"])
        self.criterion.load_state_dict(state["criterion"])
        if "signals" in state:
            self.signals.load_state_dict(state["signals"])
        else:  # a state from before signals were recorded: θ_0 and the previous epochs are unknown
            self.signals.stop()
        if state.get("dense_stats") is not None:  # after a resume the model given may already be pruned
            self.dense_stats = ModelStats(**state["dense_stats"])
        if state.get("round_to_choice") is not None:  # "auto" measured before the checkpoint: keep its choice
            self.round_to_choice = RoundToChoice.from_dict(state["round_to_choice"])
            self.round_to = self.round_to_choice.value
        if self.phase == "sparse":
            self.criterion.detach()

    # -- internals ------------------------------------------------------------------------------------------
    def _finish_pruning(self) -> None:
        self.phase = "sparse"
        self.criterion.detach()

    def _epoch_scores(self) -> dict[str, torch.Tensor] | None:
        """The dense epoch's averaged criterion scores, if the policy needs them or they were accumulated."""
        if self.policy.needs_scores:
            return self._scores()
        if not self._accumulate or (self.criterion.observations == 0
                                    and (self.criterion.uses_gradients or self.criterion.needs_batches)):
            return None
        return self._scores()

    def _scores(self) -> dict[str, torch.Tensor]:
        """The criterion's scores, averaged over the ranks under torch.distributed (identical decisions)."""
        return average_scores(self.criterion.scores(self.groups))

    def _resolve_round_to(self, scores: dict[str, torch.Tensor]) -> int:
        if isinstance(self.round_to, AutoRoundTo):
            choice = self.round_to.choose(self.groups, scores, self.ratio, target=self.target,
                                          min_channels=self.min_channels, batch_size=self._batch_size)
            self.round_to_choice = broadcast_object(choice)  # timings differ per rank: rank 0 decides
            self.round_to = self.round_to_choice.value
            log.info("round_to='auto': %d (predicted layer seconds per candidate: %s)", self.round_to,
                     ", ".join(f"{r}: {t * 1e3:.2f} ms" for r, t in self.round_to_choice.seconds.items()))
        return self.round_to

    def _begin_pruning(self) -> None:
        n_batches = self.policy.pruning_batches or self.steps_per_epoch or self._batches_seen_last_epoch
        if not n_batches:
            raise RuntimeError("cannot schedule pruning steps: the number of batches per epoch is unknown; "
                               "pass steps_per_epoch=len(train_loader)")
        self.phase = "pruning"
        self.prune_epoch = self.epoch
        self.signals.stop()  # the signals describe the dense phase: release θ_0 and the previous epochs
        self._schedule = [math.ceil((i + 1) * n_batches / self.steps) for i in range(self.steps)]
        self._next_step = 0
        self.criterion.reset()

    def _prune_step(self) -> None:
        with Stopwatch(device_of(self.model)) as clock:
            scores = self._scores()
            amount = self._amounts[self._next_step]
            plan = select(self.groups, scores, amount, target=self.target, min_channels=self.min_channels,
                          round_to=self._resolve_round_to(scores))
            removed = self.engine.apply(plan, self.optimizer)
            self.criterion.reset()
        self._next_step += 1
        event = {"epoch": self.epoch, "batch": self.batch, "step": self._next_step, "amount": amount,
                 "removed": sum(len(v) for v in removed.values()), "seconds": clock.seconds,
                 "round_to": self.round_to, **self.groups.totals()}
        self.events.append(event)
        log.info("pruning step %d/%d (epoch %d, batch %d): %d channels removed, %.0f left",
                 self._next_step, self.steps, self.epoch, self.batch, event["removed"], event["channels"])

    def __repr__(self) -> str:
        return (f"EarlyPruner(ratio={self.ratio}, target={self.target!r}, criterion={self.criterion!r}, "
                f"policy={self.policy!r}, phase={self.phase!r}, epoch={self.epoch})")


def _json_float(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _head_scale(groups: ChannelGroups, head_ratio: float, ratio: float, target: str) -> dict[str, float]:
    """``part_ratios`` giving the head groups ``head_ratio`` when the others get ``ratio``."""
    if target != "channels":
        raise ValueError(f"head_ratio counts heads: use target='channels' with it, not {target!r}")
    if not any(g.part == "heads" for g in groups):
        raise ValueError("head_ratio= needs attention-head groups: declare the query/key/value projections with "
                         "num_heads={layer: heads}")
    return {"heads": float(head_ratio) / float(ratio)}
