"""The run directory ``<out_dir>/<name>/`` and its plain-JSON files.

``config.json`` (the resolved configuration), ``environment.json`` (threads, device, PyTorch version and data
fingerprint the run computes with, and the changes a resume was allowed to make: :mod:`.environment`,
:mod:`.resume`), ``metrics.jsonl`` (one line per epoch), ``summary.json``, ``model.safetensors`` +
``structure.json`` (the final model, loadable with :func:`earlyprune.load`), and the latest checkpoint
(:mod:`.checkpoint`). Every file is replaced atomically, and the directory itself appears complete: it is
assembled under a hidden name and renamed, so a run directory always holds its ``config.json``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from ..core.errors import ConfigError, DamagedFileError
from .checkpoint import POINTER, write_json_atomic
from .config import TrainConfig

CONFIG, METRICS, SUMMARY, MODEL, STRUCTURE = "config.json", "metrics.jsonl", "summary.json", "model.safetensors", \
    "structure.json"
ENVIRONMENT = "environment.json"
_ENV_FORMAT = "earlyprune.environment"


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


def create_run_dir(cfg: TrainConfig, environment: dict[str, Any]) -> Path:
    """A new run directory holding ``config.json`` and ``environment.json``: ``--name`` as given (refused if it
    holds anything), or a numbered default. Assembled under a hidden name and renamed into place, so a kill
    leaves either no run directory or one that ``--resume`` continues."""
    out = Path(cfg.out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out-dir {out}: cannot create it ({exc.strerror or exc}); choose a directory you can "
                          f"write to") from None
    if cfg.name is not None:
        path = out / cfg.name
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(_taken(path))
        candidates = [path]
    else:
        base = default_name(cfg)
        candidates = [out / (base if i == 1 else f"{base}-{i}") for i in range(1, 10_000)]
    staged = _stage(out, candidates[0].name, cfg, environment)
    for path in candidates:
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            continue
        try:
            if path.is_dir():
                path.rmdir()  # empty: take its place (os.rename cannot replace a directory everywhere)
            os.rename(staged, path)
            return path
        except OSError:  # taken meanwhile by another process
            continue
    shutil.rmtree(staged, ignore_errors=True)
    if cfg.name is not None:
        raise ConfigError(_taken(candidates[0]))
    raise ConfigError(f"too many runs named {candidates[0].name}* in {out}; pass --name")


def _taken(path: Path) -> str:
    if (path / CONFIG).is_file():
        return (f"{path} already holds a run; continue it with `earlyprune train --resume {path}` (a run stopped "
                f"before its first checkpoint restarts at epoch 0) or choose another --name")
    return (f"{path} already holds files but no run (no {CONFIG}), so neither a new run nor --resume can use it: "
            f"choose another --name or move the files away")


def _stage(out: Path, name: str, cfg: TrainConfig, environment: dict[str, Any]) -> Path:
    """``out/.NAME.new-PID/`` with the run's first files; stale ones of killed processes are removed."""
    for stale in out.glob(f".{glob.escape(name)}.new-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staged = out / f".{name}.new-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    write_config(staged, cfg)
    write_environment(staged, environment, [])
    return staged


#: the lock file a training process holds in its run directory (``flock``: released when the process ends,
#: however it ends — a SIGKILL leaves no stale lock)
LOCK = ".lock"
_CLAIMS: dict[Path, int] = {}


def claim(run_dir: Path) -> None:
    """Hold ``run_dir`` for this process until :func:`release_claims` or the process ends. A second process that
    trains the same directory — a ``--resume`` while the run is alive — would overwrite its checkpoints: refused
    with the pid of the one that holds it."""
    if fcntl is None or run_dir.resolve() in _CLAIMS:   # no flock (Windows): the run directory is not shared
        return
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(f"{run_dir} is being trained by another process (pid {owner}): two processes writing one "
                          f"run directory would overwrite each other's checkpoints. Wait for that run to end (or "
                          f"stop it), then `earlyprune train --resume {run_dir}`") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _CLAIMS[run_dir.resolve()] = fd


def release_claims() -> None:
    """Let go of every run directory this process holds (the end of :func:`~earlyprune.training.trainer.train`)."""
    for fd in _CLAIMS.values():
        os.close(fd)   # closing the descriptor drops the flock
    _CLAIMS.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    write_json_atomic(run_dir / CONFIG, jsonable(cfg.to_dict()))


def read_config(run_dir: Path) -> TrainConfig:
    path = run_dir / CONFIG
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory; pass a run directory such as runs/<name>")
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {CONFIG}: it is not a run directory written by `earlyprune train`")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return TrainConfig.from_dict(values, source=str(path))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} cannot be read by this earlyprune ({exc}); the run is incompatible") from None


def merge_resume(stored: TrainConfig, overrides: dict[str, Any], changes: list[dict[str, Any]]) -> TrainConfig:
    """The configuration a resume continues with: the stored one, with the changes earlier resumes were allowed
    to make (``environment.json``) and the ``overrides`` applied."""
    values = stored.to_dict()
    for change in changes:
        if change["setting"] in values:
            values[change["setting"]] = change["now"]
    values.update(overrides)
    return TrainConfig(**values)


def write_environment(run_dir: Path, environment: dict[str, Any], changes: list[dict[str, Any]]) -> None:
    write_json_atomic(run_dir / ENVIRONMENT, {"format": _ENV_FORMAT, "version": 1, "environment": jsonable(environment),
                                              "changes": jsonable(changes)})


def read_environment(run_dir: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(environment, changes)`` of ``environment.json``; ``(None, [])`` for a run that predates it."""
    path = run_dir / ENVIRONMENT
    if not path.is_file():
        return None, []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise DamagedFileError(f"{path} is not JSON; the run directory is damaged") from None
    if not isinstance(doc, dict) or doc.get("format") != _ENV_FORMAT or not isinstance(doc.get("environment"), dict) \
            or not isinstance(doc.get("changes"), list):
        raise DamagedFileError(f"{path} is not an earlyprune environment record; the run directory is damaged")
    return doc["environment"], doc["changes"]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a last line without its newline (an append cut short by a kill) is left
    out."""
    path = run_dir / METRICS
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFileError(f"{path} is not text (byte {exc.start} is not UTF-8); the run directory is "
                               f"damaged") from None
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise DamagedFileError(f"{path} line {i + 1} is not JSON; the run directory is damaged") from None
    if torn.strip():
        try:
            rows.append(json.loads(torn))  # complete, only the newline missing (written by hand?)
        except ValueError:
            pass
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
        raise DamagedFileError(f"{path} is not JSON; the run directory is damaged") from None


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() or (path / POINTER).is_file()
