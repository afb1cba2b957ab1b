"""The training loop of ``earlyprune train``: a client of :class:`~earlyprune.EarlyPruner` like any user's loop.

Per batch: forward (under autocast), loss, backward (through the gradient scaler), optimizer step, LR-schedule
step, ``pruner.step(inputs, targets)``; per epoch: ``pruner.epoch_end()``, evaluation, one ``metrics.jsonl``
line, a checkpoint. The criterion, policy, ratio, target, steps and rounding are the pruner's arguments, taken
from the configuration; the trainer never looks at which criterion or policy runs.

Under ``torchrun`` the same loop runs data-parallel (:mod:`earlyprune.training.parallel`): each rank trains on
its slice of every global batch through a DDP wrapper rebuilt after each removal, metrics are summed over the
ranks, only rank 0 writes.

Exact resumption (CPU): the checkpoint after an epoch holds everything that the next epoch reads — model
(current shape), optimizer, scheduler, scaler, pruner (and policy) state, the data loader's generator and the
global RNG states — and a resumed run rebuilds every object in the same order before restoring them, so
continuing gives bit-identical weights and metrics. A run killed before its first checkpoint restarts at epoch 0;
a resume that would change a setting the results depend on is refused (:mod:`.resume`).
"""

from __future__ import annotations

import copy
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.distributed import broadcast_object
from ..core.errors import NonFiniteError
from ..core.timing import Stopwatch
from ..graph.metrics import ModelStats, measure
from ..io import save, structure_json
from ..outcome import PRUNED, PruningOutcome, pruning_outcome
from ..pruner import EarlyPruner
from ..surgery.batchnorm import DEFAULT_BATCHES, recalibrate_batchnorm
from ..unstructured.storage import csr_bytes, dense_bytes, reference_disk_size
from . import build, environment, faults, restore, rundir, speed_profile, speedup
from .budget import FLOOR_SHARE, MAX_BUDGET_RATIO, budget_record, fit_budget
from .build import build_model
from .checkpoint import (
    write_json_atomic,
)
from .config import TrainConfig, ratio_text
from .data import BatchLoader
from .environment import load_average
from .loggers import RunLogger, RunStart, build_loggers
from .numerics import LossGuard
from .parallel import DataParallel
from .precision import Precision, resolve_device
from .progress import Progress, epoch_label
from .resume import (
    environment_differences,
    parse_allowed,
    prepare_config,
)
from .run import (
    AUX_WEIGHT,
    Run,
    removes_channels,
    set_memory_format,
    training_loss,
)
from .speedup import SPEED
from .summary import build_summary, epoch_seconds

__all__ = ["AUX_WEIGHT", "FLOOR_SHARE", "MAX_BUDGET_RATIO", "SPEED", "RunResult", "build_model", "disk_record",
           "evaluate", "evaluates", "train", "training_loss"]


