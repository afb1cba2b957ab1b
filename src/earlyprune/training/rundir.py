"""The run directory ``<out_dir>/<name>/`` and its plain-JSON files.

``config.json`` (the resolved configuration), ``metrics.jsonl`` (one line per epoch), ``summary.json``,
``model.safetensors`` + ``structure.json`` (the final model, loadable with :func:`earlyprune.load`), and the
latest checkpoint (:mod:`.checkpoint`). Every file is replaced atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from .checkpoint import POINTER, write_json_atomic
from .config import RUNTIME_FIELDS, TrainConfig

CONFIG, METRICS, SUMMARY, MODEL, STRUCTURE = "config.json", "metrics.jsonl", "summary.json", "model.safetensors", \
    "structure.json"


def jsonable(value: Any) -> Any:
    """Plain JSON values: tensors become numbers or lists, tuples lists, non-finite floats null."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return jsonable(value.item() if value.numel() == 1 and value.dim() == 0 else value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def default_name(cfg: TrainConfig) -> str:
    raw = f"{cfg.model}-{cfg.dataset.rsplit('/', 1)[-1]}-{cfg.policy}"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", raw).strip("-.") or "run"


def create_run_dir(cfg: TrainConfig) -> Path:
    """A new, empty run directory: ``--name`` as given (refused if it holds a run), or a numbered default."""
    out = Path(cfg.out_dir).expanduser()
    if cfg.name is not None:
        path = out / cfg.name
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"{path} already holds files; continue that run with `earlyprune train --resume {path}` "
                             f"or choose another --name")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = default_name(cfg)
    for i in range(1, 10_000):
        path = out / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ValueError(f"too many runs named {base}* in {out}; pass --name")


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    write_json_atomic(run_dir / CONFIG, jsonable(cfg.to_dict()))


def read_config(run_dir: Path) -> TrainConfig:
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a directory; pass a run directory such as runs/<name>")
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {CONFIG}: it is not a run directory written by `earlyprune train`")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return TrainConfig.from_dict(values, source=str(path))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} cannot be read by this earlyprune ({exc}); the run is incompatible") from None


def merge_resume(stored: TrainConfig, overrides: dict[str, Any], run_dir: Path) -> TrainConfig:
    """The stored configuration with the runtime ``overrides`` applied; any other difference is an error."""
    values = stored.to_dict()
    for key, value in overrides.items():
        if key in RUNTIME_FIELDS or values.get(key) == value:
            values[key] = value
            continue
        flag = "--" + key.replace("_", "-")
        raise ValueError(f"{flag} {value!r} differs from the resumed run's {values.get(key)!r}; --resume continues "
                         f"{run_dir} with its stored configuration: drop {flag}, or start a new run")
    return TrainConfig(**values)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise ValueError(f"{path} line {i + 1} is not JSON; the run directory is damaged") from None
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` (on resume: only the epochs the checkpoint holds)."""
    path = run_dir / METRICS
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(jsonable(row)) + "\n")
    os.replace(tmp, path)


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(jsonable(row)) + "\n")
        f.flush()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(run_dir / SUMMARY, jsonable(summary))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SUMMARY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ValueError(f"{path} is not JSON; the run directory is damaged") from None


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() or (path / POINTER).is_file()
