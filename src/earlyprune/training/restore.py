"""Restoring, the phase that puts a stored run back where it stopped — and the checkpoint it is restored from.

:func:`write_checkpoint` saves after each epoch everything the next epoch reads; :func:`restore` puts those states
into a run built as the stored one was (:func:`.build.build`), so that it continues bit-identically;
:func:`restart` begins again a run stopped before its first checkpoint; :func:`record_resume` commits the changes
``--allow-changed`` let through (:mod:`.resume` decided them before anything was built).
"""

from __future__ import annotations

from typing import Any

from ..surgery.optimizer_state import check_state
from . import faults, rundir
from .checkpoint import (
    CheckpointError,
    remove_stale,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .resume import ResumeCheck
from .run import Run, match_state_layout


def write_checkpoint(run: Run, epochs_done: int) -> None:
    """The checkpoint after ``epochs_done`` epochs: the model and every state :func:`restore` reads back."""
    assert run.run_dir is not None
    state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
             "scaler": run.precision.scaler.state_dict(), "pruner": run.pruner.state_dict(),
             "loader": run.train_loader.state_dict(), "rng": rng_state(), "world_size": run.train_loader.world_size}
    if run.lottery is not None:
        state["lottery"] = run.lottery.state_dict()
    save_checkpoint(run.run_dir, epochs_done, run.model, state)


def restore(run: Run, state: dict[str, Any]) -> None:
    """Continue from a checkpoint: every state, the data order, the RNGs, and the metrics of the epochs it has."""
    try:  # a state that does not fit is refused here, not at the first step
        check_state(run.optimizer, state["optimizer"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            run.precision.scaler.load_state_dict(state["scaler"])
        run.pruner.load_state_dict(state["pruner"])
        if run.lottery is not None:
            run.lottery.load_state_dict(state["lottery"])
        run.train_loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"the checkpoint of {run.run_dir} does not fit this run's model and optimizer "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); the run cannot be "
                              f"resumed from it") from None
    match_state_layout(run.optimizer)
    run_dir, start, epochs = run.run_dir, run.start_epoch, run.epochs
    assert run_dir is not None
    run.rows = [r for r in rundir.read_metrics(run_dir) if r["epoch"] < start]
    if len(run.rows) != start:
        raise CheckpointError(f"{run_dir}/metrics.jsonl holds {len(run.rows)} of the {start} epochs its checkpoint "
                         f"has; the run directory is damaged")
    if run.parallel.is_main:
        rundir.write_metrics(run_dir, run.rows)  # drop lines of an epoch that never reached its checkpoint
        remove_stale(run_dir)
        faults.point("resume.restored")
    run.progress.log(f"resuming {run_dir}: {start} of {epochs} epochs done, continuing with epoch {start} "
                     f"(phase {run.pruner.phase})" if start < epochs
                     else f"{run_dir} is already complete ({epochs} epochs)")


def restart(run: Run) -> None:
    """Resume a run stopped before its first checkpoint: from epoch 0, as it started (its lines dropped)."""
    assert run.run_dir is not None
    if run.parallel.is_main:
        rundir.write_metrics(run.run_dir, [])
        remove_stale(run.run_dir)
        faults.point("resume.restored")
    run.progress.log(f"restarting {run.run_dir} at epoch 0 (it stopped before its first checkpoint)")


def record_resume(run: Run, check: ResumeCheck) -> None:
    """Commit the allowed changes (environment.json first: a kill before config.json is rewritten makes the next
    resume ask again and record the same change once) and keep the record for summary.json."""
    changes = list(check.earlier_changes)
    for diff in check.accepted:
        entry = rundir.jsonable(diff.to_dict(run.start_epoch))
        if entry not in changes:
            changes.append(entry)
    run.resume_changes = changes
    if run.writing and (check.accepted or check.stored_environment is None):
        assert run.run_dir is not None
        rundir.write_environment(run.run_dir, run.environment, changes)
        if any(d.setting in run.cfg.__dataclass_fields__ for d in check.accepted):
            rundir.write_config(run.run_dir, run.cfg)
    for diff in check.accepted:
        run.progress.log(f"resuming with {diff} (allowed by --allow-changed; recorded in summary.json)")

