"""Save and load pruned models without pickle, verified.

:func:`save` writes one ``.safetensors`` file: the weights (and buffers), plus, in the file's JSON header, the
pruned structure — the original architecture's shapes and torch-pruning's removal history
(:mod:`earlyprune.graph.structure`) — and a checksum of the tensor data and of that structure (:mod:`earlyprune.io.sealed`).
:func:`load` builds nothing from the file: it reads the header with bounds, verifies the checksum, checks the
structure document (types, and a history that removes no more than each layer had), replays the history on the
model *you* built (the original architecture), checks every shape, then loads the tensors. Nothing unpickles, and
every malformed file is a :class:`StructureMismatchError` (:class:`~earlyprune.core.errors.DamagedFileError` when it is
damaged) that says what was wrong.

Weights masked by unstructured pruning (:mod:`earlyprune.unstructured`) are stored sparse — the kept values
and the mask, in CSR or as a bit mask, whichever is smaller per tensor (:mod:`earlyprune.unstructured.sparse_io`)
— and :func:`load` puts the same masks back on, so a saved sparse model is restored exactly and trains on.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from . import sealed
from ..graph import structure, tracing
from ..core.errors import DamagedFileError, StructureMismatchError
from ..unstructured import sparse_io
from ..graph.masks import MaskedWeights, mask_of, masked_counts, plain_state_dict
from ..core.validation import EXAMPLE_INPUTS, MODEL, PATH, InstanceOf, InvalidParameterError, Rule, checked, rule, shown

_KEY = "earlyprune.structure"


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
LOAD_RULES: dict[str, Rule] = {"path": PATH, "model": MODEL,
                               "example_inputs": Rule(EXAMPLE_INPUTS.constraints + rule(None).constraints,
                                                      EXAMPLE_INPUTS.hint)}


@checked(SAVE_RULES)
def save(model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and pruned structure to ``path`` (a ``.safetensors`` file).

    The write is atomic: a temporary file is renamed over ``path`` only once complete.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidParameterError(f"save() writes a file, but {path} is a directory: give a file path such as "
                                    f"{path / 'model.safetensors'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {_KEY: json.dumps(structure_json(model))}
    for key, value in (metadata or {}).items():
        if key in (_KEY, sealed.CHECKSUM_KEY) or not isinstance(key, str) or not isinstance(value, str):
            raise InvalidParameterError(f"metadata must map str to str and may not use {_KEY!r} or "
                                        f"{sealed.CHECKSUM_KEY!r}; got {key!r}: {shown(value)}")
        header[key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    counts = masked_counts(model)
    try:
        if counts:
            tensors, masks_meta = _sparse_tensors(model, set(counts))
            header[sparse_io.MASKS_KEY] = json.dumps(masks_meta)
            save_file(tensors, str(tmp), metadata=header)
        else:
            save_model(model, str(tmp), metadata=header)
        sealed.seal(tmp)  # the checksum of the tensors and of the structure, verified by load()
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates files 0600; give it the mode every other file gets
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)   # never leave a half-written temporary file behind
        raise
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
    """The structure document stored in a file written by :func:`save`, after the file's header was read with
    bounds and its checksum verified, and the document itself checked (:func:`earlyprune.graph.structure.parse_document`)."""
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


def _check_tensors(path: Path, header: sealed.Header, final: list, masks: dict[str, Any] | None = None) -> None:
    """The tensors in the file are those of the saved model's final shapes (shared ones stored once); a masked
    weight is stored as its sparse components instead, declared with the final shape."""
    shapes = {name: tuple(shape) for name, shape in final}
    components: set[str] = set()
    for name, meta in (masks or {}).items():
        if name not in shapes or tuple(meta.get("shape", ())) != shapes[name] \
                or meta.get("encoding") not in sparse_io.ENCODINGS:
            raise StructureMismatchError(f"{path}: masked weight {name!r} ({shown(meta)}) is not part of the saved "
                                         f"structure")
        del shapes[name]
        components.update(sparse_io.component_names(name, meta))
    missing_parts = sorted(components - set(header.tensors))
    if missing_parts:
        raise StructureMismatchError(f"{path} lacks the tensors {', '.join(missing_parts[:3])} of its masked weights")
    for name, entry in header.tensors.items():
        if name in components:
            continue
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
    masks = _read_masks(header)
    _check_tensors(path, header, doc["final"], masks)
    replay(model, doc, example_inputs, source=str(path))
    _check_dtypes(path, header, model)
    try:
        if masks is None:
            _load_weights(model, path)  # shapes and names were checked above
        else:  # weight masks: stored sparse; the same masks go back on
            _load_sparse(path, model, masks)
    except (RuntimeError, ValueError, OSError) as exc:
        if isinstance(exc, StructureMismatchError):
            raise
        raise StructureMismatchError(f"{path}: its tensors cannot be loaded into the model ({exc})") from None
    return model


#: safetensors dtypes by kind: a tensor stored as another kind than the model's is not the model's
_KINDS = {**{d: "floating point" for d in ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")},
          **{d: "integer" for d in ("U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64")}, "BOOL": "boolean"}


def _kind(dtype: torch.dtype) -> str | None:
    if dtype.is_complex:
        return None
    return "floating point" if dtype.is_floating_point else "boolean" if dtype == torch.bool else "integer"


def _check_dtypes(path: Path, header: sealed.Header, model: nn.Module) -> None:
    """Each stored tensor is of the kind (floating point, integer, boolean) of the model's tensor it loads into:
    an integer tensor would otherwise be converted into weights of any size (a file re-sealed after its dtype
    was changed loaded weights around ±1e9)."""
    own = model.state_dict()
    for name, entry in header.tensors.items():
        if name not in own or _kind(own[name].dtype) is None:
            continue
        stored, wanted = _KINDS.get(entry.dtype), _kind(own[name].dtype)
        if stored != wanted:
            raise StructureMismatchError(f"{path}: tensor {name!r} is stored as {entry.dtype} ({stored or 'unknown'}) "
                                         f"but the model's is {own[name].dtype} ({wanted}): the file was altered "
                                         f"after earlyprune wrote it")


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
    call it before loading a state dict saved from a pruned model (Lightning checkpoints, ``save_pretrained``).
    The document is checked first (:func:`earlyprune.graph.structure.parse_document`), wherever it came from."""
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
        try:  # traced as the pruning graph was (training mode for auxiliary heads; BatchNorm statistics untouched;
            # through autograd even under no_grad()), with the same guards (earlyprune.graph.tracing)
            graph = tracing.build_graph(model, inputs, train=doc.get("trace") == "train")
            graph.load_pruning_history([[n, out, idxs] for n, out, idxs in history])
        except Exception as exc:  # noqa: BLE001 - a history that does not fit this model, said as such
            raise StructureMismatchError(
                f"replaying the pruned structure of {source} on the model failed ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); it was saved from another model or its structure was "
                f"altered (the model given may be left partly pruned: build a new one)") from None
    final = structure.signature(model)
    if final != doc["final"]:
        raise StructureMismatchError(f"replaying the structure of {source} gave other shapes than the saved weights "
                                     f"({_diff(doc['final'], final)}); the file or model code has changed")
    structure.adopt(model, doc["original"], doc["example_inputs"], history, trace=doc.get("trace", "eval"))


def _read_masks(header: sealed.Header) -> dict[str, Any] | None:
    """The masked weights' entry of the header (None for a file without weight masks)."""
    if sparse_io.MASKS_KEY not in header.metadata:
        return None
    try:
        masks = json.loads(header.metadata[sparse_io.MASKS_KEY])
    except ValueError as exc:
        raise DamagedFileError(f"{header.path}: its weight-mask entry is not JSON ({exc})") from None
    if not isinstance(masks, dict) or not all(isinstance(v, dict) for v in masks.values()):
        raise StructureMismatchError(f"{header.path}: its weight-mask entry is not a map of masked weights")
    return masks


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
