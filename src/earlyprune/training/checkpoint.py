"""Checkpoints that continue a run exactly, written atomically, without pickle.

A checkpoint is a directory ``checkpoints/after-epoch-NNNN/`` (named by the last epoch it holds, from 0) in the
run directory with

* ``model.safetensors`` — the model in its current (possibly pruned) shape, written by :func:`earlyprune.save`:
  weights plus the pruned structure, rebuilt on resume from the original architecture by :func:`earlyprune.load`;
* ``state.json`` + ``state.safetensors`` — optimizer, LR scheduler, gradient scaler, pruner (and policy), data
  order and RNG states, encoded by :mod:`.statecodec` (JSON with references to tensors).

The write protocol, so that a kill at any instant leaves a run that ``--resume`` continues:

1. the files are written into ``checkpoints/.tmp-after-epoch-NNNN/`` (a leftover of a killed write is removed
   first);
2. that directory is renamed to ``checkpoints/after-epoch-NNNN/`` (one ``os.replace``; a complete directory of
   that name that no pointer names — left by a run killed between steps 2 and 3 — is replaced);
3. ``checkpoint.json`` — the pointer, the only thing a resume trusts — is written to a temporary file and
   ``os.replace``-d over the old one: the commit point;
4. older checkpoint directories are removed.

Before step 3 completes, the pointer names the previous checkpoint, which is untouched; a run killed before its
first checkpoint directory is complete is resumed from epoch 0 (:func:`has_checkpoint`). A run whose pointer is
missing (killed between steps 2 and 3 of its first checkpoint, or deleted by hand) continues from its newest
complete, verified checkpoint directory (:func:`recover_pointer`): a resume never discards a valid checkpoint. The pointer may only name
``checkpoints/after-epoch-NNNN`` (or an older run's ``checkpoints/epoch-NNNN``) inside its own run directory. Only one process writes a run directory (rank 0 under
``torchrun``); :mod:`.faults` names the points between these steps for the fault-injection tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.errors import DamagedFileError, EarlyPruneError
from ..io import StructureMismatchError, load, save, sealed
from . import faults, statecodec

FORMAT = "earlyprune.checkpoint"
VERSION = 1
POINTER = "checkpoint.json"
#: what a pointer may name, and the epoch count each name stands for (``epoch-N``: runs from before issue 13)
_NAMES = ((re.compile(r"checkpoints/after-epoch-(\d{4,})"), 1), (re.compile(r"checkpoints/epoch-(\d{4,})"), 0))


class CheckpointError(EarlyPruneError, ValueError):
    """A checkpoint is missing, truncated or from an incompatible version."""


def write_json_atomic(path: Path, doc: Any, *, kill_point: str | None = None) -> None:
    """Write ``doc`` as JSON to ``path`` through a temporary file and ``os.replace``; ``kill_point`` names the
    :mod:`.faults` point between the two."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if kill_point is not None:
        faults.point(kill_point)
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
    faults.point("checkpoint.model")
    doc, tensors = statecodec.encode(state)
    save_file(tensors, str(tmp / "state.safetensors"))
    sealed.seal(tmp / "state.safetensors")
    write_json_atomic(tmp / "state.json", _with_checksum({"format": FORMAT, "version": VERSION, "epoch": epoch,
                                                          "state": doc}))
    faults.point("checkpoint.files")
    final = root / name
    if final.exists():  # written by a killed run but never pointed to: not a checkpoint anyone relies on
        shutil.rmtree(final)
    os.replace(tmp, final)
    faults.point("checkpoint.renamed")
    write_json_atomic(run_dir / POINTER, {"format": FORMAT, "version": VERSION, "epoch": epoch,
                                          "path": f"checkpoints/{name}"}, kill_point="checkpoint.pointer-written")
    faults.point("checkpoint.pointer")
    for old in root.iterdir():
        if old.name != name and old.name.startswith(("after-epoch-", "epoch-")):  # "epoch-N": before issue 13
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale(run_dir: Path) -> None:
    """Remove what killed writes left in ``checkpoints/``: every directory the pointer does not name (all of
    them when there is no pointer yet)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return
    keep = read_pointer(run_dir)["path"].rpartition("/")[2] if has_checkpoint(run_dir) else None
    for entry in root.iterdir():
        if entry.name != keep and entry.name.startswith(("after-epoch-", "epoch-", ".tmp-")):
            shutil.rmtree(entry, ignore_errors=True)


def recover_pointer(run_dir: Path) -> str | None:
    """Without ``checkpoint.json``, point it at the newest complete checkpoint directory whose files verify, and
    return that directory (None when the pointer exists, or no directory is complete: the run restarts at epoch
    0). A pointer that is not a file (a directory in its place) is refused: nothing is removed."""
    path = run_dir / POINTER
    if path.is_file():
        return None
    if path.exists() or path.is_symlink():
        raise CheckpointError(f"{path} is not a file (a directory or a link in its place), so the run's checkpoint "
                              f"pointer is lost; move it away (e.g. mv {path} {path}.damaged) and resume again: the "
                              f"newest complete checkpoint in {run_dir / 'checkpoints'} is then found and verified "
                              f"(nothing has been removed)")
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    found = sorted((d for d in root.iterdir() if d.is_dir() and not d.is_symlink()
                    and _NAMES[0][0].fullmatch(f"checkpoints/{d.name}")), key=lambda d: d.name, reverse=True)
    for directory in found:
        epoch = int(directory.name.rpartition("-")[2]) + 1
        if _complete(directory, epoch):
            target = f"checkpoints/{directory.name}"
            write_json_atomic(path, {"format": FORMAT, "version": VERSION, "epoch": epoch, "path": target})
            return target
    if found:   # renamed into place only once complete: these were damaged afterwards
        raise CheckpointError(f"{run_dir} has no {POINTER} and none of its checkpoints verifies "
                              f"({', '.join(d.name for d in found)}: damaged files); nothing was removed. To start "
                              f"the run over, move {root} away and resume again")
    return None


def _complete(directory: Path, epoch: int) -> bool:
    """Whether a checkpoint directory holds the state after ``epoch`` epochs, every file present and verified."""
    try:
        doc = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        _verify_checksum(doc, directory / "state.json")
        sealed.read_verified(directory / "state.safetensors")
        sealed.read_verified(directory / "model.safetensors")
    except (OSError, ValueError, EarlyPruneError, SafetensorError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("epoch") == epoch and "sha256" in doc


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run has committed a checkpoint (its pointer exists); without one it restarts at epoch 0."""
    return (run_dir / POINTER).is_file()


