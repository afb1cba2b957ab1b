"""Undo a pruning step that failed half-way: the model, the optimizer and torch-pruning's graph as they were.

A removal touches many objects: torch-pruning replaces parameters and buffers by new, smaller ones
(``setattr`` on their modules), changes layer attributes (``out_channels``, ``num_features``, attention head
sizes), shortens the size lists of its concat / split nodes in place, re-keys unwrapped parameters in its graph
and appends to its pruning history; the optimizer surgery re-points the param groups and moves the sliced state.
If any of it fails — or the pruned model no longer runs, as when a forward hard-codes a width — a half-pruned
model is worse than an error: it cannot be trained, saved or pruned again.

:class:`Snapshot` records, before the step, everything of that which a step can change — by reference, not by
copying tensors: a removal creates new tensors and leaves the old ones intact, so holding the old references is
enough (and cheap: no second copy of the model) — and :meth:`Snapshot.restore` puts it back.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn


def _module_state(module: nn.Module) -> dict[str, Any]:
    """``module.__dict__`` with every container copied one level deep (torch-pruning edits lists in place)."""
    state = {}
    for key, value in vars(module).items():
        state[key] = type(value)(value) if isinstance(value, (list, dict, set)) else value
    return state


class Snapshot:
    """The state of ``model`` (and of ``optimizer`` and torch-pruning's ``graph``, when given) that a pruning step
    can change.

    Args:
        model: the network about to be pruned.
        optimizer: the optimizer (or optimizers) whose param groups and per-parameter state follow the removal,
            or None.
        graph: torch-pruning's ``DependencyGraph`` of the model (its dummy concat / split nodes, parameter names and
            pruning history), or None.
    """

    def __init__(self, model: nn.Module,
                 optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
                 graph: Any = None) -> None:
        modules = list(model.modules())
        if graph is not None:  # torch-pruning's own nodes for cat / split / reshape… are modules outside the model
            seen = {id(m) for m in modules}
            modules += [m for m in graph.module2node if isinstance(m, nn.Module) and id(m) not in seen]
        self._modules = [(m, _module_state(m)) for m in modules]
        # a parameter whose .data was swapped in place keeps its identity: remember the tensor it held
        self._tensors = [(t, t.data, t.grad if isinstance(t, nn.Parameter) else None)
                         for m in modules for t in list(m._parameters.values()) + list(m._buffers.values())
                         if t is not None]
        optimizers = [] if optimizer is None else list(optimizer) if isinstance(optimizer, (list, tuple)) \
            else [optimizer]
        self._optimizers = [(opt, [list(g["params"]) for g in opt.param_groups],
                             {p: dict(st) for p, st in opt.state.items()}) for opt in optimizers]
        self._graph = graph
        if graph is not None:
            self._history = len(graph._pruning_history)
            self._param_to_name = dict(graph._param_to_name)  # torch-pruning internals: tests/test_torch_pruning_internals.py
            self._module2node = dict(graph.module2node)
            self._node_modules = [(node, node.module) for node in graph.module2node.values()]

    def restore(self) -> None:
        """Put everything recorded back (idempotent)."""
        for module, state in self._modules:
            module.__dict__.clear()
            module.__dict__.update({k: type(v)(v) if isinstance(v, (list, dict, set)) else v for k, v in state.items()})
        with torch.no_grad():
            for tensor, data, grad in self._tensors:
                if tensor.data.data_ptr() != data.data_ptr() or tensor.shape != data.shape:
                    tensor.data = data
                if isinstance(tensor, nn.Parameter) and tensor.grad is not grad:
                    tensor.grad = grad
        for opt, groups, state in self._optimizers:
            for group, params in zip(opt.param_groups, groups):
                group["params"][:] = params
            opt.state.clear()
            opt.state.update({p: dict(st) for p, st in state.items()})
        if self._graph is not None:
            del self._graph._pruning_history[self._history:]
            self._graph._param_to_name.clear()
            self._graph._param_to_name.update(self._param_to_name)
            self._graph.module2node.clear()
            self._graph.module2node.update(self._module2node)
            for node, module in self._node_modules:
                node.module = module