@dataclass
class RunResult:
    """What :func:`train` returns."""

    run_dir: Path | None
    config: TrainConfig
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    model: nn.Module
    pruner: EarlyPruner
    dense_stats: ModelStats
    final_stats: ModelStats
    extra: dict[str, Any] = field(default_factory=dict)


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


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "CUDA allocated"}
    # ru_maxrss is in KiB on Linux: the whole process's peak, dataset included
    return {"bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "process RSS"}


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          overrides: dict[str, Any] | None = None, write: bool = True,
          log: Callable[[str], None] = print, allow_changed: str | Iterable[str] | None = None) -> RunResult:
    """Train with early pruning; write the run directory (unless ``write`` is False) and return the result.

    Args:
        config: the run's configuration (ignored when resuming).
        resume: a run directory to continue from its latest checkpoint (from epoch 0 if it has none yet);
            ``overrides`` may change the runtime options (:data:`~earlyprune.training.config.RUNTIME_FIELDS`)
            and, if named in ``allow_changed``, settings the results depend on.
        overrides: option values given explicitly (the CLI's flags); with ``config=None`` and no ``resume`` they
            are the configuration.
        write: False keeps everything in memory (no run directory, no checkpoints).
        log: where progress lines go.
        allow_changed: settings a resume may change (``"threads,batch_size"`` or a list; see
            :func:`~earlyprune.training.resume.setting_names`); any other difference from the stored run is
            refused with the list of differences (:class:`~earlyprune.training.resume.ResumeRefused`).
    """
    cfg, check = prepare_config(config, resume, overrides, parse_allowed(allow_changed))
    parallel = DataParallel(resolve_device(cfg.device).type)  # joins torchrun's process group, if any
    loggers: list[RunLogger] = []
    try:
        loggers = build_loggers(cfg.log)  # rank 0 only; an unknown or uninstalled logger fails before any work
        progress = Progress(cfg.progress if parallel.is_main else "none", log=log)
        run = build.setup(cfg, check.run_dir if check else None, write, progress, parallel)
        env = {**environment.capture(cfg.threads, run.device), "data": environment.data_fingerprint(run.data)}
        run.environment = env
        if check is not None:
            check.check(environment_differences(check.stored_environment, {"data": env["data"]}))
        elif cfg.speed_profile is not None:   # a resume re-uses its own run's measurements instead
            run.profile = speed_profile.read(cfg.speed_profile, speed_profile.identity(cfg, env))
        state = build.build(run)
        if state is not None:
            restore.restore(run, state)
        elif check is not None:
            restore.restart(run)
        elif write:  # rank 0 names and creates the run directory; the others learn where it is
            run.run_dir = broadcast_object(rundir.create_run_dir(cfg, env) if parallel.is_main else None)
            if parallel.is_main:
                faults.point("run.created")
        speedup.write_settings(run)
        if check is not None:
            restore.record_resume(run, check)
        run.loggers = loggers
        name = run.run_dir.name if run.run_dir is not None else rundir.default_name(cfg)
        for logger in loggers:
            logger.start(RunStart(name, run.run_dir, rundir.jsonable(cfg.to_dict()), run.start_epoch,
                                  {"dense_params": run.dense_stats.params, "dense_macs": run.dense_stats.macs,
                                   "data": run.data.describe()}))
        _loop(run)
        result = _finish(run)
        if result.summary["complete"]:
            for logger in loggers:
                logger.finish(result.summary)
        return result
    finally:
        for logger in loggers:
            logger.close()
        parallel.close()


def _loop(run: Run) -> None:
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
        run.progress.end_epoch(_epoch_line(row, run.epochs))


