"""Reading run directories written by ``earlyprune train`` (and by ``sweep`` / ``compare``, which call it).

A :class:`Run` is the plain-JSON content of one run directory — ``config.json``, ``metrics.jsonl``,
``summary.json`` and, when ``codecarbon`` measured it, ``energy.json`` — with the few derived quantities the
tables and plots need. Nothing here imports torch models or touches checkpoints: reports read files only.

A path that should hold a run but does not (deleted, never started, not a run directory) becomes a
:class:`MissingRun` with the reason, so that every table can say what it lacks instead of silently dropping it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import EarlyPruneError
from ..training import rundir
from ..training.checkpoint import POINTER

#: written next to a run's files by ``sweep`` / ``compare`` when codecarbon measured the run
ENERGY = "energy.json"
#: what ``compare`` writes into its directory: the plan (which run answers which cell of the tables)
MANIFEST = "compare.json"

_RANDOM_SEED = re.compile(r",\s*seed\s*=\s*-?\d+\s*$")


class RunError(EarlyPruneError, ValueError):
    """A path is not a readable run directory; ``reason`` says why without repeating the path. (An
    :class:`~earlyprune.EarlyPruneError`, and a ``ValueError`` as before.)"""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class MissingRun:
    """A run that a table needs but that cannot be read: its path and why."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return self.path.name

    complete = False
    final_accuracy = None


@dataclass
class Run:
    """One run directory's files, read once."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    energy: dict[str, Any] | None = None
    _dense_seconds: float | None = field(default=None, repr=False)

    # -- identity ----------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def criterion(self) -> str:
        return str(self.config.get("criterion"))

    @property
    def policy(self) -> str:
        return str(self.config.get("policy"))

    @property
    def ratio(self) -> float:
        return float(self.config.get("ratio", 0.0))

    @property
    def epochs_planned(self) -> int:
        return int(self.config.get("epochs", len(self.rows)))

    @property
    def policy_label(self) -> str:
        """The policy with a random draw's seed removed (``random:0-30,seed=3`` → ``random:0-30``): runs that
        differ only by the seed are repeats of one policy."""
        return _RANDOM_SEED.sub("", self.policy)

    @property
    def fixed_epoch(self) -> int | None:
        """K for an ``epoch:K`` run (a point of the oracle grid), else None."""
        kind, _, arg = self.policy.partition(":")
        return int(arg) if kind == "epoch" and arg.strip().isdigit() else None

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.summary and self.summary.get("complete")) and len(self.rows) >= self.epochs_planned

    @property
    def status(self) -> str:
        if self.complete:
            return "complete"
        return f"incomplete ({len(self.rows)} of {self.epochs_planned} epochs)"

    # -- results -------------------------------------------------------------------------------------------------
    def _summary(self, key: str) -> Any:
        return self.summary.get(key) if self.complete and self.summary else None

    @property
    def final_accuracy(self) -> float | None:
        """Top-1 on the test split after the last epoch (a fraction), None unless the run is complete."""
        return self._summary("final_test_accuracy")

    @property
    def pruned(self) -> bool | None:
        """Whether the run removed channels (None: unknown — an unfinished run that has not pruned yet).

        ``summary.json`` says so since it records the pruning outcome; for older runs it is read from the
        pruning events (``removed``) or the parameter counts, so that a run whose policy fired after the last
        epoch is not taken for a pruned one."""
        if self.summary and isinstance(self.summary.get("pruned"), bool):
            return self.summary["pruned"]
        events = [e for r in self.rows for e in r.get("events") or []]
        if any("removed" in e for e in events):
            return sum(int(e.get("removed", 0)) for e in events) > 0
        params = (self.summary or {}).get("params") or {}
        if self.complete and params.get("final") is not None and params.get("dense") is not None:
            return params["final"] < params["dense"]
        return True if any(r.get("phase") in ("pruning", "sparse") for r in self.rows) else \
            (False if self.complete else None)

    @property
    def not_pruned_reason(self) -> str | None:
        """Why a complete run removed nothing (from ``summary.json``), None if it pruned."""
        if self.pruned is not False:
            return None
        outcome = (self.summary or {}).get("pruning") or {}
        if outcome.get("reason"):
            return str(outcome["reason"])
        if self.policy == "never":
            return "policy 'never': a dense reference run"
        return "no channel was removed (the policy did not trigger in time, or nothing could be removed)"

    @property
    def prune_epoch(self) -> int | None:
        """The epoch during which the run removed channels (None: it did not, or not yet)."""
        if self.pruned is False:
            return None
        if self.summary and self.summary.get("prune_epoch") is not None:
            return int(self.summary["prune_epoch"])
        for row in self.rows:
            if row.get("phase") == "pruning":
                return int(row["epoch"])
        return None

    @property
    def trigger_reason(self) -> str | None:
        """Why the policy fired: ``"signal"``, ``"cap"`` (a signal policy that never fired by its rule and pruned
        at its cap on dense epochs), ``"schedule"``; None when it never fired or pruned from the start."""
        for row in self.rows:
            pruner = row.get("pruner") or {}
            if pruner.get("trigger"):
                return pruner.get("trigger_reason")
        return None

    @property
    def train_seconds(self) -> float | None:
        return self._summary("train_seconds")

    def nested(self, key: str, sub: str = "final") -> Any:
        value = self._summary(key)
        return value.get(sub) if isinstance(value, dict) else None

    @property
    def peak_memory_bytes(self) -> int | None:
        return self.nested("peak_memory", "bytes")

    @property
    def ideal_speedup(self) -> float | None:
        """The speedup if time were proportional to MACs: ``epochs × dense MACs / Σ_epochs MACs``, with each
        epoch at the MACs measured at its end (the pruning epoch counts as already pruned: a slight flattery)."""
        dense = self.nested("macs", "dense")
        if not self.complete or not dense or not self.rows:
            return None
        total = sum(float(r.get("macs", dense)) for r in self.rows)
        return len(self.rows) * dense / total if total > 0 else None

    @property
    def pruning_seconds(self) -> float | None:
        """Seconds spent in the pruning steps themselves (scoring aside): the sum over the pruning events."""
        events = [e for r in self.rows for e in r.get("events") or []]
        return sum(float(e.get("seconds", 0.0)) for e in events) if events else None

    def signal(self, key: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of a per-epoch pruner signal (``kendall_tau``, ``weight_change``, …) where defined."""
        out = []
        for row in self.rows:
            value = (row.get("pruner") or {}).get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append((int(row["epoch"]), float(value)))
        return out

    def epi_curve(self, ratio: float) -> list[tuple[int, float]]:
        """``(epoch, EPI_t)`` at ``ratio`` as recorded by the pruner during the dense epochs."""
        from ..signals.recorder import ratio_key

        key, out = ratio_key(ratio), []
        for row in self.rows:
            value = ((row.get("pruner") or {}).get("epi") or {}).get(key)
            if value is not None:
                out.append((int(row["epoch"]), float(value)))
        return out

    def epi_ratios(self) -> list[float]:
        """The ratios whose EPI curve the run recorded."""
        keys: set[str] = set()
        for row in self.rows:
            keys.update(k for k, v in ((row.get("pruner") or {}).get("epi") or {}).items() if v is not None)
        return sorted(float(k) for k in keys)

    def accuracy_curve(self) -> list[tuple[float, float]]:
        """``(cumulative training seconds, test accuracy)`` after each epoch."""
        from ..training.summary import epoch_seconds

        out, total = [], 0.0
        for row in self.rows:
            total += epoch_seconds(row)
            out.append((total, float(row["test_accuracy"])))
        return out

    def setting(self, ignore_seed: bool = False) -> tuple[tuple[str, str], ...]:
        """What makes runs comparable: the configuration without what a comparison varies (criterion, policy,
        ratio) and without where/how it was shown (name, output folder, progress, threads …); ``ignore_seed``
        also leaves out ``seed`` (runs of several seeds, aggregated on request)."""
        from ..training.config import RUNTIME_FIELDS

        skip = set(RUNTIME_FIELDS) | {"criterion", "policy", "ratio"} | ({"seed"} if ignore_seed else set())
        return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in self.config.items() if k not in skip))

    def setting_title(self) -> str:
        c = self.config
        return f"{c.get('model')} on {c.get('dataset')}, {c.get('epochs')} epochs, ratio of {c.get('target')}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise RunError(path.parent, f"{path.name} is not JSON; the run directory is damaged") from None


