"""Channel groups: the units that are scored, ranked and removed together.

torch-pruning's dependency graph is built once per model; every group it yields is a set of *coupled*
channels — the outputs of the layers feeding one residual add, both halves of a depthwise convolution, the
slice of a concatenation or of a flatten→linear that one producer's channel becomes — which must be removed
with one index set (EarlyCroP's reference code pruned each producer of an add on its own top-k: the
shapes matched, the channels no longer lined up). A :class:`ChannelGroup` records the group's stable name (the
qualified name of its root layer), every layer it touches and in which role, its current width, and what one
of its channels costs.

Never pruned: the network's output channels (found automatically by tracing which layers produce the
outputs) and the output channels of ``ignored_layers``. The network's input channels are never the output of
any layer, so no group contains them. Also kept whole, with a warning, the channels of layers whose group
torch-pruning cannot compute or map (:mod:`earlyprune.graph.tracing`): the rest of the model is still pruned.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from ..core.errors import UnknownNameError, UnprunableGroupsError
from ..core.validation import (
    EXAMPLE_INPUTS,
    IGNORED_LAYERS,
    MODEL,
    InstanceOf,
    InvalidParameterError,
    Rule,
    checked,
    rule,
    shown,
)
from . import structure, tracing
from .cost import CostModel
from .masks import masks_lifted
from .metrics import CHANNEL_LAYERS, LayerProfile, is_depthwise, profile_layers

#: layers whose output channels root a group (as torch-pruning's get_all_groups)
ROOT_TYPES = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)


@dataclass(frozen=True, eq=False)
class LayerRef:
    """One layer touched by a group: channel ``c`` of the group removes ``multiplicity`` entries of the
    layer's ``role`` dimension ("out": its output channels, "in": its input channels). Entry ``idxs[k]`` of that
    dimension belongs to group channel ``root_idxs[k]``."""

    name: str
    module: nn.Module | nn.Parameter
    role: str
    multiplicity: int
    idxs: torch.Tensor
    root_idxs: torch.Tensor


@dataclass
class ChannelGroup:
    """A set of coupled channels, pruned with one index set."""

    name: str
    index: int
    layers: tuple[LayerRef, ...]
    width: int
    macs_per_channel: float = 0.0
    params_per_channel: float = 0.0
    #: channels are removed in units of ``ch_groups``: position j of every convolution group at once, which
    #: grouped (non-depthwise) convolutions need to keep equal group sizes; 1 for ordinary layers
    ch_groups: int = 1
    #: the kept width must be a multiple of this (``num_heads`` of an ``nn.MultiheadAttention`` on the channels)
    width_multiple: int = 1
    #: channels are removed in whole blocks of this many consecutive channels: one attention head (its
    #: query/key/value features) when the group's producers were declared with ``num_heads=``; 1 otherwise
    head_dim: int = 1
    _root: nn.Module = field(repr=False, default=None)  # type: ignore[assignment]
    _root_fn: Any = field(repr=False, default=None)

    def gather(self, ref: LayerRef, values: torch.Tensor) -> torch.Tensor:
        """Map per-entry ``values`` of ``ref``'s pruned dimension to the group's channels (mean over the entries
        of each channel, e.g. the H·W features a flattened channel becomes)."""
        device = values.device
        out = torch.zeros(self.width, dtype=values.dtype, device=device)
        out.index_add_(0, ref.root_idxs.to(device), values[ref.idxs.to(device)])
        return out / ref.multiplicity

    @contextmanager
    def masked(self, channels: Sequence[int]) -> Iterator[None]:
        """Temporarily zero the output side of ``channels`` — filters, biases and norm γ/β of every layer whose
        output they are — so the network computes as if they were removed (the masked dense model);
        restored on exit. Used to measure a channel's actual effect on the loss (3SP Figure 2)."""
        gone = torch.as_tensor(list(channels), dtype=torch.long)
        saved = []
        with torch.no_grad():
            try:
                for ref in self.layers:
                    if ref.role != "out" or isinstance(ref.module, nn.Parameter):
                        continue
                    idx = ref.idxs[torch.isin(ref.root_idxs, gone)]
                    for p in (getattr(ref.module, "weight", None), getattr(ref.module, "bias", None)):
                        if isinstance(p, torch.Tensor):
                            idx_d = idx.to(p.device)
                            saved.append((p, idx_d, p[idx_d].clone()))
                            p[idx_d] = 0
                yield
            finally:
                for p, idx, value in reversed(saved):
                    p[idx] = value

    def units(self) -> torch.Tensor:
        """The removable units as a ``(n_units, unit_size)`` index tensor: row ``u`` holds the channels that go
        together — position ``j`` of every convolution group (:attr:`ch_groups`), or one attention head's
        consecutive channels (:attr:`head_dim`). A group that cannot lose a symmetric subset is one unit."""
        channels = torch.arange(self.width)
        if self.head_dim > 1 and self.ch_groups == 1:
            return channels.reshape(self.width // self.head_dim, self.head_dim)
        return channels.reshape(self.ch_groups, self.width // self.ch_groups).T

    @property
    def part(self) -> str:
        """What the group's channels are, for per-part ratios: ``"heads"`` (attention heads) or ``"channels"``."""
        return "heads" if self.head_dim > 1 and self.unit_size == self.head_dim else "channels"

    @property
    def unit_size(self) -> int:
        """Channels per removable unit (see :meth:`units`)."""
        return self.head_dim if self.head_dim > 1 and self.ch_groups == 1 else self.ch_groups

    def producers(self) -> list[LayerRef]:
        """Convolution / linear layers whose *output* channels are the group's channels (PaT's filters)."""
        return [ref for ref in self.layers if ref.role == "out" and isinstance(ref.module, CHANNEL_LAYERS)]

    def norms(self) -> list[LayerRef]:
        """Normalisation layers with per-channel affine parameters on the group's channels (BatchNorm γ, β)."""
        return [ref for ref in self.layers
                if isinstance(ref.module, nn.modules.batchnorm._NormBase) and ref.module.affine]


class ChannelGroups(Sequence[ChannelGroup]):
    """All prunable channel groups of a model, built once from torch-pruning's dependency graph.

    Args:
        model: the network; it is traced once with ``example_inputs`` (in eval mode, gradients on).
        example_inputs: a tensor, tuple of positional tensors or dict of keyword tensors.
        ignored_layers: modules whose output channels must be kept, in addition to the detected output layers.
        num_heads: ``{layer: heads}`` for layers whose output channels are split into attention heads (the query,
            key and value projections of a transformer block, as in torch-pruning's own ``num_heads``): their
            groups lose whole heads only, so every head keeps its width and the head count per layer may differ.

    After the model is pruned, :meth:`refresh` re-reads widths, index mappings and costs. A model that carries
    weight masks (:mod:`earlyprune.unstructured`) is traced with its masks lifted for the moment: torch-pruning
    reads parametrized weights wrongly (no channel can be removed from it anyway; see the engine).
    """

    RULES: dict[str, Rule] = {"model": MODEL, "example_inputs": EXAMPLE_INPUTS, "ignored_layers": IGNORED_LAYERS,
                              "num_heads": rule(InstanceOf(Mapping, "a mapping {layer: number of heads}"), None)}

    @checked(RULES)
    def __init__(self, model: nn.Module, example_inputs: Any,
                 ignored_layers: Iterable[nn.Module] | None = None,
                 num_heads: Mapping[nn.Module, int] | None = None) -> None:
        with masks_lifted(model):
            self._build(model, example_inputs, ignored_layers, num_heads)

    def _build(self, model: nn.Module, example_inputs: Any, ignored_layers: Iterable[nn.Module] | None,
               num_heads: Mapping[nn.Module, int] | None) -> None:
        ignored = list(ignored_layers or [])
        known = set(model.modules())
        for layer in ignored:
            if layer not in known:
                raise InvalidParameterError(
                    f"ignored_layers must hold submodules of the model (e.g. [model.fc]); got {shown(layer)}, "
                    f"which is not part of it")
        self._head_dims = _head_dims(num_heads or {}, known)
        self.model = model
        self.example_inputs = example_inputs
        self._module_names = {m: n for n, m in model.named_modules()}
        try:  # the profiling pass doubles as the check: a clear error here beats one from inside the tracer
            self.profile = profile_layers(model, example_inputs)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise InvalidParameterError(
                f"the model could not be run on example_inputs ({type(exc).__name__}: {exc}); pass a batch "
                f"shaped like the training inputs"
            ) from exc
        #: convolutions depthwise as traced (a grouped one pruned to one channel per group is not one of them)
        self._depthwise = {m for m in model.modules() if is_depthwise(m)}
        self.graph, train_outputs = self._trace(model, example_inputs)
        self.output_layers = tuple(dict.fromkeys(list(self.profile.output_layers) + train_outputs))
        self.ignored_layers = tuple(dict.fromkeys(ignored + list(self.output_layers)))
        #: layers whose output channels are kept because torch-pruning cannot compute or map their group: name →
        #: why (see :mod:`earlyprune.graph.tracing`)
        self.kept: dict[str, str] = {}
        tp_groups = self._tp_groups()
        self.record = structure.attach(model, self.graph, example_inputs, trace=self.graph.mode)

        self._groups: list[ChannelGroup] = []
        order = {m: i for i, m in enumerate(model.modules())}
        for tp_group in tp_groups:
            root = tp_group[0].dep.target.module
            # named after its first producing layer in definition order: predictable, independent of tracing
            producers = [item.dep.target.module for item in tp_group
                         if isinstance(item.dep.target.module, CHANNEL_LAYERS)
                         and self.graph.is_out_channel_pruning_fn(item.dep.handler)]
            name = self._name_of(min(producers, key=lambda m: order.get(m, len(order))) if producers else root)
            self._groups.append(ChannelGroup(name=name, index=0, layers=(), width=0,
                                             _root=root, _root_fn=tp_group[0].dep.handler))
        by_module = {n: m for m, n in self._module_names.items()}
        self._groups.sort(key=lambda g: order.get(by_module.get(g.name), len(order)))
        for i, g in enumerate(self._groups):
            g.index = i
        self._by_name = {g.name: g for g in self._groups}
        self.refresh()
        self.baseline = self.totals()
        self.baseline_widths = self.widths()
        #: ``{part: scale}``: each part (see :attr:`ChannelGroup.part`) is ranked on its own and loses
        #: ``amount × scale`` of its original channels (a separate head ratio); empty: one global ranking
        self.part_ratios: dict[str, float] = {}
        #: each group's width when the groups were built (the reference of ``max_group_ratio``); a pruner
        #: resumed on a pruned model restores the original ones
        self.original_widths: dict[str, int] = {g.name: g.width for g in self._groups}

    def _trace(self, model: nn.Module, example_inputs: Any) -> tuple[tracing.Graph, list[nn.Module]]:
        """torch-pruning's graph, traced in eval mode — or in training mode when that reaches layers eval mode
        never runs (auxiliary heads), whose outputs are then output layers too."""
        try:
            graph = tracing.build_graph(model, example_inputs)
        except Exception as exc:  # noqa: BLE001 - torch-pruning's own failures, re-raised with context
            raise UnprunableGroupsError(
                f"torch-pruning could not trace the channel dependencies of {type(model).__name__} "
                f"({type(exc).__name__}: {exc}); this architecture is not supported as is — pass the offending "
                f"blocks as ignored_layers= or prune a variant without them") from exc
        missing = tracing.unreached_layers(model, graph)
        if not missing:
            return graph, []
        try:  # one training-mode forward says whether tracing in training mode would reach them
            with tracing.preserved(model):
                train_profile: LayerProfile = profile_layers(model, example_inputs, train=True)
        except Exception as exc:  # noqa: BLE001 - e.g. BatchNorm needs more than one example in training mode
            _warn_untraced(missing, f"tracing in training mode failed ({type(exc).__name__}: {exc})")
            return graph, []
        if not any(model.get_submodule(name) in train_profile.mac_factors for name in missing):
            _warn_untraced(missing, "they are not called in training mode either (their weights used through "
                                    "torch.nn.functional?)")
            return graph, []
        try:
            train_graph = tracing.build_graph(model, example_inputs, train=True)
        except Exception as exc:  # noqa: BLE001 - torch-pruning's failure in training mode: the eval graph stays
            _warn_untraced(missing, f"tracing in training mode failed ({type(exc).__name__}: {exc})")
            return graph, []
        still = tracing.unreached_layers(model, train_graph)
        if still:
            _warn_untraced(still, "not reached in training mode either")
        return train_graph, [m for m in train_profile.output_layers if m not in self.profile.output_layers]

    def _tp_groups(self) -> list[tp.Group]:
        """One torch-pruning group per root layer, as ``DependencyGraph.get_all_groups`` yields them — except that
        a root whose group torch-pruning cannot compute (an error, an index mapping that diverges) or that passes
        through a node it could not map is kept whole and listed in :attr:`kept`, instead of failing the model."""
        graph = self.graph
        # torch-pruning internal: the layers its tracer skips (tests/test_torch_pruning_internals.py)
        ignored = set(self.ignored_layers) | set(graph.IGNORED_LAYERS_IN_TRACING)
        with graph.unchanged():
            groups = self._tp_groups_of(graph, ignored)
        if self.kept:
            names = list(self.kept)
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            warnings.warn(f"{len(names)} layer(s) keep all their output channels because torch-pruning cannot map "
                          f"their channel dependencies ({shown}; first cause: {self.kept[names[0]]}); the rest of "
                          f"the model is pruned. ChannelGroups.kept lists them", stacklevel=4)
        return groups

    def _tp_groups_of(self, graph: tracing.Graph, ignored: set[Any]) -> list[tp.Group]:
        groups, visited = [], set()
        for module in list(graph.module2node):
            if module in ignored or module in visited or not isinstance(module, ROOT_TYPES):
                continue
            pruner = graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            try:
                group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                                list(range(pruner.get_out_channels(module))))
                tracing.check_fits(graph, group)
            except Exception as exc:  # noqa: BLE001 - this root's group only; the others are still pruned
                self.kept[self._name_of(module)] = f"{type(exc).__name__}: {exc}"
                continue
            outs = [item.dep.target.module for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)]
            visited.update(outs)
            if any(m in ignored for m in outs):
                continue
            if tracing.touches_unmapped(graph, group):
                for m in outs:
                    if isinstance(m, CHANNEL_LAYERS):
                        self.kept[self._name_of(m)] = "its channels pass an operation torch-pruning cannot map"
                continue
            groups.append(group)
        return groups

    # -- Sequence protocol -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self._groups)

    def __getitem__(self, key: int | str) -> ChannelGroup:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise UnknownNameError(f"no channel group named {key!r}; groups: {', '.join(self._by_name)}") from None
        return self._groups[key]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self._groups]

    def widths(self) -> list[int]:
        """The structure vector of the current model: channels per group, in group order."""
        return [g.width for g in self._groups]

    def totals(self) -> dict[str, float]:
        """Current channels (summed over groups), MACs per example and parameters of the model."""
        return {"channels": float(sum(self.widths())), "macs": float(self.cost.total_macs()),
                "params": float(self.cost.total_params())}

    # -- torch-pruning access ------------------------------------------------------------------------------
    def tp_group(self, group: ChannelGroup, idxs: Sequence[int] | None = None) -> tp.Group:
        """torch-pruning's group for ``idxs`` (all channels when None) of ``group``."""
        if idxs is None:
            idxs = list(range(self.graph.get_out_channels(group._root)))
        return self.graph.get_pruning_group(group._root, group._root_fn, list(idxs))

    def refresh(self) -> None:
        """Re-read every group's layers, width and per-channel cost from the (possibly pruned) model."""
        with self.graph.unchanged():
            self._refresh_layers()
        self.cost = CostModel([g.layers for g in self._groups], self.profile, self.graph,
                              sum(p.numel() for p in self.model.parameters()))
        for group, macs, params in zip(self._groups, self.cost.macs_per_channel, self.cost.params_per_channel):
            group.macs_per_channel = float(macs)
            group.params_per_channel = float(params)

    def _refresh_layers(self) -> None:
        for group in self._groups:
            tp_group = self.tp_group(group)
            width = len(tp_group[0].idxs)
            refs: dict[tuple[int, str], LayerRef] = {}
            for item in tp_group:
                target = item.dep.target.module
                if not isinstance(target, (nn.Parameter, nn.Module)) or not _has_params(target):
                    continue
                role = "out" if self.graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
                key = (id(target), role)
                if key not in refs:
                    refs[key] = LayerRef(self._name_of(target), target, role, max(len(item.idxs) // width, 1),
                                         torch.as_tensor(list(item.idxs), dtype=torch.long),
                                         torch.as_tensor(list(item.root_idxs), dtype=torch.long))
            group.layers = tuple(refs.values())
            group.width = width
            group.ch_groups = _channel_groups(group, self._depthwise)
            group.width_multiple = math.lcm(1, *(ref.module.num_heads for ref in group.layers
                                                 if isinstance(ref.module, nn.MultiheadAttention)))
            group.head_dim = self._group_head_dim(group)

    def _group_head_dim(self, group: ChannelGroup) -> int:
        dims = {self._head_dims[ref.module] for ref in group.layers
                if ref.role == "out" and isinstance(ref.module, nn.Module) and ref.module in self._head_dims}
        if not dims:
            return 1
        # whole heads are consecutive channels only if every declared layer maps the group's channels 1:1
        aligned = all(ref.multiplicity == 1 and torch.equal(ref.idxs, ref.root_idxs) for ref in group.layers
                      if isinstance(ref.module, nn.Module) and ref.module in self._head_dims)
        if len(dims) > 1 or not aligned or group.width % next(iter(dims)):
            return group.width  # no consistent head layout: one unit, never pruned
        return dims.pop()

    def _name_of(self, obj: Any) -> str:
        if obj in self._module_names:
            return self._module_names[obj]
        # torch-pruning internal: the graph's own names of bare parameters (tests/test_torch_pruning_internals.py)
        return self.graph._param_to_name.get(obj, repr(obj)) if isinstance(obj, nn.Parameter) else repr(obj)

    def describe(self) -> str:
        """A human-readable table of the groups."""
        lines = [f"{'group':<32} {'width':>6} {'layers':>6} {'MACs/ch':>12} {'params/ch':>10}"]
        for g in self._groups:
            lines.append(f"{g.name:<32} {g.width:>6} {len(g.layers):>6} {g.macs_per_channel:>12.0f} "
                         f"{g.params_per_channel:>10.0f}")
        return "\n".join(lines)


def _warn_untraced(missing: list[str], why: str) -> None:
    """Warn about layers the traced forward pass never reached: their input channels would not follow pruning."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    warnings.warn(f"layers not reached when tracing example_inputs in eval mode: {shown}; {why}. Their inputs "
                  f"will not be pruned with their producers (if pruning them breaks the model, the first pruning "
                  f"step says so): for auxiliary heads pass example_inputs of at least 2 examples or disable them "
                  f"(e.g. aux_logits=False); otherwise keep their producers with ignored_layers=", stacklevel=4)


def _channel_groups(group: ChannelGroup, depthwise: set[nn.Module]) -> int:
    """Units in which ``group`` can lose channels (see :attr:`ChannelGroup.ch_groups`).

    A grouped convolution with ``g`` groups keeps working only if every group loses the same positions, so its
    coupled channels are removed ``g`` at a time: channel ``j + b·width/g`` for every block ``b``. When several
    grouped layers couple (lcm of their groups) or the channels reach a grouped layer through a permutation or
    concatenation, no symmetric removal exists and the whole group is one unit (never pruned). Only convolutions
    that were depthwise when the graph was traced (``depthwise``) lose any subset: a grouped convolution pruned
    down to one channel per group looks depthwise, but its input and output channels are still in two different
    groups, and removing either would empty a convolution group.
    """
    units = 1
    for ref in group.layers:
        m = ref.module
        if not isinstance(m, nn.modules.conv._ConvNd) or m.groups == 1:
            continue
        if m in depthwise:  # depthwise: channel-wise, any subset works
            continue
        size = m.out_channels if ref.role == "out" else m.in_channels
        if size != group.width or ref.multiplicity != 1 or not torch.equal(ref.idxs, ref.root_idxs):
            return group.width
        units = math.lcm(units, m.groups)
    return units if group.width % units == 0 else group.width


def _head_dims(num_heads: Mapping[nn.Module, int], known: set[nn.Module]) -> dict[nn.Module, int]:
    """Channels per head of each layer declared in ``num_heads`` (fixed: pruning removes whole heads)."""
    dims = {}
    for layer, heads in num_heads.items():
        if not isinstance(layer, nn.Module) or layer not in known:
            raise InvalidParameterError(f"num_heads keys must be submodules of the model (the query/key/value "
                                        f"projections); got {layer!r}")
        width = _out_width(layer)
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or width is None or width % heads:
            raise InvalidParameterError(f"num_heads[{type(layer).__name__}] must be a positive integer dividing its "
                                        f"{width} output channels, got {heads!r}")
        dims[layer] = width // heads
    return dims


def _out_width(layer: nn.Module) -> int | None:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    if isinstance(layer, nn.modules.conv._ConvNd):
        return layer.out_channels
    return None  # a layer type whose output width we do not know: refused with the message above


def _has_params(obj: Any) -> bool:
    if isinstance(obj, nn.Parameter):
        return True
    return any(True for _ in obj.parameters(recurse=False)) or isinstance(obj, nn.MultiheadAttention)


def scores_to_vector(groups: ChannelGroups, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate per-group scores in group order (validating names and lengths)."""
    parts = []
    for g in groups:
        if g.name not in scores:
            raise InvalidParameterError(f"scores are missing group {g.name!r}")
        s = scores[g.name]
        if s.dim() != 1 or s.numel() != g.width:
            raise InvalidParameterError(f"scores for group {g.name!r} have shape {tuple(s.shape)}, expected "
                                        f"({g.width},)")
        parts.append(s.detach().float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0)
