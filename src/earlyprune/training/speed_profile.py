"""``--speed-profile FILE``: what a run measured to decide its model, recorded once and re-used, so that a re-run
with measured settings gives the same model.

The measured options — ``--target latency`` (the step-time predictor), ``--round-to auto`` (the multiple chosen),
``--precision / --channels-last measure`` and ``--time-budget`` (the cost of the dense epochs and of timing the
gain) — decide the pruned structure from timings, and timings vary with the machine's load: two runs of one
command can differ. A resume already re-uses its own run's measurements; a profile carries them to a new run. The
first run given ``--speed-profile FILE`` measures and writes the file when it ends; every later run given the same
file reads it and measures none of it. A profile belongs to one model, batch size, device and PyTorch: a run that
differs in one of them is refused, naming the difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .checkpoint import write_json_atomic

FORMAT = "earlyprune.speed-profile"
VERSION = 1
#: what a profile must share with the run that reads it (the measurements describe that setting)
KEYS = ("model", "model_args", "batch_size", "device", "torch", "threads")


def identity(cfg: Any, environment: dict[str, Any]) -> dict[str, Any]:
    """The setting a profile's timings were taken in."""
    return {"model": cfg.model, "model_args": dict(cfg.model_args), "batch_size": cfg.batch_size,
            "device": environment.get("device"), "torch": environment.get("torch"),
            "threads": environment.get("threads")}


def read(path: str | os.PathLike, setting: dict[str, Any]) -> dict[str, Any] | None:
    """The profile at ``path`` (None if there is none yet); refused if unreadable or taken in another setting."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise ConfigError(f"--speed-profile {path} is not a file; give the path of a JSON file (it is written by "
                          f"the first run that uses it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"--speed-profile {path} cannot be read ({exc}); delete it to measure again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"--speed-profile {path} is not a speed profile (written by earlyprune train "
                          f"--speed-profile); give another path or delete it")
    if data.get("version") != VERSION:
        raise ConfigError(f"--speed-profile {path} has version {data.get('version')!r}; this earlyprune reads "
                          f"version {VERSION}: delete it to measure again")
    stored = data.get("setting", {})
    diffs = [f"{k}: profile {stored.get(k)!r}, run {setting[k]!r}" for k in KEYS if stored.get(k) != setting[k]]
    if diffs:
        raise ConfigError(f"--speed-profile {path} was measured in another setting ({'; '.join(diffs)}): its timings "
                          f"do not describe this run; use another file (a new path measures and writes one)")
    return data


def write(path: str | os.PathLike, setting: dict[str, Any], *, speed: dict[str, Any] | None,
          round_to: dict[str, Any] | None, predictor: dict[str, Any] | None,
          time_budget: dict[str, Any] | None) -> Path:
    """Write the profile atomically (a temporary file renamed over ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, "setting": setting, "speed": speed, "round_to": round_to,
            "predictor": predictor, "time_budget": time_budget}
    write_json_atomic(path, data)
    return path


__all__ = ["FORMAT", "KEYS", "VERSION", "identity", "read", "write"]