def load_run(path: str | Path) -> Run:
    """Read one run directory; :class:`RunError` if ``path`` is not one."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(path, "no such run directory")
    if not (path / rundir.CONFIG).is_file():
        raise RunError(path, f"no {rundir.CONFIG}: not a run directory written by `earlyprune train`")
    config = _read_json(path / rundir.CONFIG)
    if not isinstance(config, dict):
        raise RunError(path, f"{rundir.CONFIG} does not hold a configuration")
    try:
        rows = rundir.read_metrics(path)
        summary = rundir.read_summary(path)
    except ValueError as exc:
        raise RunError(path, str(exc)) from None
    energy = _read_json(path / ENERGY) if (path / ENERGY).is_file() else None
    return Run(path, config, rows, summary, energy)


def load_or_missing(path: str | Path) -> Run | MissingRun:
    try:
        return load_run(path)
    except RunError as exc:
        return MissingRun(Path(path), exc.reason)


def is_run_dir(path: Path) -> bool:
    return (path / rundir.CONFIG).is_file() or (path / POINTER).is_file()


@dataclass
class RunCollection:
    """What a list of paths holds: runs, ``compare`` directories (with a manifest), and unreadable paths."""

    runs: list[Run] = field(default_factory=list)
    comparisons: list[Path] = field(default_factory=list)
    missing: list[MissingRun] = field(default_factory=list)


def collect(paths: Iterable[str | Path]) -> RunCollection:
    """Run directories, folders of run directories (a sweep), and ``compare`` folders, in the order given.

    A path that is none of these, or a run that cannot be read, is recorded in ``missing`` — never skipped
    silently. A run reached twice is read once.
    """
    out, seen = RunCollection(), set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        item = load_or_missing(path)
        (out.missing if isinstance(item, MissingRun) else out.runs).append(item)  # type: ignore[arg-type]

    for raw in paths:
        path = Path(raw)
        if is_run_dir(path):
            add(path)
            continue
        if not path.is_dir():
            out.missing.append(MissingRun(path, "no such run directory"))
            continue
        if (path / MANIFEST).is_file():
            out.comparisons.append(path)
        # hidden names: a run directory still being created (training/rundir.py), never a run
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run_dir(p))
        if not children and not (path / MANIFEST).is_file():
            out.missing.append(MissingRun(path, "holds no run directories"))
        for child in children:
            add(child)
    return out