def _epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One epoch's ``metrics.jsonl`` row: training (with the pruner), evaluation, the model's size; after the
    pruning epoch, what it gained per step."""
    if run.pruner.phase == "pruning" and not run.pruner.events and removes_channels(run):
        run.dense_copy = copy.deepcopy(run.model)   # the dense model, to time the gain against
    try:
        row = _train_epoch(epoch, run.cfg, run.model, run.optimizer, run.scheduler, run.precision, run.pruner,
                           run.loss_fn, run.train_loader, run.progress, run.device, run=run)
    except NonFiniteError as exc:  # stopped before this epoch's checkpoint: say what is kept
        kept = (f"the checkpoint after epoch {epoch - 1} in {run.run_dir} is kept" if run.writing and epoch > 0
                else "no checkpoint was written")
        raise NonFiniteError(f"{exc}. Stopped; {kept}") from None
    run.parallel.sync_buffers(run.model)  # every rank evaluates (and rank 0 saves) rank 0's BatchNorm statistics
    if run.pruner.phase == "pruning" and not run.pruner.events and run.budget is None:
        fit_budget(run, row)   # the policy has just triggered
    if run.budget is not None and not any(r.get("time_budget") for r in run.rows):
        row["time_budget"] = run.budget   # recorded with the epoch it was fitted in: a resumed run still reports it
    row["test_loss"] = row["test_accuracy"] = None
    row["eval_seconds"] = 0.0
    if run.pruner.done and run.pruner.prune_epoch == epoch and removes_channels(run):
        row["bn_recalibration"] = _recalibrate(run, evaluate_before=evaluates(epoch, run.cfg, row))
    if evaluates(epoch, run.cfg, row):  # the same answer on every rank: the trigger is agreed on
        with Stopwatch(run.device) as clock:
            row["test_loss"], row["test_accuracy"] = evaluate(run.model, run.test_loader, run.precision,
                                                              run.parallel)
        row["eval_seconds"] = clock.seconds
    stats = measure(run.model, run.example, baseline=run.dense_stats)
    row.update(params=stats.params, macs=stats.macs, node_sparsity=stats.node_sparsity,
               weight_sparsity=stats.weight_sparsity)
    with Stopwatch(run.device) as overhead:   # measured by this run for its user: counted in its time
        if run.dense_copy is not None and run.pruner.done:
            row["gain"] = speedup.time_gain(run, stats)
            run.dense_copy = None
            speedup.compile_pruned(run, epoch + 1)
            if run.compiled is not None:
                row["compile"] = run.compiled.to_dict()
    row["overhead_seconds"] = overhead.seconds + (run.setup_seconds[0] if epoch == 0 else 0.0)
    row["overhead_cpu_seconds"] = overhead.cpu_seconds + (run.setup_seconds[1] if epoch == 0 else 0.0)
    return row


def _recalibrate(run: Run, evaluate_before: bool) -> dict[str, Any]:
    """After the pruning epoch: BatchNorm running statistics re-estimated on the first training images (no
    augmentation, no random number drawn: the training trajectory is unchanged), and the test accuracy before it."""
    record: dict[str, Any] = {}
    if evaluate_before:
        record["test_loss_before"], record["test_accuracy_before"] = evaluate(run.model, run.test_loader,
                                                                              run.precision, run.parallel)
    loader, size = run.train_loader, run.cfg.batch_size
    starts = range(0, min(len(loader.x), DEFAULT_BATCHES * size), size)
    with Stopwatch(run.device) as clock:
        with run.precision.autocast():
            record["batches"] = recalibrate_batchnorm(
                run.model, (loader.normalise(loader.x[i:i + size]) for i in starts))
    run.parallel.sync_buffers(run.model)
    record["seconds"], record["cpu_seconds"] = clock.seconds, clock.cpu_seconds
    return record


def evaluates(epoch: int, cfg: TrainConfig, row: dict[str, Any]) -> bool:
    """Whether ``epoch`` is evaluated: every ``--eval-every`` epochs (epochs N−1, 2N−1, …), the last epoch, and the
    last dense one — the epoch at whose end the policy fired (the dense accuracy the summary compares with)."""
    return ((epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1
            or bool((row.get("pruner") or {}).get("trigger")))


def _finish(run: Run) -> RunResult:
    """The summary (and, once complete, the final model) of the run."""
    cfg, rows, pruner = run.cfg, run.rows, run.pruner
    final_stats = measure(run.model, run.example, baseline=run.dense_stats)
    summary = build_summary(rows, epochs=run.epochs, prune_epoch=pruner.prune_epoch, dense=run.dense_stats,
                            final=final_stats, peak_memory=_peak_memory(run.device), model_bytes=None,
                            outcome=_outcome(run))
    summary["round_to"] = pruner.round_to_record
    summary["speed_settings"] = run.speed.to_dict() if run.speed is not None else None
    summary["min_channels"] = run.min_channels
    summary["max_group_ratio"] = cfg.max_group_ratio
    summary["gain"] = run.gain or next((r["gain"] for r in rows if r.get("gain")), None)
    summary["bn_recalibration"] = next((r["bn_recalibration"] for r in rows if r.get("bn_recalibration")), None)
    if cfg.speed_profile is not None:
        summary["speed_profile"] = {"path": str(cfg.speed_profile), "read": run.profile is not None,
                                    "written": speedup.write_profile(run)}
    summary["compile"] = (run.compiled.to_dict() if run.compiled is not None
                          else next((r["compile"] for r in rows if r.get("compile")), None))
    summary["time_budget"] = budget_record(run)
    summary["ratio"] = pruner.ratio
    summary["environment"] = run.environment
    summary["resume_changes"] = run.resume_changes
    summary["world_size"] = run.parallel.world_size
    summary["global_batch_size"] = run.train_loader.global_batch_size
    summary["ranks"] = run.parallel.agreement(run.model)
    summary["granularity"] = cfg.granularity
    summary["disk"] = disk_record(run.model)
    if run.lottery is not None:
        summary["lottery"] = {"rounds": cfg.lottery_rounds, "rewind_epoch": cfg.lottery_rewind,
                              "epochs_per_round": cfg.epochs, "history": run.lottery.history}
    if run.writing:
        run_dir = run.run_dir
        assert run_dir is not None
        if summary["complete"]:
            _write_model(run_dir, run.model)
            summary["model_bytes"] = summary["disk"]["file_bytes"] = (run_dir / rundir.MODEL).stat().st_size
            faults.point("finish.model")
        rundir.write_summary(run_dir, summary)
        if not summary["complete"]:
            run.progress.log(f"stopped after {len(rows)} of {run.epochs} epochs (the last: epoch {len(rows) - 1}); "
                             f"continue with `earlyprune train --resume {run_dir}`")
    if not summary["ranks"]["agree"]:
        raise RuntimeError(f"the {run.parallel.world_size} ranks ended with different models (hashes "
                           f"{summary['ranks']['digests']}): they did not prune or train identically; see summary.json")
    return RunResult(run.run_dir, cfg, rows, summary, run.model, pruner, run.dense_stats, final_stats)


def _train_epoch(epoch: int, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, precision: Precision, pruner: EarlyPruner, loss_fn: nn.Module,
                 loader: BatchLoader, progress: Progress, device: torch.device, run: Run | None = None
                 ) -> dict[str, Any]:
    channels_last = run.channels_last if run is not None else cfg.channels_last in (True, "on")
    phase = "pruning" if pruner.phase == "pruning" else pruner.phase
    net = run.net if run is not None else model  # the DDP wrapper under torchrun
    scaler = precision.scaler
    model.train()
    progress.start_epoch(epoch, cfg.epochs, len(loader), phase)
    lr = optimizer.param_groups[0]["lr"]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen, shown = 0, 0
    events_before = len(pruner.events)
    guard = LossGuard(cfg, device, epoch)
    with Stopwatch(device) as clock:
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                out, loss = training_loss(net(x), y, loss_fn)
            guard.observe(loss)
            scaler.scale(loss).backward()
            if scaler.is_enabled():
                scaler.unscale_(optimizer)  # criteria that read gradients see true values
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n_events = len(pruner.events)
            try:
                pruner.step(x, y, loss=loss.detach())
            except NonFiniteError as exc:  # scores from a diverged model: say what diverged
                guard.explain(exc)
            if len(pruner.events) != n_events:  # channels were removed: new parameters, possibly a new layout
                set_memory_format(model, optimizer, channels_last)
                net = run.rewrap() if run is not None else model
                faults.point("prune.step")
            faults.point("train.batch")
            loss_sum += loss.detach().double() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            if progress.mode == "bar" and (i + 1 - shown >= 10 or i + 1 == len(loader)):
                progress.update(i + 1 - shown, loss_sum.item() / seen, correct.item() / seen,
                                seen / max(clock.elapsed(), 1e-9))
                shown = i + 1
    seconds, cpu_seconds = clock.seconds, clock.cpu_seconds
    nonfinite = guard.end_epoch(model)  # before the pruner reads the epoch's scores and before the checkpoint
    with Stopwatch(device) as pruner_clock:
        n_events = len(pruner.events)
        pruner.epoch_end()
        if len(pruner.events) != n_events:
            set_memory_format(model, optimizer, channels_last)
            if run is not None:
                run.rewrap()
    pruner_seconds = pruner_clock.seconds
    if run is not None and run.parallel.active:  # the epoch's totals over all ranks
        loss_total, correct_total, seen = run.parallel.sums([loss_sum, correct, seen])
        loss_sum, correct = torch.tensor(loss_total), torch.tensor(correct_total)
        seen = int(seen)
    entry = pruner.history[-1] if pruner.history else {}
    return {"epoch": epoch, "phase": entry.get("phase", phase), "lr": lr, "train_loss": loss_sum.item() / seen,
            "train_accuracy": correct.item() / seen, "seconds": seconds, "pruner_seconds": pruner_seconds,
            "cpu_seconds": cpu_seconds, "pruner_cpu_seconds": pruner_clock.cpu_seconds,
            "images_per_second": seen / seconds if seconds > 0 else None, "images": seen, "batches": len(loader),
            "nonfinite_batches": nonfinite, "load_average": load_average(),
            "pruner": entry, "events": list(pruner.events[events_before:])}


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
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


def _outcome(run: Run) -> PruningOutcome:
    """What pruned the run: the pruner, or Lottery Ticket Rewinding's rounds (the pruner stays dense then)."""
    if run.lottery is None or not run.lottery.history:
        return pruning_outcome(run.pruner, run.epochs)
    history = run.lottery.history
    return PruningOutcome(True, PRUNED, history[0]["epoch"], 0, len(history), None, None,
                          sum(int(h["pruned"]) for h in history))


def disk_record(model: nn.Module) -> dict[str, Any]:
    """The model's size on disk as EarlyCroP reports it (:mod:`earlyprune.unstructured.storage`): its weight
    tensors in CSR (fp32 values, the narrowest integer indices), the reference code's formula, and dense."""
    return {"csr_bytes": csr_bytes(model), "csr_precision": "values fp32, indices the narrowest of 8/16/32/64 bits",
            "reference_size": reference_disk_size(model), "dense_bytes": dense_bytes(model), "file_bytes": None}


def _write_model(run_dir: Path, model: nn.Module) -> None:
    save(model, run_dir / rundir.MODEL)
    write_json_atomic(run_dir / rundir.STRUCTURE, structure_json(model))
