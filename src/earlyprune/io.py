"""Save and load pruned models without pickle, verified.

:func:`save` writes one ``.safetensors`` file: the weights (and buffers), plus, in the file's JSON header, the
pruned structure — the original architecture's shapes and torch-pruning's removal history
(:mod:`earlyprune.structure`) — and a checksum of the tensor data and of that structure (:mod:`earlyprune.sealed`).
:func:`load` builds nothing from the file: it reads the header with bounds, verifies the checksum, checks the
structure document (types, and a history that removes no more than each layer had), replays the history on the
model *you* built (the original architecture), checks every shape, then loads the tensors. Nothing unpickles, and
every malformed file is a :class:`StructureMismatchError` (:class:`~earlyprune.errors.DamagedFileError` when it is
damaged) that says what was wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from safetensors.torch import load_model, save_model
from torch import nn

from . import sealed, structure
from .errors import DamagedFileError, StructureMismatchError
from .validation import EXAMPLE_INPUTS, MODEL, PATH, InstanceOf, InvalidParameterError, Rule, checked, rule, shown

_KEY = "earlyprune.structure"


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
LOAD_RULES: dict[str, Rule] = {"path": PATH, "model": MODEL,
                               "example_inputs": Rule(EXAMPLE_INPUTS.constraints + rule(None).constraints,
                                                      EXAMPLE_INPUTS.hint)}


@checked(SAVE_RULES)
def save(model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and pruned structure to ``path`` (a ``.safetensors`` file).

    The write is atomic: a temporary file is renamed over ``path`` only once complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {_KEY: json.dumps(structure_json(model))}
    for key, value in (metadata or {}).items():
        if key in (_KEY, sealed.CHECKSUM_KEY) or not isinstance(key, str) or not isinstance(value, str):
            raise InvalidParameterError(f"metadata must map str to str and may not use {_KEY!r} or "
                                        f"{sealed.CHECKSUM_KEY!r}; got {key!r}: {shown(value)}")
        header[key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    save_model(model, str(tmp), metadata=header)
    sealed.seal(tmp)  # the checksum of the tensors and of the structure, verified by load()
    os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates files 0600; give it the mode every other file gets
    os.replace(tmp, path)
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def read_structure(path: str | os.PathLike) -> dict[str, Any]:
    """The structure document stored in a file written by :func:`save`, after the file's header was read with
    bounds and its checksum verified, and the document itself checked (:func:`earlyprune.structure.parse_document`)."""
    return _read(Path(path))[1]


def _read(path: Path) -> tuple[sealed.Header, dict[str, Any]]:
    header = sealed.read_header(path)
    verified = sealed.verify(header)
    if _KEY not in header.metadata:
        raise StructureMismatchError(f"{path} holds no earlyprune structure: write it with earlyprune.save()")
    try:
        doc = json.loads(header.metadata[_KEY])
    except ValueError as exc:
        raise DamagedFileError(f"{path}: its pruned structure is not JSON ({exc})") from None
    doc = structure.parse_document(doc, str(path))
    if not verified and doc["version"] >= 2:  # written with a checksum that is gone
        raise DamagedFileError(f"{path} is damaged: its {sealed.CHECKSUM_KEY} entry is missing")
    return header, doc


def _check_tensors(path: Path, header: sealed.Header, final: list) -> None:
    """The tensors in the file are those of the saved model's final shapes (shared ones stored once)."""
    shapes = {name: tuple(shape) for name, shape in final}
    for name, entry in header.tensors.items():
        if shapes.get(name) != entry.shape:
            raise StructureMismatchError(f"{path}: tensor {name!r} of shape {list(entry.shape)} is not part of the "
                                         f"saved structure (expected {list(shapes[name]) if name in shapes else 'none'})")
    missing = [n for n in shapes if n not in header.tensors and header.metadata.get(n) not in header.tensors]
    if missing:
        raise StructureMismatchError(f"{path} lacks the tensors {', '.join(missing[:3])}"
                                     f"{' …' if len(missing) > 3 else ''} of its saved structure")


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
    path = Path(path)
    header, doc = _read(path)
    _check_tensors(path, header, doc["final"])
    replay(model, doc, example_inputs, source=str(path))
    try:
        load_model(model, str(path), strict=True)  # shapes and names were checked above
    except (RuntimeError, ValueError, OSError) as exc:
        raise StructureMismatchError(f"{path}: its tensors cannot be loaded into the model ({exc})") from None
    return model


def replay(model: nn.Module, doc: dict[str, Any], example_inputs: Any = None, *, source: str = "the record") -> None:
    """Prune a freshly built original ``model`` in place to the structure document ``doc`` (from
    :func:`structure_json` or :func:`read_structure`) — shapes only, the weights stay as they are. Integrations
    call it before loading a state dict saved from a pruned model (Lightning checkpoints, ``save_pretrained``).
    The document is checked first (:func:`earlyprune.structure.parse_document`), wherever it came from."""
    doc = structure.parse_document(doc, source)
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
            raise StructureMismatchError(f"{source} does not describe its example inputs: pass example_inputs=")
        was_training = model.training
        try:  # traced in eval mode (BatchNorm statistics untouched), through autograd even under no_grad()
            with torch.enable_grad():
                graph = tp.DependencyGraph().build_dependency(model.eval(), inputs, verbose=False)
            graph.load_pruning_history([[n, out, idxs] for n, out, idxs in history])
        except Exception as exc:  # noqa: BLE001 - a history that does not fit this model, said as such
            raise StructureMismatchError(
                f"replaying the pruned structure of {source} on the model failed ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); it was saved from another model or its structure was "
                f"altered (the model given may be left partly pruned: build a new one)") from None
        finally:
            model.train(was_training)
    final = structure.signature(model)
    if final != doc["final"]:
        raise StructureMismatchError(f"replaying the structure of {source} gave other shapes than the saved weights "
                                     f"({_diff(doc['final'], final)}); the file or model code has changed")
    structure.adopt(model, doc["original"], doc["example_inputs"], history)
