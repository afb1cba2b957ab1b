"""A testing hook: kill this process at a named point of the trainer, deterministically.

The crash-consistency tests (``tests/test_crash_consistency.py``) set ``EARLYPRUNE_KILL_AT=POINT[:N]`` in the
environment of an ``earlyprune train`` process; the N-th time (default: the first) that process reaches
``POINT``, it sends itself ``SIGKILL`` — no handler, no ``finally`` and no buffered write runs, as when the machine
loses power or the scheduler kills a job. The tests then resume the run and compare it with an uninterrupted one.

Unset (the normal case) a point costs one dictionary lookup. An unknown point name in the variable is an error
(a typo would otherwise never kill and the test would pass vacuously).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from ..core.errors import ConfigError

ENV = "EARLYPRUNE_KILL_AT"

#: every point the trainer and the checkpoint writer pass, in the order a run reaches them
POINTS = {
    "run.created": "the run directory exists with its configuration; no epoch trained yet",
    "train.batch": "after a training batch (optimizer step and pruner.step); counts batches across epochs",
    "prune.step": "right after a pruning step removed channels (between the steps of the pruning epoch)",
    "epoch.metrics": "an epoch's metrics line is appended, its checkpoint not yet written",
    "checkpoint.model": "inside a checkpoint write: the model file is in the temporary directory, the state not",
    "checkpoint.files": "inside a checkpoint write: every file is in the temporary directory, not yet renamed",
    "checkpoint.renamed": "inside a checkpoint write: the directory has its final name; the pointer names the old one",
    "checkpoint.pointer-written": "inside a checkpoint write: the new pointer is a temporary file, not yet replaced",
    "checkpoint.pointer": "inside a checkpoint write: the pointer names the new checkpoint; older ones not removed",
    "resume.restored": "a resumed run restored its checkpoint and rewrote its metrics; no batch trained yet",
    "finish.model": "the final model is written, summary.json not yet",
}

_seen: Counter[str] = Counter()


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ConfigError(f"{ENV}={spec!r} names no kill point; points: {', '.join(POINTS)}")
    try:
        n = int(count) if count else 1
    except ValueError:
        raise ConfigError(f"{ENV}={spec!r}: the count after ':' must be a whole number") from None
    return name, n


def point(name: str) -> None:
    """Mark that the run reached ``name`` (one of :data:`POINTS`); kills the process if it is the chosen one."""
    target = _target()
    if target is None:
        return
    if name not in POINTS:
        raise ValueError(  # internal: earlyprune's own code names a point it did not declare
            f"unknown kill point {name!r}: add it to earlyprune.training.faults.POINTS")
    if target[0] != name:
        return
    _seen[name] += 1
    if _seen[name] == target[1]:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
