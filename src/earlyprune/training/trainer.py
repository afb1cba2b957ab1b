"""The conductor of ``earlyprune train``: a client of :class:`~earlyprune.EarlyPruner` like any user's loop.

:func:`train` runs the phases in order, each a module whose interface is the run's state (:class:`~.run.Run`):
:mod:`.resume` checks what a resume would change before anything is built; :mod:`.build` sets up threads, device
and data, then builds the model, loss, speed settings (:mod:`.speedup`), optimizer, LR schedule and pruner;
:mod:`.restore` puts a stored run's states back; :mod:`.loop` trains the epochs — per batch the optimizer's and the
pruner's steps, per epoch ``pruner.epoch_end()``, the time budget once the policy fired (:mod:`.budget`),
evaluation, one ``metrics.jsonl`` line and a checkpoint; :mod:`.summary` builds ``summary.json``, and the final
model is written here. The criterion, policy, ratio, target, steps and rounding are the pruner's arguments, taken
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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from torch import nn

from ..core.distributed import broadcast_object
from ..graph.metrics import ModelStats, measure
from ..io import save, structure_json
from ..pruner import EarlyPruner
from . import build, environment, faults, restore, rundir, speed_profile, speedup
from .budget import FLOOR_SHARE, MAX_BUDGET_RATIO, budget_record
from .build import build_model
from .checkpoint import write_json_atomic
from .config import TrainConfig
from .loggers import RunLogger, RunStart, build_loggers
from .loop import evaluate, evaluates, run_epochs
from .parallel import DataParallel
from .precision import resolve_device
from .progress import Progress
from .resume import ResumeCheck, environment_differences, parse_allowed, prepare_config
from .run import AUX_WEIGHT, Run, training_loss
from .speedup import SPEED
from .summary import disk_record, run_summary

# names users import from here; most now live in the phase modules
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
    #: whether this process is rank 0 (always, outside torchrun): the one that writes and prints
    is_main: bool = True


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
        if check is not None and write and parallel.is_main:
            rundir.claim(check.run_dir)   # before anything in it is written
        loggers = build_loggers(cfg.log)  # rank 0 only; an unknown or uninstalled logger fails before any work
        progress = Progress(cfg.progress if parallel.is_main else "none", log=log)
        run = _start(build.setup(cfg, check.run_dir if check else None, write, progress, parallel), check)
        _start_loggers(run, loggers)
        run_epochs(run)
        result = _finish(run)
        if result.summary["complete"]:
            for logger in loggers:
                logger.finish(result.summary)
        return result
    finally:
        for logger in loggers:
            logger.close()
        parallel.close()
        rundir.release_claims()


def _start(run: Run, check: ResumeCheck | None) -> Run:
    """The set-up run built, and where it starts: restored from its checkpoint, restarted at epoch 0, or new with
    its run directory created; the data checked against a resumed run's, a new run's --speed-profile read."""
    cfg, parallel = run.cfg, run.parallel
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
    elif run.write:  # rank 0 names and creates the run directory; the others learn where it is
        run.run_dir = broadcast_object(rundir.create_run_dir(cfg, env) if parallel.is_main else None)
        if parallel.is_main:
            rundir.claim(run.run_dir)
            faults.point("run.created")
    speedup.write_settings(run)
    if check is not None:
        restore.record_resume(run, check)
    return run


def _start_loggers(run: Run, loggers: list[RunLogger]) -> None:
    run.loggers = loggers
    name = run.run_dir.name if run.run_dir is not None else rundir.default_name(run.cfg)
    for logger in loggers:
        logger.start(RunStart(name, run.run_dir, rundir.jsonable(run.cfg.to_dict()), run.start_epoch,
                              {"dense_params": run.dense_stats.params, "dense_macs": run.dense_stats.macs,
                               "data": run.data.describe()}))


def _finish(run: Run) -> RunResult:
    """The summary (and, once complete, the final model) of the run."""
    final_stats = measure(run.model, run.example, baseline=run.dense_stats)
    written = speedup.write_profile(run)   # before the summary, which says whether it wrote
    summary = run_summary(run, final_stats, profile_written=written, time_budget=budget_record(run))
    if run.writing:
        run_dir = run.run_dir
        assert run_dir is not None
        if summary["complete"]:
            _write_model(run_dir, run.model)
            summary["model_bytes"] = summary["disk"]["file_bytes"] = (run_dir / rundir.MODEL).stat().st_size
            faults.point("finish.model")
        rundir.write_summary(run_dir, summary)
        if not summary["complete"]:
            run.progress.log(f"stopped after {len(run.rows)} of {run.epochs} epochs (the last: epoch "
                             f"{len(run.rows) - 1}); continue with `earlyprune train --resume {run_dir}`")
    # rank 0's summary on every rank: the one summary.json holds, not each rank's own timings
    summary = broadcast_object(summary)
    if not summary["ranks"]["agree"]:
        raise RuntimeError(  # internal: the ranks prune and train in lockstep; different models mean that broke
            f"the {run.parallel.world_size} ranks ended with different models (hashes "
            f"{summary['ranks']['digests']}): they did not prune or train identically; see summary.json")
    return RunResult(run.run_dir, run.cfg, run.rows, summary, run.model, run.pruner, run.dense_stats, final_stats,
                     is_main=run.parallel.is_main)


def _write_model(run_dir: Path, model: nn.Module) -> None:
    save(model, run_dir / rundir.MODEL)
    write_json_atomic(run_dir / rundir.STRUCTURE, structure_json(model))
