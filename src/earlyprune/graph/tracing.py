"""torch-pruning's dependency graph, built so that it covers the model as it trains and fails per group, cleanly.

Three general mechanisms on top of ``tp.DependencyGraph`` (none names an architecture):

* **Training-mode tracing.** torch-pruning traces in eval mode, so layers that run only in training (the
  auxiliary heads of GoogLeNet / Inception-v3) are invisible and their inputs would not follow pruning.
  :func:`build_graph` with ``train=True`` traces a training-mode forward instead; the model's buffers (BatchNorm
  statistics) and the random generators are restored afterwards, so tracing changes nothing.
* **Bounded index mappings.** torch-pruning maps channel indices through reshapes with index lists; on some
  graphs (the attention of Swin / MaxViT) a cycle of reshape mappings multiplies the list without end and
  exhausts the memory. A :class:`Graph` bounds every list by the largest dimension of any parameter (×4): a
  valid channel index set can never be longer. A walk past it raises :class:`IndexMappingDiverged`.
* **Groups that do not fit.** A group whose index set names a channel a layer does not have (torch-pruning
  misreads a channel shuffle as a flatten) would break or silently corrupt the model: :func:`check_fits` refuses
  it, and the group is kept whole.
* **Unmapped nodes.** Where torch-pruning cannot compute a node's index mapping (it raises inside its
  ``update_*_index_mapping``: ShuffleNet's channel shuffle, a deep Swin's concatenation), a :class:`Graph`
  records the node in :attr:`Graph.unmapped` instead of failing the whole graph; a group that passes through
  such a node cannot be trusted (indices would pass it unmapped) and is kept whole by
  :func:`~earlyprune.graph.groups.ChannelGroups`.

torch-pruning internals patched here (``_FlattenIndexMapping.__call__`` and the ``update_*_index_mapping``
functions) act only inside a :class:`Graph`'s own calls; other users of torch-pruning see them unchanged
(tests/test_torch_pruning_internals.py checks that they still exist).
"""

from __future__ import annotations

import contextvars
import functools
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping as _tp_index_mapping

from ..core.batch import call_model
from .metrics import CHANNEL_LAYERS


class IndexMappingDiverged(RuntimeError):
    """torch-pruning's index mapping produced more indices than any dimension of the model has."""


#: an index list longer than this × the largest dimension of any parameter has diverged
INDEX_LIMIT_FACTOR = 4

#: the index-list bound of the Graph whose walk is running (None outside: torch-pruning behaves as shipped)
_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("earlyprune_index_limit", default=None)

#: torch-pruning internal: index_mapping's update functions, replaced by guarded ones (test_torch_pruning_internals);
#: update_index_mapping (all of them) is also wrapped, by Graph.unchanged
_UPDATES = ("update_concat_index_mapping", "update_split_index_mapping", "update_reshape_index_mapping",
            "update_unbind_index_mapping", "update_expand_index_mapping", "update_slice_index_mapping",
            "update_flatten_index_mapping")


class Graph(tp.DependencyGraph):
    """A ``tp.DependencyGraph`` with bounded index mappings and recorded :attr:`unmapped` nodes."""

    def __init__(self) -> None:
        super().__init__()
        #: nodes whose index mapping torch-pruning could not compute (see the module docstring)
        self.unmapped: set[Any] = set()
        self.index_limit: int | None = None
        #: "train" when traced in training mode (:func:`build_graph`)
        self.mode = "eval"
        self._frozen = self._mapped = False

    def get_pruning_group(self, module: Any, pruning_fn: Any, idxs: Any) -> tp.Group:
        token = _LIMIT.set(self.index_limit)
        try:
            return super().get_pruning_group(module, pruning_fn, idxs)
        finally:
            _LIMIT.reset(token)

    @contextmanager
    def unchanged(self) -> Iterator[None]:
        """Many groups of a model that is not pruned meanwhile: torch-pruning recomputes every index mapping of
        the graph before each group (minutes for MaxViT's 124 roots); inside this block it does so once."""
        self._mapped = False
        self._frozen = True
        try:
            yield
        finally:
            self._frozen = False


