"""Per-channel gates for the gradient criteria, and the gradient / Hessian-vector products taken through them.

A gate is a multiplicative mask ``M`` (EarlyCroP's ``c``) on a group's channels, attached with forward hooks for
the duration of a criterion's own passes — the user's model class is never edited and no hook outlives the pass.

Where the gates sit:

* at the output of every normalisation layer on the group's channels (BatchNorm, GroupNorm, a 1-D LayerNorm):
  a gate before BatchNorm would be normalised away in train mode;
* at the output of every producing convolution / linear layer whose output does not go straight into such a
  normalisation layer.

One gate vector per group is shared by all its gate points, so ``M_j = 0`` removes channel ``j`` everywhere at
once — all producers of a residual stream, both sides of a depthwise convolution — and, by the chain rule,
``∂L/∂M_j`` is the **sum** of the contributions of the group's layers. At ``M = 1`` that gradient is
``Σ y·∂L/∂y`` over the gated outputs ``y``, which is exactly PaT Eq. 3 computed from parameters:
``γ·∂L/∂γ + β·∂L/∂β`` at a norm, ``Σ_w w·∂L/∂w (+ b·∂L/∂b)`` over a gated layer's filter (tested).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..core.batch import Batch
from ..core.validation import Options, rule
from ..graph.groups import ChannelGroup, ChannelGroups, LayerRef
from .base import Criterion

#: which product the Hessian-vector criteria take (see :func:`gate_hvp`)
PRODUCTS = ("gate", "mixed", "full")
PRODUCT = rule(Options(PRODUCTS), hint="which Hessian-vector product: see earlyprune.criteria.gates.gate_hvp")


@dataclass(frozen=True)
class GatePoint:
    """A layer whose output is multiplied by a group's gate: ``kind`` is "norm" or "layer"."""

    ref: LayerRef
    kind: str
    dim: int   #: channel dimension of the layer's output


def is_norm(module: Any) -> bool:
    """Normalisation layers with one affine entry per channel (gates go after them)."""
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        return True
    return isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1


def channel_dim(module: nn.Module) -> int:
    """The dimension of ``module``'s output that holds its channels."""
    return -1 if isinstance(module, (nn.Linear, nn.LayerNorm)) else 1


def gate_points(groups: ChannelGroups, group: ChannelGroup) -> list[GatePoint]:
    """Where ``group``'s gate multiplies the activations (see the module docstring)."""
    points: list[GatePoint] = []
    norms: set[int] = set()
    for ref in group.layers:
        if isinstance(ref.module, nn.Module) and is_norm(ref.module) and id(ref.module) not in norms:
            norms.add(id(ref.module))
            points.append(GatePoint(ref, "norm", channel_dim(ref.module)))
    seen: set[int] = set()
    for ref in group.producers():
        if id(ref.module) in seen:
            continue
        seen.add(id(ref.module))
        # torch-pruning internal: module2node and Node.outputs (tests/test_torch_pruning_internals.py)
        node = groups.graph.module2node.get(ref.module)
        consumers = [n.module for n in node.outputs] if node is not None else []
        if consumers and all(id(m) in norms for m in consumers):
            continue  # gated after its normalisation layer instead
        points.append(GatePoint(ref, "layer", channel_dim(ref.module)))
    return points


