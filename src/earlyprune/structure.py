"""The pruned structure of a model: what to replay on a freshly built original to get the same shapes.

Each model that earlyprune prunes gets a :class:`StructureRecord` (kept in a weak map, so the user's model class
is never edited): the parameter and buffer shapes of the original architecture, the shapes of the example
inputs used to trace it, and torch-pruning's pruning history — the list of ``(root layer, output?, indices)``
removals, which replays exactly on a fresh model through the dependency graph. It is plain JSON: nothing on the
load path unpickles.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

FORMAT = "earlyprune.structure"
VERSION = 1


def signature(model: nn.Module) -> list[list[Any]]:
    """``[[name, shape], …]`` of every parameter and buffer in the state dict."""
    return [[name, list(t.shape)] for name, t in model.state_dict().items()]


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
