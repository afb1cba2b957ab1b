"""Optimizer-state surgery: keep an optimizer valid across a physical channel removal.

torch-pruning replaces every pruned weight by a **new** ``nn.Parameter`` and leaves the optimizer pointing at the
old ones, with momentum / Adam moments of the old shapes (its users' most recurring complaint: "the loss stops
decreasing after pruning"). Around
each removal we therefore

1. record every parameter of the touched layers and its per-parameter optimizer state shaped like it
   (SGD ``momentum_buffer``, Adam/AdamW ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, RMSprop ``square_avg``,
   Adagrad ``sum``, …);
2. slice that state **with torch-pruning's own pruning functions**, applied to a throw-away structural copy of
   each layer whose parameters are the state tensors — so the state is cut exactly as the weights are, for
   every layer type torch-pruning supports (convolutions, depthwise, linear, norms, attention, bare
   parameters), with no per-layer slicing rules of our own;
3. after the real removal, re-point every param group to the new parameters and move the sliced state over.

Scalar state (``step``) is kept as is. ``.grad`` is sliced by torch-pruning itself. LR schedulers and
``torch.amp.GradScaler`` hold the optimizer, not its parameters, and keep working.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from ..core.errors import StructureMismatchError
from ..core.validation import InvalidParameterError


def check_covers(model: nn.Module, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer]) -> None:
    """Refuse an ``optimizer`` (or list of them) that does not hold every trainable parameter of ``model``: pruning
    replaces the parameters of every pruned layer, and only those the optimizer holds are re-pointed — an optimizer
    built over another model (or before the model was replaced) would train nothing and be pruned anyway."""
    optimizers = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
    held = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    missing = [name for name, p in trainable if id(p) not in held]
    if not missing:
        return
    if len(missing) == len(trainable):
        raise InvalidParameterError(
            f"optimizer holds none of the model's {len(trainable)} trainable parameters (built for another model, "
            f"or before the model was rebuilt?): build it from this model, e.g. torch.optim.SGD(model.parameters(), "
            f"lr=...)")
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    raise InvalidParameterError(
        f"optimizer lacks {len(missing)} of the model's {len(trainable)} trainable parameters ({shown}): pruning "
        f"replaces the parameters of pruned layers and re-points only those the optimizer holds — add them to a "
        f"param group, or set requires_grad=False on parameters that must not train")


def check_state(optimizer: torch.optim.Optimizer, state_dict: Any) -> None:
    """Refuse a saved optimizer ``state_dict`` that does not fit ``optimizer``'s parameters: other group sizes, or
    a per-parameter tensor (momentum, Adam moments…) of another shape than its parameter — which
    ``load_state_dict`` would accept and the first step would broadcast or fail on. Raises
    :class:`~earlyprune.StructureMismatchError` (a ``ValueError``)."""
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list) \
            or not isinstance(state_dict.get("state"), dict):
        raise StructureMismatchError("the optimizer state is not a torch.optim state_dict (param_groups, state)")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in state_dict["param_groups"] for i in group.get("params", [])]
    if len(ids) != len(params):
        raise StructureMismatchError(f"the optimizer state holds {len(ids)} parameters, the optimizer {len(params)}")
    for i, p in zip(ids, params):
        for key, value in state_dict["state"].get(i, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise StructureMismatchError(f"the optimizer state's {key!r} of parameter {i} has shape "
                                             f"{list(value.shape)}, the parameter {list(p.shape)}")


def _shadow(module: nn.Module, replace: dict[int, torch.Tensor]) -> nn.Module:
    """A copy of ``module`` sharing no mutable containers, with parameters swapped for ``replace[id(param)]``."""
    clone = copy.copy(module)  # new __dict__, but its values are shared: copy every mutable container
    for key, value in vars(module).items():
        if isinstance(value, (list, dict, set)):
            clone.__dict__[key] = copy.copy(value)
    clone._parameters = {
        name: (nn.Parameter(replace[id(p)], requires_grad=False) if p is not None and id(p) in replace else p)
        for name, p in module._parameters.items()
    }
    clone._buffers = dict(module._buffers)
    clone._modules = {name: (_shadow(sub, replace) if sub is not None else None)
                      for name, sub in module._modules.items()}
    return clone


def _named_params(target: Any) -> list[tuple[str, nn.Parameter]]:
    if isinstance(target, nn.Parameter):
        return [("", target)]
    return list(target.named_parameters())


def _call_handler(dep: Any, target: Any, idxs: list[int]) -> Any:
    handler = dep.handler
    if hasattr(handler, "__self__"):
        # torch-pruning internal: the pruner object behind a bound handler reads its pruning_dim, which
        # Dependency.__call__ sets before calling it — we call handlers directly (tests/test_torch_pruning_internals.py)
        handler.__self__.pruning_dim = dep.target.pruning_dim
    return handler(target, idxs)


class StateSurgery:
    """Slices optimizer state for one torch-pruning group; use :meth:`prepare` before and :meth:`finish`
    after ``group.prune()``."""

    def __init__(self, optimizer: torch.optim.Optimizer | None) -> None:
        self.optimizer = optimizer
        self._managed = ({id(p) for g in optimizer.param_groups for p in g["params"]}
                         if optimizer is not None else set())

    def prepare(self, tp_group: Any, locate: Any) -> "_PendingSurgery":
        """Record and pre-slice the state of every optimizer parameter that ``tp_group`` will replace.

        ``locate(target, param)`` must return a callable giving the parameter that replaces ``param`` (a
        parameter of layer ``target``) after pruning.
        """
        # only layers owning optimizer parameters are shadowed: running a handler on anything else (a concat
        # op keeps its offsets in a list) could touch the real graph
        targets: list[Any] = []
        old: list[tuple[nn.Parameter, Any]] = []
        for item in tp_group:
            target = item.dep.target.module
            if not isinstance(target, (nn.Module, nn.Parameter)) or any(t is target for t in targets):
                continue
            owned = [p for _, p in _named_params(target) if id(p) in self._managed]
            if owned:
                targets.append(target)
                old.extend((p, locate(target, p)) for p in owned)
        sliced: dict[int, dict[str, torch.Tensor]] = {id(p): {} for p, _ in old}
        if self.optimizer is not None and old:
            keys = {k for p, _ in old for k, v in self.optimizer.state.get(p, {}).items()
                    if torch.is_tensor(v) and v.shape == p.shape and v.dim() > 0}
            for key in sorted(keys):
                replace = {id(p): self.optimizer.state[p][key] for p, _ in old
                           if key in self.optimizer.state.get(p, {}) and self.optimizer.state[p][key].shape == p.shape}
                shadows = {id(t): (nn.Parameter(replace[id(t)], requires_grad=False) if id(t) in replace else t)
                           if isinstance(t, nn.Parameter) else _shadow(t, replace) for t in targets}
                for item in tp_group:
                    t = item.dep.target.module
                    if id(t) not in shadows:
                        continue
                    out = _call_handler(item.dep, shadows[id(t)], list(item.idxs))
                    if isinstance(t, nn.Parameter):
                        shadows[id(t)] = out
                for target in targets:
                    shadow = shadows[id(target)]
                    new_named = dict(_named_params(shadow))
                    for name, p in _named_params(target):
                        if id(p) in replace:
                            sliced[id(p)][key] = new_named[name].detach()
        return _PendingSurgery(self, old, sliced)


class _PendingSurgery:
    def __init__(self, surgery: StateSurgery, old: list, sliced: dict[int, dict[str, torch.Tensor]]) -> None:
        self.surgery, self.old, self.sliced = surgery, old, sliced

    def finish(self) -> int:
        """Re-point the optimizer to the new parameters and install the sliced state; returns how many moved."""
        opt = self.surgery.optimizer
        replaced: dict[int, nn.Parameter] = {}
        for p, find_new in self.old:
            new = find_new()
            if new is p:
                continue
            replaced[id(p)] = new
            if opt is not None:
                state = opt.state.pop(p, None)
                if state:
                    new_state: dict[str, Any] = {}
                    for key, value in state.items():
                        if key in self.sliced[id(p)]:
                            new_state[key] = self.sliced[id(p)][key].to(value.dtype)
                        elif torch.is_tensor(value) and value.dim() > 0 and value.shape != new.shape:
                            warnings.warn(f"optimizer state {key!r} of shape {tuple(value.shape)} is not shaped like "
                                          f"its parameter; it was reset after pruning", stacklevel=4)
                        else:
                            new_state[key] = value
                    opt.state[new] = new_state
        if opt is not None and replaced:
            for group in opt.param_groups:
                group["params"][:] = [replaced.get(id(q), q) for q in group["params"]]
            self.surgery._managed = {id(q) for g in opt.param_groups for q in g["params"]}
        return len(replaced)
