"""The loop, the phase that trains: epochs (:func:`run_epochs`), each a ``metrics.jsonl`` row (:func:`_epoch`)
made of the training epoch with the pruner's steps (:func:`train_epoch`), evaluation, the model's size and, after
the pruning epoch, what pruning gained.

Per batch: forward (under autocast), loss, backward (through the gradient scaler), optimizer step, LR-schedule
step, ``pruner.step(inputs, targets)``; per epoch: ``pruner.epoch_end()``, evaluation, the row, a checkpoint.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import NonFiniteError
from ..core.timing import Stopwatch
from ..graph.metrics import ModelStats, measure
from ..surgery.batchnorm import DEFAULT_BATCHES, recalibrate_batchnorm
from . import faults, restore, rundir, speedup
from .budget import fit_budget
from .config import TrainConfig, ratio_text
from .data import BatchLoader
from .environment import load_average
from .numerics import LossGuard
from .parallel import DataParallel
from .precision import Precision
from .progress import epoch_label
from .run import Run, removes_channels, set_memory_format, training_loss
from .summary import epoch_seconds


def run_epochs(run: Run) -> None:
    """The epochs of this invocation (all that remain, or ``--stop-after`` of them)."""
    cfg = run.cfg
    if run.start_epoch == 0:
        stats = run.dense_stats
        what = (f"ratio {ratio_text(cfg)}" if run.lottery is not None else
                f"criterion {cfg.criterion}, policy {cfg.policy}, ratio {ratio_text(cfg)}")
        run.progress.log(f"{run.data.describe()}; {cfg.model}: {stats.params:,} parameters, {stats.macs:,} MACs; "
                         f"{what}" + (f"; run directory {run.run_dir}" if run.run_dir else ""))
    end_epoch = run.epochs if cfg.stop_after is None else min(run.epochs, run.start_epoch + cfg.stop_after)
    if run.pruner.done and removes_channels(run) and run.start_epoch < run.epochs:   # resumed after pruning
        speedup.compile_pruned(run, run.start_epoch)
    for epoch in range(run.start_epoch, end_epoch):
        if run.lottery is not None and run.lottery.epoch_start(epoch):  # prune and rewind: new masks
            set_memory_format(run.model, run.optimizer, run.channels_last)
        row = _epoch(run, epoch)
        if run.lottery is not None:
            run.lottery.epoch_end(epoch)
            where = run.lottery.locate(epoch)
            row.update(lottery_round=where.round, round_epoch=where.epoch)
        _keep(run, epoch, row)
        run.progress.end_epoch(_epoch_line(row, run.epochs))


def _keep(run: Run, epoch: int, row: dict[str, Any]) -> None:
    """The epoch's row in the run, the loggers and ``metrics.jsonl``, then the checkpoint after it."""
    run.rows.append(row)
    for logger in run.loggers:
        for event in row["events"]:
            logger.log_event(event)
        logger.log_epoch(row)
    if run.writing:
        assert run.run_dir is not None
        rundir.append_metrics(run.run_dir, row)
        faults.point("epoch.metrics")
        restore.write_checkpoint(run, epoch + 1)