def filter_view(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A weight-shaped ``tensor`` of a convolution / linear layer as ``(out_channels, entries per filter)``."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        g = module.groups  # weight is (C_in, C_out/groups, K…): one filter per output channel
        tensor = tensor.reshape(g, tensor.shape[0] // g, *tensor.shape[1:]).transpose(1, 2)
        return tensor.reshape(module.out_channels, -1)
    return tensor.reshape(tensor.shape[0], -1)


def _grad_product(param: torch.Tensor | None) -> torch.Tensor | None:
    if param is None or param.grad is None:
        return None
    return (param.detach() * param.grad.detach()).float()


def parameter_taylor(point: GatePoint) -> torch.Tensor | None:
    """PaT Eq. 3 for one gate point from ``.grad``: ``γ·∂L/∂γ + β·∂L/∂β`` for a norm, ``Σ_{w∈W_n} w·∂L/∂w
    (+ b_n·∂L/∂b_n)`` per output channel ``n`` for a layer. None when the gradients are missing or the norm has
    no affine parameters (its gate gradient cannot be read from parameters)."""
    m = point.ref.module
    weight = _grad_product(getattr(m, "weight", None))
    bias = _grad_product(getattr(m, "bias", None))
    if weight is None and bias is None:
        return None
    if point.kind == "norm":
        if getattr(m, "weight", None) is None or getattr(m, "bias", None) is None:
            return None  # γ without β (or neither) does not give Σ y·∂L/∂y
        return weight + bias  # type: ignore[operator]
    total = filter_view(m, weight).sum(1) if weight is not None else 0.0
    return total + bias if bias is not None else total  # type: ignore[return-value]


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


@contextmanager
def twice_differentiable() -> Iterator[None]:
    """Run attention through PyTorch's reference ("math") kernel for the duration: the fused scaled-dot-product
    kernels (flash attention on CPU, among others) have no second derivative, which the Hessian-vector products
    of ``crop`` / ``grasp`` need. Without ``torch.nn.attention`` (torch < 2.3) nothing changes."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - old torch
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


@contextmanager
def preserve_norm_stats(model: nn.Module) -> Iterator[None]:
    """Restore BatchNorm running statistics after a scoring pass: a criterion must not change the model."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            saved.append((m, [None if b is None else b.detach().clone()
                              for b in (m.running_mean, m.running_var, m.num_batches_tracked)]))
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in saved:
                for buf, old in ((m.running_mean, mean), (m.running_var, var), (m.num_batches_tracked, count)):
                    if buf is not None and old is not None and buf.shape == old.shape:
                        buf.copy_(old)


