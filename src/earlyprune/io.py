"""Save and load pruned models without pickle.

:func:`save` writes one ``.safetensors`` file: the weights (and buffers), plus, in the file's JSON header, the
pruned structure — the original architecture's shapes and torch-pruning's removal history
(:mod:`earlyprune.structure`). :func:`load` builds nothing from the file: it replays the history on the model
*you* built (the original architecture), checks every shape, then loads the tensors. Nothing unpickles.

Weights masked by unstructured pruning (:mod:`earlyprune.unstructured`) are stored sparse — the kept values
and the mask, in CSR or as a bit mask, whichever is smaller per tensor (:mod:`earlyprune.unstructured.sparse_io`)
— and :func:`load` puts the same masks back on, so a saved sparse model is restored exactly and trains on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from . import structure
from .unstructured import sparse_io
from .unstructured.masks import MaskedWeights, mask_of, masked_counts, plain_state_dict
from .validation import MODEL, PATH, InstanceOf, Rule, checked, rule

_KEY = "earlyprune.structure"


class StructureMismatchError(ValueError):
    """The file was not saved from this architecture (or is not an earlyprune file)."""


def structure_json(model: nn.Module, example_inputs: Any = None) -> dict[str, Any]:
    """The structure document of ``model`` (its pruning history on the original architecture)."""
    record = structure.record_of(model)
    if record is None:  # never pruned by earlyprune: the original is the model itself
        record = structure.StructureRecord(original=structure.signature(model),
                                           inputs=structure.input_spec(example_inputs))
    doc = record.to_json(model)
    counts = masked_counts(model)
    if counts:  # weight-level pruning on top of (or instead of) removed channels
        doc["masks"] = {name: {"kept": kept, "entries": entries} for name, (kept, entries) in counts.items()}
    return doc


#: the arguments' rules of :func:`save` and :func:`load`
SAVE_RULES: dict[str, Rule] = {"model": MODEL, "path": PATH,
                               "metadata": rule(InstanceOf(dict, "a dict of str to str"), None)}
LOAD_RULES: dict[str, Rule] = {"path": PATH, "model": MODEL}


@checked(SAVE_RULES)
def save(model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and pruned structure to ``path`` (a ``.safetensors`` file).

    The write is atomic: a temporary file is renamed over ``path`` only once complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {_KEY: json.dumps(structure_json(model))}
    for key, value in (metadata or {}).items():
        if key == _KEY or not isinstance(value, str):
            raise ValueError(f"metadata must map str to str and may not use {_KEY!r}")
        header[key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    counts = masked_counts(model)
    if counts:
        tensors, masks_meta = _sparse_tensors(model, set(counts))
        header[sparse_io.MASKS_KEY] = json.dumps(masks_meta)
        save_file(tensors, str(tmp), metadata=header)
    else:
        save_model(model, str(tmp), metadata=header)
    os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates files 0600; give it the mode every other file gets
    os.replace(tmp, path)
    return path


def _sparse_tensors(model: nn.Module, masked: set[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a masked model's file: dense entries copied as they are, masked weights encoded sparse."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for name, value in plain_state_dict(model).items():
        if name in masked:
            module_name, _, attr = name.rpartition(".")
            mask = mask_of(model.get_submodule(module_name) if module_name else model, attr)
            parts, meta[name] = sparse_io.encode(name, value, mask.keep)  # type: ignore[union-attr]
            tensors.update(parts)
        else:  # copies: safetensors refuses tensors that share memory (tied weights)
            tensors[name] = value.detach().cpu().clone()
    return tensors, meta


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def read_structure(path: str | os.PathLike) -> dict[str, Any]:
    """The structure document stored in a file written by :func:`save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise StructureMismatchError(f"{path} is not a readable safetensors file ({exc})") from exc
    if _KEY not in meta:
        raise StructureMismatchError(f"{path} holds no earlyprune structure: write it with earlyprune.save()")
    doc = json.loads(meta[_KEY])
    if doc.get("format") != structure.FORMAT or doc.get("version") != structure.VERSION:
        raise StructureMismatchError(f"{path}: unsupported structure format {doc.get('format')!r} "
                                     f"version {doc.get('version')!r}")
    return doc


def _diff(expected: list, actual: list, limit: int = 3) -> str:
    exp, act = {n: s for n, s in expected}, {n: s for n, s in actual}
    lines = [f"missing {n}" for n in exp if n not in act][:limit]
    lines += [f"unexpected {n}" for n in act if n not in exp][:limit]
    lines += [f"{n}: file {exp[n]} vs model {act[n]}" for n in exp if n in act and exp[n] != act[n]][:limit]
    return "; ".join(lines[: 2 * limit])


@checked(LOAD_RULES)
def load(path: str | os.PathLike, model: nn.Module, example_inputs: Any = None) -> nn.Module:
    """Prune a freshly built original ``model`` to the structure stored in ``path`` and load its weights.

    Args:
        path: a file written by :func:`save`.
        model: a new instance of the original (unpruned) architecture; modified in place and returned.
        example_inputs: inputs to trace the model with; by default rebuilt from the shapes stored in the file.
    """
    doc = read_structure(path)
    replay(model, doc, example_inputs, source=str(path))
    masks = _read_masks(path)
    if masks is None:
        load_model(model, str(path), strict=True)  # shapes and names were checked above
    else:  # weight masks: stored sparse; the same masks go back on
        _load_sparse(path, model, masks)
    return model


def replay(model: nn.Module, doc: dict[str, Any], example_inputs: Any = None, *, source: str = "the record") -> None:
    """Prune a freshly built original ``model`` in place to the structure document ``doc`` (from
    :func:`structure_json` or :func:`read_structure`) — shapes only, the weights stay as they are. Integrations
    call it before loading a state dict saved from a pruned model (Lightning checkpoints, ``save_pretrained``)."""
    if doc.get("format") != structure.FORMAT or doc.get("version") != structure.VERSION:
        raise StructureMismatchError(f"{source}: unsupported structure format {doc.get('format')!r} "
                                     f"version {doc.get('version')!r}")
    current = structure.signature(model)
    if current != doc["original"]:
        hint = _diff(doc["original"], current)
        raise StructureMismatchError(
            f"{source} was saved from a different architecture than the model given ({hint}); build the same "
            f"original (unpruned) model the file was trained from and pass that")
    history = doc["history"]
    if history:
        inputs = example_inputs if example_inputs is not None else structure.inputs_from_spec(doc["example_inputs"])
        if inputs is None:
            raise ValueError(f"{source} does not describe its example inputs: pass example_inputs=")
        was_training = model.training
        try:  # traced in eval mode (BatchNorm statistics untouched), through autograd even under no_grad()
            with torch.enable_grad():
                graph = tp.DependencyGraph().build_dependency(model.eval(), inputs, verbose=False)
            graph.load_pruning_history([[n, out, idxs] for n, out, idxs in history])
        finally:
            model.train(was_training)
    final = structure.signature(model)
    if final != doc["final"]:
        raise StructureMismatchError(f"replaying the structure of {source} gave other shapes than the saved weights "
                                     f"({_diff(doc['final'], final)}); the file or model code has changed")
    structure.adopt(model, doc["original"], doc["example_inputs"], history)


def _read_masks(path: Path | str) -> dict[str, Any] | None:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[sparse_io.MASKS_KEY]) if sparse_io.MASKS_KEY in meta else None


def _load_sparse(path: Path | str, model: nn.Module, masks: dict[str, Any]) -> None:
    """Load a file with sparse-encoded masked weights: dense values into the plain model, then the masks on."""
    with safe_open(str(path), framework="pt") as f:
        stored = {key: f.get_tensor(key) for key in f.keys()}
    state: dict[str, torch.Tensor] = {}
    keep: dict[str, torch.Tensor] = {}
    components = set()
    for name, meta in masks.items():
        try:
            state[name], keep[name] = sparse_io.decode(name, stored, meta)
        except (ValueError, KeyError, AttributeError) as exc:
            raise StructureMismatchError(f"{path}: masked weight {name!r} cannot be decoded ({exc})") from None
        components.update(sparse_io.component_names(name, meta))
    state.update({k: v for k, v in stored.items() if k not in components})
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise StructureMismatchError(f"{path} does not match the model: missing {list(missing)[:3]}, unexpected "
                                     f"{list(unexpected)[:3]}")
    MaskedWeights(model).apply(keep)
