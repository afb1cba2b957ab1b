"""Save and load pruned models without pickle.

:func:`save` writes one ``.safetensors`` file: the weights (and buffers), plus, in the file's JSON header, the
pruned structure — the original architecture's shapes and torch-pruning's removal history
(:mod:`earlyprune.structure`). :func:`load` builds nothing from the file: it replays the history on the model
*you* built (the original architecture), checks every shape, then loads the tensors. Nothing unpickles.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from . import structure, tracing
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
    return record.to_json(model)


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
    save_model(model, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


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
    _load_weights(model, path)  # shapes and names were checked above
    return model


def _load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """The tensors of ``path`` into ``model``, strictly, with the model's own module versions attached to the state
    dict (``load_state_dict`` hands each module its version; torchvision's MNASNet refuses to load without one).
    Keys the file lacks because ``save_model`` stored tied tensors once are filled through the tie."""
    tensors = load_file(str(path))
    own = model.state_dict()
    state = OrderedDict(tensors)
    state._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {own[k].untyped_storage().data_ptr() for k in tensors if k in own}
    missing = [k for k in missing if own[k].untyped_storage().data_ptr() not in loaded]
    if missing or unexpected:
        raise StructureMismatchError(f"{path} does not hold the tensors of this model (missing {missing[:3]}, "
                                     f"unexpected {unexpected[:3]})")


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
        # traced as the pruning graph was (training mode for auxiliary heads; BatchNorm statistics untouched;
        # through autograd even under no_grad()), with the same guards (earlyprune.tracing)
        graph = tracing.build_graph(model, inputs, train=doc.get("trace") == "train")
        graph.load_pruning_history([[n, out, idxs] for n, out, idxs in history])
    final = structure.signature(model)
    if final != doc["final"]:
        raise StructureMismatchError(f"replaying the structure of {source} gave other shapes than the saved weights "
                                     f"({_diff(doc['final'], final)}); the file or model code has changed")
    structure.adopt(model, doc["original"], doc["example_inputs"], history, trace=doc.get("trace", "eval"))