def _guard_updates() -> None:
    """Install (once) the guards of the module docstring on torch-pruning's index-mapping code."""
    # torch-pruning internal: _FlattenIndexMapping (._stride, .reverse) (tests/test_torch_pruning_internals.py)
    flatten = _tp_index_mapping._FlattenIndexMapping
    if getattr(flatten.__call__, "_earlyprune", False):
        return
    original_call = flatten.__call__

    @functools.wraps(original_call)
    def bounded_call(self: Any, idxs: Any) -> Any:
        limit = _LIMIT.get()
        if limit is not None and not self.reverse and len(idxs) * self._stride > limit:
            raise IndexMappingDiverged(  # internal: caught where the groups are built, re-raised with context
                f"an index mapping through a reshape grew to {len(idxs) * self._stride:,} indices, more than any "
                f"dimension of the model ({limit // INDEX_LIMIT_FACTOR:,})")
        return original_call(self, idxs)

    bounded_call._earlyprune = True  # type: ignore[attr-defined]
    flatten.__call__ = bounded_call

    for name in _UPDATES:
        _ORIGINAL_UPDATES[name] = original = getattr(_tp_index_mapping, name)

        def guarded(graph: Any, node: Any, *, _name: str = name) -> Any:
            update = _ORIGINAL_UPDATES[_name]
            if not isinstance(graph, Graph):
                return update(graph, node)
            try:
                return update(graph, node)
            except Exception:  # noqa: BLE001 - torch-pruning could not map this node: recorded, not fatal
                graph.unmapped.add(node)
                return None

        setattr(_tp_index_mapping, name, functools.wraps(original)(guarded))

    update_all = _ORIGINAL_UPDATES["update_index_mapping"] = _tp_index_mapping.update_index_mapping

    @functools.wraps(update_all)
    def update_unless_unchanged(graph: Any) -> Any:
        if isinstance(graph, Graph) and graph._frozen:
            if graph._mapped:
                return None
            graph._mapped = True
        return _ORIGINAL_UPDATES["update_index_mapping"](graph)

    _tp_index_mapping.update_index_mapping = update_unless_unchanged

    # torch-pruning internal: Group.has_pruning_op / add_dep / add_and_merge / _group
    # (tests/test_torch_pruning_internals.py). Both lookups scan every item of the group being built: quadratic,
    # 413 s + 60 s for Swin-S's residual stream. Inside a Graph's walk the same answers come from indexes of the
    # items by (target, handler).
    group_cls = tp.dependency.Group
    original_has, original_add, original_merge = group_cls.has_pruning_op, group_cls.add_dep, group_cls.add_and_merge

    @functools.wraps(original_has)
    def has_pruning_op(self: Any, dep: Any, idxs: Any) -> bool:
        if _LIMIT.get() is None:
            return original_has(self, dep, idxs)
        return any(known == idxs for known in _ItemIndex.of(self).idxs.get((dep.target, dep.handler), ()))

    @functools.wraps(original_add)
    def add_dep(self: Any, dep: Any, idxs: Any) -> None:
        index = getattr(self, "_earlyprune_index", None)
        original_add(self, dep, idxs)
        if index is not None:
            index.appended(self, dep, idxs)

    @functools.wraps(original_merge)
    def add_and_merge(self: Any, dep: Any, idxs: Any) -> None:
        if _LIMIT.get() is None:
            return original_merge(self, dep, idxs)
        index = _ItemIndex.of(self)
        i = index.first.get((dep.target, dep.handler))
        if i is None:
            return self.add_dep(dep, idxs)
        _dep, _idxs = self._group[i]
        seen: set[int] = set()
        merged = [x for x in _idxs + idxs if not (x.idx in seen or seen.add(x.idx))]  # first occurrence of each idx
        self._group[i] = tp._helpers.GroupItem(dep=_dep, idxs=merged)
        index.replaced(self, i, _idxs, merged)
        return None

    group_cls.has_pruning_op, group_cls.add_dep, group_cls.add_and_merge = has_pruning_op, add_dep, add_and_merge


