"""Make a planned run exist, complete: skip it if finished, resume it if interrupted, train it otherwise.

A directory that holds a run of *another* configuration is refused (changing the grid's recipe and reusing its
folder would mix results); runtime options (progress, threads, data paths) may differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..core.errors import ConfigError, RunFailedError
from ..training import rundir
from ..training.checkpoint import POINTER
from ..training.config import RUNTIME_FIELDS, TrainConfig
from .energy import add_energy, measure_energy
from .plan import RunSpec


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in rundir.jsonable(cfg.to_dict()).items() if k not in RUNTIME_FIELDS}


def _check_same(path: Path, spec: RunSpec) -> None:
    stored, planned = _comparable(rundir.read_config(path)), _comparable(spec.config)
    diff = sorted(k for k in planned if stored.get(k) != planned[k])
    if diff:
        k = diff[0]
        raise ConfigError(f"{path} holds a run with --{k.replace('_', '-')} {stored.get(k)!r}, not {planned[k]!r}; "
                          f"use another --name (or --out-dir) for a different configuration")


def state(spec: RunSpec) -> str:
    """``new``, ``partial`` (a checkpoint to resume), ``restart`` (killed before its first checkpoint: resumed
    from epoch 0) or ``complete``."""
    path = spec.path
    if not path.exists() or not any(path.iterdir()):
        return "new"
    _check_same(path, spec)
    summary = rundir.read_summary(path)
    if summary is not None and summary.get("complete") and len(rundir.read_metrics(path)) >= spec.config.epochs:
        return "complete"
    return "partial" if (path / POINTER).is_file() else "restart"


def _train_in_subprocess(spec: RunSpec, resume: bool, runtime: dict[str, Any]) -> None:
    """``earlyprune train`` in a fresh Python process: the run's peak memory (process RSS on a CPU) is its own,
    not the maximum over every run before it in this process, and a crash stays in its run."""
    with tempfile.TemporaryDirectory() as tmp:
        if resume:
            args = ["--resume", str(spec.path)] + [a for k, v in runtime.items() if v is not None
                                                    for a in (f"--{k.replace('_', '-')}", str(v))
                                                    if k != "download"]
        else:
            config = Path(tmp) / "config.json"
            config.write_text(json.dumps(rundir.jsonable(spec.config.to_dict())), encoding="utf-8")
            args = ["--config", str(config)]
        code = subprocess.call([sys.executable, "-c", "import sys; from earlyprune.cli import main; "
                                "sys.exit(main(sys.argv[1:]))", "train", *args])
    if code != 0:
        raise RunFailedError(f"training {spec.path} failed (exit status {code}; its output is above); rerun the same "
                             f"command to continue")


def ensure_run(spec: RunSpec, *, energy: bool = False, country: str = "USA", isolate: bool = False,
               log: Callable[[str], None] = print) -> str:
    """Bring ``spec``'s run to completion; returns what was done (``skipped``, ``resumed``, ``trained``).

    ``isolate`` trains in a child process (the command line's default); otherwise in this one (tests, notebooks).
    """
    from ..training.trainer import train

    what = state(spec)
    if what == "complete":
        return "skipped"
    runtime = {k: getattr(spec.config, k) for k in ("progress", "threads", "data_dir", "data_cache", "download")}
    resume = what in ("partial", "restart")  # a run without checkpoint restarts at epoch 0 through --resume
    with measure_energy(energy, country) as measured:
        if isolate:
            _train_in_subprocess(spec, resume, runtime)
        elif resume:
            train(resume=spec.path, overrides=runtime, log=log)
        else:
            train(spec.config, log=log)
    add_energy(spec.path, measured)
    return "resumed" if what == "partial" else "trained"


def run_all(specs: list[RunSpec], *, energy: bool = False, country: str = "USA", isolate: bool = False,
            log: Callable[[str], None] = print) -> dict[str, int]:
    """Every spec in order (duplicates once); returns how many were skipped / resumed / trained."""
    counts = {"skipped": 0, "resumed": 0, "trained": 0}
    unique = list({s.path: s for s in specs}.values())
    for i, spec in enumerate(unique, 1):
        what = state(spec)
        log(f"[{i}/{len(unique)}] {spec.path}: " + {"complete": "complete, skipped", "partial": "resuming",
                                                   "new": "training", "restart": "training (restarted)"}[what])
        counts[ensure_run(spec, energy=energy, country=country, isolate=isolate, log=log)] += 1
    return counts
