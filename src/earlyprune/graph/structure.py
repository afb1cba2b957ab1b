"""The pruned structure of a model: what to replay on a freshly built original to get the same shapes.

Each model that earlyprune prunes gets a :class:`StructureRecord` (kept in a weak map, so the user's model class
is never edited): the parameter and buffer shapes of the original architecture, the shapes of the example
inputs used to trace it, and torch-pruning's pruning history — the list of ``(root layer, output?, indices)``
removals, which replays exactly on a fresh model through the dependency graph. It is plain JSON: nothing on the
load path unpickles.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..core.errors import StructureMismatchError
from ..core.validation import shown
from .masks import plain_state_dict

FORMAT = "earlyprune.structure"
#: 2: files carry a checksum (:mod:`earlyprune.io.sealed`), which load() then requires; 1 (before checksums) is read
#: unverified
VERSION = 2
READABLE_VERSIONS = (1, 2)


def signature(model: nn.Module) -> list[list[Any]]:
    """``[[name, shape], …]`` of every parameter and buffer in the state dict, under the names they have without
    parametrizations (a weight mask changes neither name nor shape of what is saved)."""
    return [[name, list(t.shape)] for name, t in plain_state_dict(model).items()]


def input_spec(example_inputs: Any) -> Any:
    """A JSON description (shapes and dtypes) of example inputs, from which :func:`inputs_from_spec` rebuilds them."""
    if isinstance(example_inputs, torch.Tensor):
        return {"tensor": list(example_inputs.shape), "dtype": str(example_inputs.dtype).removeprefix("torch.")}
    if isinstance(example_inputs, (tuple, list)):
        return {"tuple": [input_spec(x) for x in example_inputs]}
    if isinstance(example_inputs, dict):
        return {"dict": {k: input_spec(v) for k, v in example_inputs.items()}}
    return None  # not describable: load() will ask for example_inputs


def inputs_from_spec(spec: Any) -> Any:
    """Example inputs rebuilt from a spec that :func:`parse_document` checked (random floats, zero integers)."""
    if spec is None:
        return None
    if "tensor" in spec:
        dtype = getattr(torch, spec["dtype"])
        return torch.zeros(spec["tensor"], dtype=dtype) if not dtype.is_floating_point else torch.randn(
            spec["tensor"], generator=torch.Generator().manual_seed(0)).to(dtype)
    if "tuple" in spec:
        parts = [inputs_from_spec(s) for s in spec["tuple"]]
        return None if any(p is None for p in parts) else tuple(parts)
    parts = {k: inputs_from_spec(s) for k, s in spec["dict"].items()}
    return None if any(p is None for p in parts.values()) else parts


#: the most elements example inputs rebuilt from a file may have (2**26: a batch of 64 RGB 224x224 images is 9.6 M);
#: beyond it load() asks for example_inputs= instead of allocating what a header claims
MAX_INPUT_ELEMENTS = 1 << 26
#: dtypes example inputs may have in a file (``getattr(torch, name)`` must give a dtype, not any attribute)
INPUT_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                          "bool"})


def parse_document(doc: Any, where: str) -> dict[str, Any]:
    """Check a structure document read from a file (``where`` names it): its fields, types and bounds — the
    history may remove from each layer at most the channels it had, example inputs at most
    :data:`MAX_INPUT_ELEMENTS` — so that replaying it can neither fail inside torch-pruning nor ask for more work
    or memory than the architecture justifies. Raises :class:`~earlyprune.core.errors.StructureMismatchError`."""

    def bad(what: str) -> StructureMismatchError:
        return StructureMismatchError(f"{where} holds a malformed pruned structure: {what}")

    if not isinstance(doc, dict):
        raise bad(f"a JSON {type(doc).__name__}, not an object")
    if doc.get("format") != FORMAT or doc.get("version") not in READABLE_VERSIONS:
        raise StructureMismatchError(f"{where}: unsupported structure format {doc.get('format')!r} version "
                                     f"{doc.get('version')!r} (this earlyprune reads {FORMAT!r} versions "
                                     f"{', '.join(map(str, READABLE_VERSIONS))})")
    for key in ("original", "final", "history"):
        if not isinstance(doc.get(key), list):
            raise bad(f"'{key}' is missing or not a list")
    original = {_name(e, "original", bad): _shape(e, "original", bad) for e in doc["original"]}
    for entry in doc["final"]:
        name, shape = _name(entry, "final", bad), _shape(entry, "final", bad)
        if name not in original or len(shape) != len(original[name]) or any(
                a > b for a, b in zip(shape, original[name])):
            raise bad(f"final shape of {name!r} {shape} is not a pruned {original.get(name)}")
    _check_spec(doc.get("example_inputs"), bad)
    if doc.get("trace", "eval") not in ("eval", "train"):
        raise bad(f"'trace' is {shown(doc.get('trace'))}, not 'eval' or 'train'")
    widths: dict[str, int] = {}  # layer (or bare parameter) → its largest dimension
    for name, shape in original.items():
        for layer in (name, name.rpartition(".")[0]):
            widths[layer] = max([widths.get(layer, 0), *shape])
    removed: dict[tuple[str, bool], int] = {}
    for i, entry in enumerate(doc["history"]):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], bool) and isinstance(entry[2], list) and entry[2]
                and all(isinstance(j, int) and not isinstance(j, bool) and 0 <= j for j in entry[2])):
            raise bad(f"history entry {i} is not [layer name, true/false, [channel indices ≥ 0]]: "
                      f"{shown(entry)}")
        layer, out, idxs = entry
        width = widths.get(layer)
        if width is None:
            raise bad(f"history entry {i} names layer {layer!r}, which the original architecture does not have")
        removed[layer, out] = removed.get((layer, out), 0) + len(idxs)
        if max(idxs) >= width or removed[layer, out] >= width:
            raise bad(f"history entry {i} removes channels {shown(idxs)} of {layer!r}, which has {width}: more than "
                      f"it ever had ({len(doc['history'])} entries in all)")
    return doc


def _name(entry: Any, key: str, bad: Callable[[str], StructureMismatchError]) -> str:
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
        raise bad(f"an entry of '{key}' is not [name, shape]: {shown(entry)}")
    return entry[0]


def _shape(entry: Any, key: str, bad: Callable[[str], StructureMismatchError]) -> list[int]:
    shape = entry[1]
    if not (isinstance(shape, list) and len(shape) <= 16
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise bad(f"the shape of {entry[0]!r} in '{key}' is not a list of sizes: {shown(shape)}")
    return shape


def _check_spec(spec: Any, bad: Callable[[str], StructureMismatchError], depth: int = 0) -> int:
    """Elements of the example inputs a spec describes, checked (bounded nesting, known dtypes, total size)."""
    if spec is None:
        return 0
    if depth > 4 or not isinstance(spec, dict) or len(spec) < 1:
        raise bad(f"example_inputs is not a tensor / tuple / dict description: {shown(spec)}")
    if "tensor" in spec:
        shape, dtype = spec.get("tensor"), spec.get("dtype")
        if not (isinstance(shape, list) and len(shape) <= 8
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise bad(f"example_inputs has an invalid tensor shape {shown(shape)}")
        if dtype not in INPUT_DTYPES:
            raise bad(f"example_inputs has dtype {shown(dtype)}; one of {', '.join(sorted(INPUT_DTYPES))} expected")
        total = math.prod(shape)
    elif "tuple" in spec and isinstance(spec["tuple"], list):
        total = sum(_check_spec(s, bad, depth + 1) for s in spec["tuple"])
    elif "dict" in spec and isinstance(spec["dict"], dict):
        total = sum(_check_spec(s, bad, depth + 1) for s in spec["dict"].values())
    else:
        raise bad(f"example_inputs is not a tensor / tuple / dict description: {shown(spec)}")
    if total > MAX_INPUT_ELEMENTS:
        raise bad(f"example_inputs of {total:,} elements (limit {MAX_INPUT_ELEMENTS:,}); pass example_inputs= to "
                  f"load() instead")
    return total


@dataclass
class StructureRecord:
    original: list[list[Any]]
    inputs: Any
    earlier: list[list[Any]] = field(default_factory=list)  # history of graphs attached before the current one
    #: "train" when the graph was traced in training mode (auxiliary heads): load() must trace the same way
    trace: str = "eval"
    # the graph doing the pruning, held weakly: it references the model, and a strong reference from this map's
    # value would keep every model ever traced alive; its history is copied after every removal (sync)
    _graph: Any = field(default=None, repr=False)
    _current: list[list[Any]] = field(default_factory=list, repr=False)

    @property
    def graph(self) -> Any:
        return self._graph() if self._graph is not None else None

    @graph.setter
    def graph(self, graph: Any) -> None:
        self._graph = weakref.ref(graph) if graph is not None else None
        self._current = []

    def sync(self) -> None:
        """Copy the live graph's removal history (call after every removal)."""
        graph = self.graph
        if graph is not None:
            self._current = [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in graph.pruning_history()]

    def history(self) -> list[list[Any]]:
        self.sync()
        return self.earlier + [list(entry) for entry in self._current]

    def to_json(self, model: nn.Module) -> dict[str, Any]:
        doc = {"format": FORMAT, "version": VERSION, "original": self.original, "example_inputs": self.inputs,
               "history": self.history(), "final": signature(model)}
        if self.trace != "eval":
            doc["trace"] = self.trace
        return doc


_RECORDS: "weakref.WeakKeyDictionary[nn.Module, StructureRecord]" = weakref.WeakKeyDictionary()


def attach(model: nn.Module, graph: Any, example_inputs: Any, trace: str = "eval") -> StructureRecord:
    """Start (or continue) the record of ``model`` with a new dependency graph that will do the pruning."""
    record = _RECORDS.get(model)
    if record is None:
        record = StructureRecord(original=signature(model), inputs=input_spec(example_inputs))
    else:
        record.earlier = record.history()
    record.graph = graph
    if trace != "eval":
        record.trace = trace
    _RECORDS[model] = record
    return record


def record_of(model: nn.Module) -> StructureRecord | None:
    return _RECORDS.get(model)


def adopt(model: nn.Module, original: list[list[Any]], inputs: Any, history: list[list[Any]],
          trace: str = "eval") -> None:
    """Record that ``model`` (just rebuilt by :func:`earlyprune.load`) carries ``history`` already."""
    _RECORDS[model] = StructureRecord(original=original, inputs=inputs, earlier=list(history), trace=trace)