class Gates:
    """The gates of every group of ``groups``, live only inside :meth:`open`."""

    def __init__(self, groups: ChannelGroups) -> None:
        self.groups = groups
        self._handles: list[Any] = []
        self.ungated: list[str] = []  #: groups without any gate point (after the last :meth:`open`)

    @contextmanager
    def open(self, values: Mapping[str, torch.Tensor] | None = None,
             requires_grad: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """Install the hooks and yield ``{group name: gate tensor}`` (ones, or ``values``); hooks are removed on
        exit. The gates are leaves in the model's dtype and device, so gradients w.r.t. them can be taken."""
        device, dtype = _model_device_dtype(self.groups.model)
        gates: dict[str, torch.Tensor] = {}
        per_module: dict[nn.Module, list[tuple[str, torch.Tensor | None, torch.Tensor, int]]] = {}
        self.ungated = []
        for g in self.groups:
            value = values.get(g.name) if values is not None else None
            gate = (torch.ones(g.width, device=device, dtype=dtype) if value is None
                    else value.detach().to(device=device, dtype=dtype).clone())
            gates[g.name] = gate.requires_grad_(requires_grad)
            points = gate_points(self.groups, g)
            if not points:
                self.ungated.append(g.name)
            for p in points:
                idxs, root = p.ref.idxs.to(device), p.ref.root_idxs.to(device)
                identity = len(idxs) == g.width and bool((idxs == root).all()) and bool(
                    (root == torch.arange(g.width, device=device)).all())
                per_module.setdefault(p.ref.module, []).append((g.name, None if identity else idxs, root, p.dim))
        self.close()
        for module, entries in per_module.items():
            self._handles.append(module.register_forward_hook(_gate_hook(gates, entries)))
        try:
            yield gates
        finally:
            self.close()

    def close(self) -> None:
        """Remove every hook still installed."""
        for h in self._handles:
            h.remove()
        self._handles = []


def _gate_hook(gates: dict[str, torch.Tensor], entries: Sequence[tuple[str, torch.Tensor | None, torch.Tensor, int]]):
    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            return None
        for name, idxs, root, dim in entries:
            gate = gates[name]
            size = output.shape[dim]
            if idxs is None and size == gate.numel():
                vec = gate
            else:  # channels of this layer outside the group keep a constant 1
                where = idxs if idxs is not None else root
                vec = torch.ones(size, dtype=gate.dtype, device=gate.device).index_put((where,), gate[root])
            shape = [1] * output.dim()
            shape[dim] = size
            output = output * vec.to(output.dtype).view(shape)
        return output
    return hook


def _grads(outputs: torch.Tensor, inputs: Sequence[torch.Tensor], **kw: Any) -> list[torch.Tensor]:
    grads = torch.autograd.grad(outputs, list(inputs), allow_unused=True, **kw)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def gate_gradients(groups: ChannelGroups, batch: Batch, gates: Gates | None = None,
                   values: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``∂L/∂M`` per group channel for one batch, at ``M = 1`` (or at ``values``). Touches no ``.grad``."""
    gates = gates or Gates(groups)
    with torch.enable_grad(), preserve_norm_stats(groups.model), gates.open(values) as gv:
        names = list(gv)
        loss = batch.loss(groups.model)
        grads = _grads(loss, [gv[n] for n in names])
    return {n: g.detach() for n, g in zip(names, grads)}


def gate_hvp(groups: ChannelGroups, batch: Batch, product: str = "gate", gates: Gates | None = None,
             values: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A Hessian-gradient product w.r.t. the gates, by double backpropagation (no explicit Hessian).

    ``product``:

    * ``"gate"`` — ``H_cc·g_c``: the pure gate Hessian times the gate gradient, EarlyCroP Eq. 6
      ``|H_L(c)·g_L(c)|`` taken literally: ``g_c = ∂L/∂c`` with ``create_graph``, then ``∂(g_c·sg(g_c))/∂c``;
    * ``"mixed"`` — ``H_cw·g_w``: the product of the EarlyCroP reference code, which backpropagates
      ``z = Σ_w g_w·∂L/∂w`` into the gates (``sg`` = stop-gradient on the first factor);
    * ``"full"`` — ``H_cc·g_c + H_cw·g_w``: the gate entries of ``H·g`` for the joint vector (weights, gates).

    All three cost the same (one forward, one backward with ``create_graph``, one more backward).
    """
    PRODUCT.check("product", product)
    gates = gates or Gates(groups)
    model = groups.model
    with torch.enable_grad(), preserve_norm_stats(model), twice_differentiable(), gates.open(values) as gv:
        names = list(gv)
        gate_list = [gv[n] for n in names]
        params = [p for p in model.parameters() if p.requires_grad] if product != "gate" else []
        wrt = (gate_list if product != "mixed" else []) + params
        loss = batch.loss(model)
        g = _grads(loss, wrt, create_graph=True)
        z = sum((gi * gi.detach()).sum() for gi in g if gi.requires_grad)
        if not isinstance(z, torch.Tensor):  # nothing depends on the gates twice (e.g. a linear model)
            return {n: torch.zeros_like(gv[n]).detach() for n in names}
        hg = _grads(z, gate_list)
    return {n: h.detach() for n, h in zip(names, hg)}


def complete(groups: ChannelGroups, scores: dict[str, torch.Tensor], missing: Sequence[str],
             owner: str) -> dict[str, torch.Tensor]:
    """Give groups the criterion cannot score (no gate point, no BatchNorm…) the highest score seen, so that
    they are removed last, and say so once."""
    if not missing:
        return scores
    present = [v.abs().max().cpu() for k, v in scores.items() if k not in missing and v.numel()]
    top = float(torch.stack(present).max()) if present else 1.0
    device = next((v.device for v in scores.values()), torch.device("cpu"))
    warnings.warn(f"criterion {owner!r} cannot score channel groups {list(missing)[:5]} (no gate point or "
                  f"normalisation layer on their channels); they score the maximum and are removed last",
                  stacklevel=3)
    for name in missing:
        scores[name] = torch.full((groups[name].width,), top, device=device)
    return scores


class GatedCriterion(Criterion):
    """Base of criteria that score through per-channel gates: keeps one :class:`Gates` for the groups it is
    attached to."""

    needs_batches = True

    def __init__(self) -> None:
        super().__init__()
        self._gates: Any = None

    def attach(self, groups: ChannelGroups) -> None:
        self._gates = Gates(groups)

    def detach(self) -> None:
        if self._gates is not None:
            self._gates.close()
        self._gates = None

    def gates_for(self, groups: ChannelGroups) -> Gates:
        """The attached gates, or fresh ones when scoring groups it was not attached to."""
        if self._gates is not None and self._gates.groups is groups:
            return self._gates
        return Gates(groups)


__all__ = ["GatePoint", "GatedCriterion", "Gates", "PRODUCT", "PRODUCTS", "channel_dim", "complete", "filter_view",
           "gate_gradients", "gate_hvp", "gate_points", "is_norm", "parameter_taylor", "preserve_norm_stats",
           "twice_differentiable"]