def _epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One epoch's ``metrics.jsonl`` row: training (with the pruner), evaluation, the model's size; after the
    pruning epoch, what it gained per step."""
    if run.pruner.phase == "pruning" and not run.pruner.events and removes_channels(run):
        run.dense_copy = copy.deepcopy(run.model)   # the dense model, to time the gain against
    try:
        row = train_epoch(run, epoch)
    except NonFiniteError as exc:  # stopped before this epoch's checkpoint: say what is kept
        kept = (f"the checkpoint after epoch {epoch - 1} in {run.run_dir} is kept" if run.writing and epoch > 0
                else "no checkpoint was written")
        raise NonFiniteError(f"{exc}. Stopped; {kept}") from None
    run.parallel.sync_buffers(run.model)  # every rank evaluates (and rank 0 saves) rank 0's BatchNorm statistics
    if run.pruner.phase == "pruning" and not run.pruner.events and run.budget is None:
        fit_budget(run, row)   # the policy has just triggered
    if run.budget is not None and not any(r.get("time_budget") for r in run.rows):
        row["time_budget"] = run.budget   # recorded with the epoch it was fitted in: a resumed run still reports it
    _evaluate_epoch(run, epoch, row)
    stats = measure(run.model, run.example, baseline=run.dense_stats)
    row.update(params=stats.params, macs=stats.macs, node_sparsity=stats.node_sparsity,
               weight_sparsity=stats.weight_sparsity)
    _time_the_gain(run, epoch, row, stats)
    return row


def _evaluate_epoch(run: Run, epoch: int, row: dict[str, Any]) -> None:
    """The row's test loss and accuracy (None when ``epoch`` is not evaluated), BatchNorm recalibrated first after
    the pruning epoch."""
    row["test_loss"] = row["test_accuracy"] = None
    row["eval_seconds"] = 0.0
    if run.pruner.done and run.pruner.prune_epoch == epoch and removes_channels(run):
        row["bn_recalibration"] = _recalibrate(run, evaluate_before=evaluates(epoch, run.cfg, row))
    if evaluates(epoch, run.cfg, row):  # the same answer on every rank: the trigger is agreed on
        with Stopwatch(run.device) as clock:
            row["test_loss"], row["test_accuracy"] = evaluate(run.model, run.test_loader, run.precision,
                                                              run.parallel)
        row["eval_seconds"] = clock.seconds


def _time_the_gain(run: Run, epoch: int, row: dict[str, Any], stats: ModelStats) -> None:
    """After the pruning epoch, the per-step gain and the --compile decision; their time (and, in epoch 0, the
    speed settings' measurement) in the row as the run's one-time overhead."""
    with Stopwatch(run.device) as overhead:   # measured by this run for its user: counted in its time
        if run.dense_copy is not None and run.pruner.done:
            row["gain"] = speedup.time_gain(run, stats)
            run.dense_copy = None
            speedup.compile_pruned(run, epoch + 1)
            if run.compiled is not None:
                row["compile"] = run.compiled.to_dict()
    row["overhead_seconds"] = overhead.seconds + (run.setup_seconds[0] if epoch == 0 else 0.0)
    row["overhead_cpu_seconds"] = overhead.cpu_seconds + (run.setup_seconds[1] if epoch == 0 else 0.0)


def train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """The training half of an epoch's row: every batch with its optimizer and pruner steps, then the pruner's
    epoch end (timed apart), with the totals over all ranks."""
    pruner, device = run.pruner, run.device
    phase = pruner.phase
    run.model.train()
    run.progress.start_epoch(epoch, run.cfg.epochs, len(run.train_loader), phase)
    lr = run.optimizer.param_groups[0]["lr"]
    events_before = len(pruner.events)
    guard = LossGuard(run.cfg, device, epoch)
    with Stopwatch(device) as clock:
        loss_sum, correct, seen = _batches(run, guard, clock)
    nonfinite = guard.end_epoch(run.model)  # before the pruner reads the epoch's scores and before the checkpoint
    with Stopwatch(device) as pruner_clock:
        n_events = len(pruner.events)
        pruner.epoch_end()
        if len(pruner.events) != n_events:
            run.relayout()
    if run.parallel.active:  # the epoch's totals over all ranks
        loss_total, correct_total, seen = run.parallel.sums([loss_sum, correct, seen])
        loss_sum, correct = torch.tensor(loss_total), torch.tensor(correct_total)
        seen = int(seen)
    seconds, entry = clock.seconds, pruner.history[-1] if pruner.history else {}
    return {"epoch": epoch, "phase": entry.get("phase", phase), "lr": lr, "train_loss": loss_sum.item() / seen,
            "train_accuracy": correct.item() / seen, "seconds": seconds, "pruner_seconds": pruner_clock.seconds,
            "cpu_seconds": clock.cpu_seconds, "pruner_cpu_seconds": pruner_clock.cpu_seconds,
            "images_per_second": seen / seconds if seconds > 0 else None, "images": seen,
            "batches": len(run.train_loader), "nonfinite_batches": nonfinite, "load_average": load_average(),
            "pruner": entry, "events": list(pruner.events[events_before:])}


def _batches(run: Run, guard: LossGuard, clock: Stopwatch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The epoch's batches, each an optimizer step then a pruner step; this rank's loss sum, correct predictions
    and images."""
    loader, optimizer, scaler = run.train_loader, run.optimizer, run.precision.scaler
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    seen, shown = 0, 0
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad(set_to_none=True)
        with run.precision.autocast():
            out, loss = training_loss(run.net(x), y, run.loss_fn)  # run.net: the DDP wrapper under torchrun
        guard.observe(loss)
        scaler.scale(loss).backward()
        if scaler.is_enabled():
            scaler.unscale_(optimizer)  # criteria that read gradients see true values
        scaler.step(optimizer)
        scaler.update()
        run.scheduler.step()
        _prune_step(run, guard, x, y, loss)
        faults.point("train.batch")
        loss_sum += loss.detach().double() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(y)
        if run.progress.mode == "bar" and (i + 1 - shown >= 10 or i + 1 == len(loader)):
            run.progress.update(i + 1 - shown, loss_sum.item() / seen, correct.item() / seen,
                                seen / max(clock.elapsed(), 1e-9))
            shown = i + 1
    return loss_sum, correct, seen


def _prune_step(run: Run, guard: LossGuard, x: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
    n_events = len(run.pruner.events)
    try:
        run.pruner.step(x, y, loss=loss.detach())
    except NonFiniteError as exc:  # scores from a diverged model: say what diverged
        guard.explain(exc)
    if len(run.pruner.events) != n_events:  # channels were removed: new parameters, possibly a new layout
        run.relayout()
        faults.point("prune.step")


def evaluate(model: nn.Module, loader: BatchLoader, precision: Precision,
             parallel: DataParallel | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``loader`` (over all ranks' shards under torchrun)."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=precision.device)
    correct = torch.zeros((), dtype=torch.long, device=precision.device)
    n = 0
    with torch.no_grad(), precision.autocast():
        for x, y in loader:
            out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
            n += len(y)
    model.train()
    if parallel is not None and parallel.active:
        loss_sum, correct_sum, n = parallel.sums([loss, correct, n])
        return loss_sum / n, correct_sum / n
    return loss.item() / n, correct.item() / n


def evaluates(epoch: int, cfg: TrainConfig, row: dict[str, Any]) -> bool:
    """Whether ``epoch`` is evaluated: every ``--eval-every`` epochs (epochs N−1, 2N−1, …), the last epoch, and the
    last dense one — the epoch at whose end the policy fired (the dense accuracy the summary compares with)."""
    return ((epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1
            or bool((row.get("pruner") or {}).get("trigger")))


def _recalibrate(run: Run, evaluate_before: bool) -> dict[str, Any]:
    """After the pruning epoch: BatchNorm running statistics re-estimated on the first training images (no
    augmentation, no random number drawn: the training trajectory is unchanged), and the test accuracy before it."""
    record: dict[str, Any] = {}
    if evaluate_before:
        record["test_loss_before"], record["test_accuracy_before"] = evaluate(run.model, run.test_loader,
                                                                              run.precision, run.parallel)
    loader, size = run.train_loader, run.cfg.batch_size
    starts = range(0, min(len(loader.x), DEFAULT_BATCHES * size), size)
    with Stopwatch(run.device) as clock, run.precision.autocast():
        record["batches"] = recalibrate_batchnorm(run.model, (loader.normalise(loader.x[i:i + size]) for i in starts))
    run.parallel.sync_buffers(run.model)
    record["seconds"], record["cpu_seconds"] = clock.seconds, clock.cpu_seconds
    return record


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The epoch's line in the log."""
    events = row["events"]
    removed = sum(int(e.get("removed", 0)) for e in events)
    # a step that removed nothing is still a step: say so rather than "pruned"
    pruned = ("" if not events else f"  pruned {len(events)} steps" if removed else
              f"  {len(events)} pruning steps, nothing removed")
    test = "   n/a" if row["test_accuracy"] is None else f"{row['test_accuracy']:6.2%}"
    return (f"{epoch_label(row['epoch'], epochs)} {row['phase']:<7} loss {row['train_loss']:.3f} "
            f"train acc {row['train_accuracy']:6.2%} test acc {test} "
            f"{epoch_seconds(row):6.1f}s {row['images_per_second'] or 0:8,.0f} img/s params {row['params']:>10,}"
            f"{pruned}")

