"""Can every channel group be narrowed without breaking the model? Asked once, before training, on a copy.

A forward that fixes a width in its code (``x.view(b, 64, -1)``, torchvision ViT's ``hidden_dim``, an attention
reshape with a hard-coded head size) runs fine dense and breaks at the first pruning step — possibly after many
dense epochs. :func:`check_prunable` finds it in the first seconds instead: on a deep copy of the model it removes
one step of channels from every group that the selection could narrow (the step it would use: ``round_to``,
convolution groups, attention heads), through torch-pruning's own handlers, and runs the example inputs. If that
fails, the groups are narrowed in halves to find the ones to blame, and the error names them with the
``ignored_layers=`` that keeps them whole. The model itself is never touched (the rollback of a removal that
fails later anyway is the engine's).

All removals of one trial are computed from the original numbering and applied once per layer and dimension,
so channels that meet in a concatenation are cut consistently without updating torch-pruning's graph.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from ..core.batch import call_model
from ..core.errors import UnprunableGroupsError
from ..graph.groups import ChannelGroups
from .optimizer_state import _call_handler


def narrowing(groups: ChannelGroups, min_channels: int = 1, round_to: int = 1) -> dict[int, list[int]]:
    """Channels (current numbering) to remove from each group for the check: down to the next kept width the
    selection could produce (a multiple of the group's step, at least its minimum); groups that cannot lose
    any are left out."""
    out: dict[int, list[int]] = {}
    for g in groups:
        step = math.lcm(round_to, g.unit_size, g.width_multiple)
        keep_min = max(math.ceil(min_channels / step) * step, step)
        kept = (g.width - 1) // step * step
        if kept < keep_min or kept <= 0:
            continue
        units = g.units()  # (n_units, unit_size): channels that go together
        out[g.index] = sorted(units[len(units) - (g.width - kept) // g.unit_size:].reshape(-1).tolist())
    return out


def _narrowed_copy(groups: ChannelGroups, plan: dict[int, list[int]]) -> nn.Module:
    """A deep copy of the model with ``plan``'s channels removed."""
    model = groups.model
    clone = copy.deepcopy(model)
    modules = dict(zip(map(id, model.modules()), clone.modules()))
    # torch-pruning internal: the graph's names of bare parameters (tests/test_torch_pruning_internals.py)
    param_names = groups.graph._param_to_name
    # every (layer, handler) once, with the union of its indices in the original numbering
    cuts: dict[tuple[int, Any], tuple[Any, Any, set[int]]] = {}
    for index, idxs in plan.items():
        for item in groups.tp_group(groups[index], idxs):
            target = item.dep.target.module
            key = (id(target), item.dep.handler)
            if key not in cuts:
                cuts[key] = (item.dep, target, set())
            cuts[key][2].update(int(i) for i in item.idxs)
    for dep, target, idxs in cuts.values():
        if isinstance(target, nn.Parameter):
            name = param_names.get(target)
            if name is None:
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = clone.get_submodule(parent_name) if parent_name else clone
            setattr(parent, attr, _call_handler(dep, getattr(parent, attr), sorted(idxs)))
        elif id(target) in modules:  # layers of the model; torch-pruning's own op nodes need no cut
            _call_handler(dep, modules[id(target)], sorted(idxs))
    return clone


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (the machine's limit, not the model's shape)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


class _NoMemory(Exception):
    """A trial ran out of memory: it says nothing about the groups."""


def _trial(groups: ChannelGroups, plan: dict[int, list[int]]) -> Exception | None:
    """None if the model still runs on the example inputs with ``plan`` removed, else the error (an allocation
    failure raises :class:`_NoMemory`: it must not be blamed on the groups)."""
    try:
        clone = _narrowed_copy(groups, plan)
        with torch.no_grad():
            call_model(clone.eval(), groups.example_inputs)
    except Exception as exc:  # noqa: BLE001 - the error is the answer
        if out_of_memory(exc):
            raise _NoMemory(  # internal: caught by the caller (an out-of-memory trial leaves the groups unchecked)
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
        return exc
    return None


def _blame(groups: ChannelGroups, plan: dict[int, list[int]], error: Exception
           ) -> list[tuple[tuple[int, ...], Exception]]:
    """The smallest sets of groups whose narrowing breaks the model (halving; a set whose halves both run
    breaks only together)."""
    keys = sorted(plan)
    if len(keys) == 1:
        return [((keys[0],), error)]
    found = []
    for half in (keys[: len(keys) // 2], keys[len(keys) // 2:]):
        sub = {k: plan[k] for k in half}
        err = _trial(groups, sub)
        if err is not None:
            found += _blame(groups, sub, err)
    return found or [(tuple(keys), error)]


def layer_expression(name: str) -> str:
    """``"blocks.0.attn.qkv"`` → ``"model.blocks[0].attn.qkv"`` (how a user reaches the layer)."""
    return "model" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in name.split(".")) \
        if re.fullmatch(r"[\w.]+", name) else repr(name)


def check_prunable(groups: ChannelGroups, *, min_channels: int = 1, round_to: int = 1) -> None:
    """Raise :class:`~earlyprune.core.errors.UnprunableGroupsError` naming the groups that cannot be narrowed without
    breaking the model's forward on the example inputs (checked on a copy; the model is not modified). A model
    that cannot be copied is not checked (a warning says so)."""
    plan = narrowing(groups, min_channels, round_to)
    if not plan:
        return
    try:
        error = _trial(groups, plan)
        if error is None:
            return
        baseline = _trial(groups, {})
        if baseline is not None:  # the copy itself does not run: nothing can be learnt about narrowing
            warnings.warn(f"the prunability check was skipped: a copy of the model does not run on example_inputs "
                          f"({type(baseline).__name__}: {baseline}); pass checks=False to skip it", stacklevel=3)
            return
        blamed = _blame(groups, plan, error)
    except _NoMemory as exc:  # a second copy of a large model did not fit: unchecked, not unprunable
        warnings.warn(f"the prunability check was skipped: a copy of the model ran out of memory ({exc}); pass "
                      f"checks=False to skip it", stacklevel=3)
        return
    raise UnprunableGroupsError(_message(groups, blamed))


def _message(groups: ChannelGroups, blamed: Sequence[tuple[tuple[int, ...], Exception]]) -> str:
    names = [groups[i].name for keys, _ in blamed for i in keys]
    keys, first = blamed[0]
    cause = " ".join(f"{type(first).__name__}: {first}".split())
    cause = cause if len(cause) <= 200 else cause[:197] + "…"
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    together = " (only together)" if len(keys) > 1 else ""
    fix = ", ".join(layer_expression(n) for n in names[:4]) + (", …" if len(names) > 4 else "")
    return (f"the model no longer runs when channel group(s) {shown}{together} lose channels ({cause}): its forward "
            f"fixes their width. Keep them whole with ignored_layers=[{fix}] (or, if it needs widths of some "
            f"multiple, pass that multiple as round_to=)")


__all__ = ["check_prunable", "layer_expression", "narrowing"]