def read_pointer(run_dir: Path) -> dict[str, Any]:
    path = run_dir / POINTER
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {POINTER}: no epoch of it has finished (`earlyprune train --resume "
                              f"{run_dir}` restarts it at epoch 0)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); the run cannot be resumed") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        doc = doc if isinstance(doc, dict) else {}
        raise CheckpointError(f"{path} is format {doc.get('format')!r} version {doc.get('version')!r}, this "
                              f"earlyprune reads {FORMAT!r} version {VERSION}; resume it with the earlyprune that "
                              f"wrote it")
    _check_pointer(run_dir, doc)
    return doc


def _check_pointer(run_dir: Path, doc: dict[str, Any]) -> None:
    """The pointer may name only ``checkpoints/after-epoch-NNNN`` of its own run (not a path elsewhere, not through
    a link that leaves the run directory), for the epochs it counts."""
    target, epoch = doc.get("path"), doc.get("epoch")
    counts = [int(m.group(1)) + offset for pattern, offset in _NAMES
              if isinstance(target, str) and (m := pattern.fullmatch(target))]
    where = run_dir / POINTER
    if not counts or isinstance(epoch, bool) or not isinstance(epoch, int) or counts[0] != epoch:
        raise CheckpointError(f"{where} names {target!r} for epoch {epoch!r}; a checkpoint pointer may only name "
                              f"checkpoints/after-epoch-NNNN of its own run for the epochs it counts: the run "
                              f"directory is damaged")
    root = run_dir.resolve()
    if not (run_dir / target).resolve().is_relative_to(root):
        raise CheckpointError(f"{where} names {target!r}, which leads outside {run_dir} (a link?); a checkpoint "
                              f"pointer may only name a directory inside its run")


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
    if "sha256" not in doc:   # the rule of earlyprune.load: a file that should carry a checksum and has none
        raise CheckpointError(f"{state_path} has no checksum: earlyprune writes one into every checkpoint, so it was "
                              f"removed by hand (and the state perhaps edited); the run cannot be resumed from it")
    try:
        if not sealed.verify(sealed.read_header(directory / "state.safetensors")):
            raise DamagedFileError(f"{directory / 'state.safetensors'} has no {sealed.CHECKSUM_KEY}: earlyprune "
                                   f"seals every checkpoint, so it was rewritten by hand")
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
    """``state.json``'s own checksum, when it has one (:func:`load_checkpoint` refuses one without)."""
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
