"""Checkpoints that continue a run exactly, written atomically, without pickle.

A checkpoint is a directory ``checkpoints/epoch-NNNN/`` in the run directory with

* ``model.safetensors`` — the model in its current (possibly pruned) shape, written by :func:`earlyprune.save`:
  weights plus the pruned structure, rebuilt on resume from the original architecture by :func:`earlyprune.load`;
* ``state.json`` + ``state.safetensors`` — optimizer, LR scheduler, gradient scaler, pruner (and policy), data
  order and RNG states, encoded by :mod:`.statecodec` (JSON with references to tensors).

The directory is complete before ``checkpoint.json`` — the pointer a resume reads — is replaced to name it
(``os.replace`` is atomic), so a run killed at any moment keeps the previous checkpoint. Older checkpoint
directories are removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import DamagedFileError, EarlyPruneError
from .. import sealed
from ..io import StructureMismatchError, load, save
from . import statecodec

FORMAT = "earlyprune.checkpoint"
VERSION = 1
POINTER = "checkpoint.json"


class CheckpointError(EarlyPruneError, ValueError):
    """A checkpoint is missing, truncated or from an incompatible version."""


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, epoch: int, model: nn.Module, state: dict[str, Any]) -> Path:
    """Store the state after ``epoch`` epochs (a count: ``checkpoint.json``'s ``epoch``) and point
    ``checkpoint.json`` at it. The directory is named by the last epoch it holds, numbered from 0 as everywhere a
    person reads epochs: ``checkpoints/after-epoch-0002`` after epochs 0, 1 and 2."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"after-epoch-{epoch - 1:04d}"
    tmp = root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)  # left over by a run killed while writing
    tmp.mkdir()
    save(model, tmp / "model.safetensors")
    doc, tensors = statecodec.encode(state)
    save_file(tensors, str(tmp / "state.safetensors"))
    sealed.seal(tmp / "state.safetensors")
    write_json_atomic(tmp / "state.json", _with_checksum({"format": FORMAT, "version": VERSION, "epoch": epoch,
                                                          "state": doc}))
    final = root / name
    if final.exists():  # written by a killed run but never pointed to: not a checkpoint anyone relies on
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(run_dir / POINTER, {"format": FORMAT, "version": VERSION, "epoch": epoch,
                                          "path": f"checkpoints/{name}"})
    for old in root.iterdir():
        if old.name != name and old.name.startswith(("after-epoch-", "epoch-")):  # "epoch-N": before issue 13
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_pointer(run_dir: Path) -> dict[str, Any]:
    path = run_dir / POINTER
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {POINTER}: it is not a run directory written by `earlyprune train` "
                              f"(or was stopped before its first epoch ended); start a new run instead")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); the run cannot be resumed") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        doc = doc if isinstance(doc, dict) else {}
        raise CheckpointError(f"{path} is format {doc.get('format')!r} version {doc.get('version')!r}, this "
                              f"earlyprune reads {FORMAT!r} version {VERSION}; resume it with the earlyprune that "
                              f"wrote it")
    return doc


def load_checkpoint(run_dir: Path, fresh_model: nn.Module) -> tuple[int, nn.Module, dict[str, Any]]:
    """``(epochs done, model, state)``: the model is ``fresh_model`` (the original architecture) pruned to the
    stored structure with the stored weights."""
    pointer = read_pointer(run_dir)
    directory = run_dir / str(pointer.get("path"))
    state_path = directory / "state.json"
    try:  # every file verified before any is used: state first (cheap), then the model
        doc = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{state_path} is unreadable or not JSON ({type(exc).__name__}: {exc}); the run "
                              f"cannot be resumed from it") from None
    _verify_checksum(doc, state_path)
    try:
        sealed.read_verified(directory / "state.safetensors")
        tensors = load_file(str(directory / "state.safetensors"))
        model = load(directory / "model.safetensors", fresh_model)
    except DamagedFileError as exc:
        raise CheckpointError(f"the checkpoint in {directory} is damaged ({exc}); the run cannot be resumed from "
                              f"it") from None
    except StructureMismatchError as exc:
        raise CheckpointError(f"the checkpoint in {directory} cannot be loaded: {exc}") from None
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"the checkpoint in {directory} is damaged ({type(exc).__name__}: {exc}); "
                              f"the run cannot be resumed from it") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION \
            or doc.get("epoch") != pointer.get("epoch"):
        raise CheckpointError(f"{directory}/state.json does not match {POINTER}; the checkpoint is damaged")
    try:
        state = statecodec.decode(doc["state"], tensors)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{directory}/state.json is damaged ({type(exc).__name__}: {exc})") from None
    return int(pointer["epoch"]), model, state


def _with_checksum(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "sha256": _digest(doc)}


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()


def _verify_checksum(doc: Any, path: Path) -> None:
    """``state.json``'s own checksum (absent in checkpoints written before it existed)."""
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path} is damaged: a JSON {type(doc).__name__}, not an object")
    if "sha256" in doc and doc["sha256"] != _digest({k: v for k, v in doc.items() if k != "sha256"}):
        raise CheckpointError(f"{path} is damaged: its checksum does not match its content")


def rng_state() -> dict[str, Any]:
    """The global random states a training step may draw from (torch CPU and CUDA, Python's ``random``)."""
    import random

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
