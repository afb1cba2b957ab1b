"""What ``--resume`` may change: nothing that affects the results, unless the user accepts it by name.

A resumed run is bit-identical to an uninterrupted one only if everything that shapes the computation is the
same: the configuration (every option except where files go and how progress is shown,
:data:`~earlyprune.training.config.RUNTIME_FIELDS`) and the environment record (:mod:`.environment`: thread
count, device, PyTorch version, data). :func:`differences` lists what a resume would change; :func:`accept`
refuses the resume with the whole list, or lets through the settings named in ``--allow-changed`` — those are
recorded in ``environment.json`` and ``summary.json`` (``resume_changes``) with the epoch they took effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import ConfigError
from .config import RUNTIME_FIELDS, TrainConfig
from .environment import KEYS

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
