"""What ``--resume`` may change: nothing that affects the results, unless the user accepts it by name.

A resumed run is bit-identical to an uninterrupted one only if everything that shapes the computation is the
same: the configuration (every option except where files go and how progress is shown,
:data:`~earlyprune.training.config.RUNTIME_FIELDS`) and the environment record (:mod:`.environment`: thread
count, device, PyTorch version, data). :func:`differences` lists what a resume would change; :func:`accept`
refuses the resume with the whole list, or lets through the settings named in ``--allow-changed`` — those are
recorded in ``environment.json`` and ``summary.json`` (``resume_changes``) with the epoch they took effect.
:func:`prepare_config` runs these checks for :func:`~.trainer.train` before anything is built; putting the stored
states back into the built run is :mod:`.restore`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import ConfigError
from . import rundir
from .config import RUNTIME_FIELDS, TrainConfig
from .environment import KEYS, capture
from .precision import resolve_device

#: options compared by their effect (the resolved record of :mod:`.environment`), not by the value written:
#: ``--threads`` unset and ``--threads 2`` are the same run on a 2-core machine
BY_EFFECT = frozenset({"threads", "device"})


class ResumeRefused(ConfigError):
    """A resume would change settings that affect the results, and they were not allowed by name."""


@dataclass(frozen=True)
class Difference:
    """One setting that a resume would change."""

    setting: str
    stored: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.setting} {self.stored!r} -> {self.now!r}"

    def to_dict(self, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "setting": self.setting, "stored": self.stored, "now": self.now}


def setting_names() -> list[str]:
    """Every name ``--allow-changed`` accepts."""
    fields = [f for f in TrainConfig.__dataclass_fields__ if f not in RUNTIME_FIELDS and f not in BY_EFFECT]
    return sorted(set(fields) | set(KEYS))


def parse_allowed(text: str | Iterable[str] | None) -> frozenset[str]:
    """``"threads,batch-size"`` (or a list of names) → ``{"threads", "batch_size"}``; unknown names are refused."""
    if text is None:
        return frozenset()
    items = text.split(",") if isinstance(text, str) else list(text)
    names = {item.strip().removeprefix("--").replace("-", "_") for item in items if item.strip()}
    known = set(setting_names())
    unknown = sorted(names - known)
    if unknown:
        raise ConfigError(f"--allow-changed names {', '.join(unknown)}, which is not a setting a resume compares; "
                         f"settings: {', '.join(sorted(known))}")
    return frozenset(names)


def config_differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[Difference]:
    """Options of ``requested`` that differ from the ``stored`` configuration, runtime options and the options
    compared by effect left out."""
    skip = RUNTIME_FIELDS | BY_EFFECT
    return [Difference(k, stored.get(k), v) for k, v in requested.items()
            if k not in skip and stored.get(k) != v]


def environment_differences(stored: dict[str, Any] | None, now: dict[str, Any]) -> list[Difference]:
    """Keys of the environment record that differ (none when the run predates the record)."""
    if stored is None:
        return []
    return [Difference(k, stored.get(k), now[k]) for k in KEYS if k in now and k in stored and stored[k] != now[k]]


def accept(diffs: list[Difference], allowed: frozenset[str], run_dir: Path) -> list[Difference]:
    """The differences, if every one is allowed by name; otherwise :class:`ResumeRefused` listing them all."""
    refused = [d for d in diffs if d.setting not in allowed]
    if not refused:
        return diffs
    names = ",".join(d.setting for d in refused)
    raise ResumeRefused(
        f"--resume {run_dir} would change {len(refused)} setting(s) that affect the results: "
        f"{'; '.join(map(str, refused))}. A resumed run is bit-identical to an uninterrupted one only with the "
        f"stored settings: resume without changing them, or accept the change with --allow-changed {names} "
        f"(recorded in summary.json)")


@dataclass
class ResumeCheck:
    """What a resume compares and may change: the stored environment record, the changes earlier resumes were
    allowed to make, the changes allowed by name now, and those accepted so far."""

    run_dir: Path
    stored_environment: dict[str, Any] | None
    earlier_changes: list[dict[str, Any]]
    allowed: frozenset[str]
    accepted: list[Difference] = field(default_factory=list)

    def check(self, diffs: list[Difference]) -> None:
        self.accepted += accept(diffs, self.allowed, self.run_dir)


def prepare_config(config: TrainConfig | None, resume: str | Path | None, overrides: dict[str, Any] | None,
                   allowed: frozenset[str]) -> tuple[TrainConfig, ResumeCheck | None]:
    """The configuration to run; when resuming, every difference from the stored run (configuration and the
    environment known before the data are loaded) has been checked."""
    if resume is None:
        if allowed:
            raise ConfigError("--allow-changed applies to --resume only (a new run has nothing to change)")
        if config is None:
            config = TrainConfig(**(overrides or {}))
        return config.validate().resolved(), None
    run_dir = Path(resume).expanduser()
    stored = rundir.read_config(run_dir)
    stored_env, changes = rundir.read_environment(run_dir)
    unchecked = [k for k in KEYS if k not in allowed]
    progress = (run_dir / "checkpoint.json").exists() or (run_dir / "checkpoints").is_dir()
    if stored_env is None and unchecked and progress:   # without a checkpoint the run restarts: nothing to check
        # a run directory is created with its environment.json (staged, renamed into place): it was removed
        raise ResumeRefused(f"{run_dir}/environment.json is missing, so this resume cannot check the thread count, "
                            f"device, PyTorch version and data against the run's. Restore the file, or accept "
                            f"whatever they are now with --allow-changed {','.join(KEYS)} (recorded in "
                            f"summary.json)")
    before = rundir.merge_resume(stored, {}, changes)
    cfg = rundir.merge_resume(stored, overrides or {}, changes).validate()
    check = ResumeCheck(run_dir, stored_env, changes, allowed)
    now = capture(cfg.threads, resolve_device(cfg.device))
    check.check(config_differences(before.to_dict(), cfg.to_dict()) + environment_differences(stored_env, now))
    return cfg, check