class _ItemIndex:
    """A torch-pruning group's items by ``(target, handler)``: their index lists, and the first item's position."""

    def __init__(self, group: Any) -> None:
        self.idxs: dict[tuple[Any, Any], list[Any]] = {}
        self.first: dict[tuple[Any, Any], int] = {}
        for i, (dep, idxs) in enumerate(group._group):
            self.idxs.setdefault((dep.target, dep.handler), []).append(idxs)
            self.first.setdefault((dep.target, dep.handler), i)
        self.size = len(group._group)

    @classmethod
    def of(cls, group: Any) -> "_ItemIndex":
        index = getattr(group, "_earlyprune_index", None)
        if index is None or index.size != len(group._group):  # changed behind add_dep: rebuild
            index = group._earlyprune_index = cls(group)
        return index

    def appended(self, group: Any, dep: Any, idxs: Any) -> None:
        if self.size != len(group._group) - 1:
            group._earlyprune_index = None
            return
        key = (dep.target, dep.handler)
        self.idxs.setdefault(key, []).append(idxs)
        self.first.setdefault(key, self.size)
        self.size += 1

    def replaced(self, group: Any, i: int, old: Any, new: Any) -> None:
        dep = group._group[i].dep
        lists = self.idxs[(dep.target, dep.handler)]
        lists[next(k for k, known in enumerate(lists) if known is old)] = new


#: torch-pruning's own update functions, called by the guarded ones
_ORIGINAL_UPDATES: dict[str, Any] = {}


_guard_updates()


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run a forward without side effects: buffers (BatchNorm running statistics, counters), the training flag
    and the random generators (dropout, stochastic depth) are restored on exit."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    was_training = model.training
    devices = sorted({b.device.index for b in model.parameters() if b.device.type == "cuda"} - {None})
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    if name in buffers:
                        b.copy_(buffers[name])
            model.train(was_training)


def build_graph(model: nn.Module, example_inputs: Any, *, train: bool = False) -> Graph:
    """torch-pruning's dependency graph of ``model`` traced on ``example_inputs`` — in eval mode (as torch-pruning
    does) or, with ``train=True``, in training mode without side effects (:func:`preserved`)."""
    graph = Graph()
    graph.index_limit = INDEX_LIMIT_FACTOR * max((max(p.shape) for p in model.parameters() if p.dim() > 0), default=1)
    with torch.enable_grad(), preserved(model):  # the tracer follows autograd, also when called under no_grad()
        if train:
            graph.mode = "train"
            graph.build_dependency(model, example_inputs, verbose=False,
                                   forward_fn=lambda m, x: call_model(m.train(), x))
        else:
            graph.build_dependency(model, example_inputs, verbose=False)
    return graph


def unreached_layers(model: nn.Module, graph: tp.DependencyGraph) -> list[str]:
    """Names of the channel and normalisation layers that the traced forward never ran."""
    # submodules of traced layers are handled by their parent (MultiheadAttention uses out_proj's weight directly)
    # torch-pruning internal: graph.module2node, its traced nodes (tests/test_torch_pruning_internals.py)
    covered = {sub for m in graph.module2node if isinstance(m, nn.Module) for sub in m.modules()}
    return [name for name, m in model.named_modules()
            if isinstance(m, CHANNEL_LAYERS + (nn.modules.batchnorm._NormBase,)) and m not in covered]


def check_fits(graph: tp.DependencyGraph, group: tp.Group) -> None:
    """Raise :class:`IndexMappingDiverged` if an item of ``group`` indexes past the dimension it prunes."""
    for item in group:
        target = item.dep.target
        if not item.idxs or not isinstance(target.module, (nn.Module, nn.Parameter)):
            continue
        try:
            out = graph.is_out_channel_pruning_fn(item.dep.handler)
            size = graph.get_out_channels(target) if out else graph.get_in_channels(target)
        except Exception:  # noqa: BLE001 - an operation node without a channel count
            continue
        if size is not None and (max(item.idxs) >= size or min(item.idxs) < 0):
            # torch-pruning internal: the graph's layer names (tests/test_torch_pruning_internals.py)
            name = graph._module2name.get(target.module, type(target.module).__name__)
            raise IndexMappingDiverged(  # internal: caught where the groups are built (kept whole, reason recorded)
                f"torch-pruning maps the group onto index {max(item.idxs)} of the "
                f"{'output' if out else 'input'} channels of {name}, which has {size}")


def touches_unmapped(graph: Graph, group: tp.Group) -> bool:
    """Whether ``group``'s dependencies pass through a node torch-pruning could not map."""
    if not getattr(graph, "unmapped", None):
        return False
    return any(item.dep.source in graph.unmapped or item.dep.target in graph.unmapped for item in group)
