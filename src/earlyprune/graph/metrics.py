"""Model size and cost: parameters, MACs, weight and node sparsity.

MACs count the multiply-accumulates of convolutions (transposed ones included) and linear layers for **one
example** (batch size 1): ``weight.numel() × output positions`` for a convolution, ``weight.numel() × input
positions`` for a transposed one, ``weight.numel() × tokens`` for a linear layer. Element-wise ops, norms,
pooling and the attention matmuls of ``nn.MultiheadAttention`` are not counted (they are a small share of the
cost of the networks this library targets, and every counter disagrees on them).

Sparsity follows the definitions of EarlyCroP's code (its Tables 1-2): *weight sparsity* is
``1 − weights/weights₀`` over every parameter whose name contains ``weight`` (BatchNorm γ, an LSTM's
``weight_hh_l0`` and attention's ``in_proj_weight`` included, as the reference code's ``'weight' in name``), a
weight masked by unstructured pruning (:mod:`earlyprune.graph.masks`) counting as removed; *node
sparsity* is
``1 − nodes/nodes₀`` over the output channels of convolution and linear layers, the classifier outputs
excluded (unstructured masks remove no node: dense kernels still compute every output). Parameters and MACs
count what dense kernels store and compute, masked entries included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..core.batch import call_model  # noqa: F401  (re-exported: earlyprune.graph.metrics.call_model)
from ..core.batch import flat_tensors as _flat_tensors
from ..core.validation import EXAMPLE_INPUTS, MODEL, InstanceOf, InvalidParameterError, Rule, checked, rule
from .masks import mask_of, plain_name

#: layers whose output channels are "nodes" and whose cost is counted
CHANNEL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d, nn.Linear)


def is_depthwise(m: object) -> bool:
    """A depthwise convolution: one filter per channel (``groups == in_channels == out_channels > 1``)."""
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def layer_mac_factor(module: nn.Module, inputs: tuple, output: torch.Tensor, batch: int) -> int:
    """Positions at which a layer's weight is applied for one example: MACs = ``weight.numel() × factor``."""
    if isinstance(module, nn.Linear):
        return output.numel() // (batch * module.out_features)
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        x = inputs[0]
        return x.numel() // (batch * x.shape[1])
    return output.numel() // (batch * output.shape[1])


@dataclass(frozen=True)
class LayerProfile:
    """What one traced forward pass says about the channel layers of a model."""

    mac_factors: dict[nn.Module, int]   #: MACs = weight.numel() × factor, per example
    output_layers: tuple[nn.Module, ...]  #: layers whose output channels are the network's outputs

    def macs(self, module: nn.Module) -> int:
        return module.weight.numel() * self.mac_factors.get(module, 0)


def profile_layers(model: nn.Module, example_inputs: Any, *, train: bool = False) -> LayerProfile:
    """Trace one forward pass: the MAC factor of every channel layer and the layers that produce the outputs.

    Output layers are found by walking the autograd graph back from each model output until a channel layer is
    met: those layers (the classifier, or every producer of an output-feeding residual stream) must keep their
    output channels. The pass runs in eval mode, or in training mode with ``train=True`` (to see outputs that
    exist only in training, such as auxiliary classifiers; the caller keeps the buffers, see
    :func:`earlyprune.graph.tracing.preserved`).
    """
    batch_tensor = _first_tensor(example_inputs)
    if batch_tensor is None:
        raise InvalidParameterError("example_inputs must contain at least one tensor (the batch dimension comes first)")
    batch = max(int(batch_tensor.shape[0]), 1) if batch_tensor.dim() > 0 else 1
    factors: dict[nn.Module, int] = {}
    producer: dict[Any, nn.Module] = {}

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            factors[module] = layer_mac_factor(module, inputs, output, batch)
            if output.grad_fn is not None:
                producer[output.grad_fn] = module

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, CHANNEL_LAYERS)]
    was_training = model.training
    model.train(train)
    try:
        with torch.enable_grad():
            out = call_model(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    outputs: list[nn.Module] = []
    stack = [t.grad_fn for t in _flat_tensors(out) if t.grad_fn is not None]
    seen: set[int] = set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if fn in producer:
            if producer[fn] not in outputs:
                outputs.append(producer[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return LayerProfile(factors, tuple(outputs))


@dataclass(frozen=True)
class ModelStats:
    """Size and cost of a model; the sparsities are set when a baseline (the dense model's stats) is given."""

    params: int
    macs: int
    weights: int
    nodes: int
    node_sparsity: float | None = None
    weight_sparsity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the arguments' rules of :func:`measure`
MEASURE_RULES: dict[str, Rule] = {
    "model": MODEL,
    "example_inputs": EXAMPLE_INPUTS,
    "baseline": rule(InstanceOf(ModelStats, "the ModelStats that measure() returned for the original model"), None),
}


@checked(MEASURE_RULES)
def measure(model: nn.Module, example_inputs: Any, baseline: ModelStats | None = None) -> ModelStats:
    """Parameters, MACs per example, weight count and node count of ``model``.

    Args:
        model: any module that ``example_inputs`` can be fed to.
        example_inputs: a tensor, tuple of tensors or dict of keyword tensors; the first dimension is the batch.
        baseline: the stats of the original (dense) model; with it, ``node_sparsity`` and ``weight_sparsity``
            are filled in relative to it.
    """
    profile = profile_layers(model, example_inputs)
    params = sum(p.numel() for p in model.parameters())
    weights = sum(_kept_entries(model, plain_name(name), p) for name, p in model.named_parameters()
                  if "weight" in plain_name(name).rsplit(".", 1)[-1])
    macs = sum(profile.macs(m) for m in profile.mac_factors)
    nodes = sum(_out_channels(m) for m in model.modules()
                if isinstance(m, CHANNEL_LAYERS) and m not in profile.output_layers)
    node_sp = weight_sp = None
    if baseline is not None:
        node_sp = 1.0 - nodes / baseline.nodes if baseline.nodes else 0.0
        weight_sp = 1.0 - weights / baseline.weights if baseline.weights else 0.0
    return ModelStats(params, macs, weights, nodes, node_sp, weight_sp)


def _kept_entries(model: nn.Module, name: str, param: torch.Tensor) -> int:
    """Entries of a parameter that are not masked away (all of them when it carries no weight mask)."""
    module_name, _, attr = name.rpartition(".")
    mask = mask_of(model.get_submodule(module_name) if module_name else model, attr)
    return param.numel() if mask is None else mask.kept


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels
