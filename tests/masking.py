"""The masked dense model: what a pruned model must equal (test helper, independent of the engine)."""

from __future__ import annotations

import torch
from torch import nn

from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.selection import Plan


def removed_entries(groups: ChannelGroups, plan: Plan) -> dict[tuple[str, str], torch.Tensor]:
    """(layer name, role) → indices of that layer's dimension that the plan removes."""
    out: dict[tuple[str, str], list[torch.Tensor]] = {}
    for name, idxs in plan.remove.items():
        g = groups[name]
        gone = torch.as_tensor(idxs)
        for ref in g.layers:
            hit = ref.idxs[torch.isin(ref.root_idxs, gone)]
            role = "out" if _one_dim(ref.module) else ref.role
            out.setdefault((ref.name, role), []).append(hit)
    return {k: torch.unique(torch.cat(v)) for k, v in out.items()}


def _one_dim(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups > 1 and module.groups == module.in_channels == module.out_channels
    return not isinstance(module, (nn.Conv2d, nn.Linear))


def mask_(model: nn.Module, entries: dict[tuple[str, str], torch.Tensor]) -> None:
    """Zero every output-side parameter of the removed channels (filters, biases, BatchNorm γ and β)."""
    with torch.no_grad():
        for (name, role), idx in entries.items():
            if role != "out":
                continue
            module = model.get_submodule(name)
            module.weight[idx] = 0
            if getattr(module, "bias", None) is not None:
                module.bias[idx] = 0


def kept_slice(param_name: str, dense: torch.Tensor, entries: dict[tuple[str, str], torch.Tensor],
               model: nn.Module) -> torch.Tensor:
    """The entries of a dense parameter (or state tensor shaped like it) that survive the plan."""
    layer_name, _, kind = param_name.rpartition(".")
    module = model.get_submodule(layer_name)
    result = dense
    for role, dim in (("out", 0), ("in", 1)):
        if role == "in" and (kind != "weight" or _one_dim(module)):
            continue
        gone = entries.get((layer_name, role))
        if gone is None or gone.numel() == 0:
            continue
        keep = torch.as_tensor([i for i in range(result.shape[dim]) if i not in set(gone.tolist())])
        result = result.index_select(dim, keep)
    return result
