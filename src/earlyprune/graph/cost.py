"""How the MACs and parameters of a model respond to removing channels of each group.

For every parametrised layer ``m`` touched by a group, its output-channel fraction and input-channel fraction
after removing ``r_g`` channels of each group ``g`` are

    f_out(m) = 1 − Σ_g r_g · mult(g, m, out) / C_out(m),     f_in(m) = 1 − Σ_g r_g · mult(g, m, in) / C_in(m)

and its cost becomes ``MACs(m)·f_out·f_in`` (a convolution's or linear layer's weight scales with both, a bias,
a norm's γ/β or a depthwise kernel with one). This is exact for the layers whose MACs we count
(see :mod:`earlyprune.graph.metrics`), so a removal plan's MACs and parameters are known before anything is cut —
which is what the ``target="flops"`` / ``"params"`` searches and the compute-aware criteria need.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
from torch import nn

from .metrics import CHANNEL_LAYERS, LayerProfile, is_depthwise


class LayerLike(Protocol):
    """What the cost model reads of a group's layer (:class:`earlyprune.graph.groups.LayerRef` is one)."""

    module: Any          #: an ``nn.Module`` or a bare ``nn.Parameter``
    role: str            #: "out" or "in"
    multiplicity: int    #: entries of the layer's ``role`` dimension per group channel


class CostModel:
    """Vectorised cost of the model as a function of the channels removed per group.

    Args:
        group_layers: for each group, in group order, the layers it touches (``ChannelGroup.layers``).
        profile: the model's layer profile (:func:`earlyprune.graph.metrics.profile_layers`): MACs per layer.
        graph: torch-pruning's dependency graph of the model (channel counts of each layer, as it prunes them).
        total_params: parameters of the whole model (those of layers no group touches stay constant).
    """

    def __init__(self, group_layers: Sequence[Sequence[LayerLike]], profile: LayerProfile, graph: Any,
                 total_params: int) -> None:
        modules: list = []
        index: dict[int, int] = {}
        for layers in group_layers:
            for ref in layers:
                if id(ref.module) not in index:
                    index[id(ref.module)] = len(modules)
                    modules.append(ref.module)
        n_groups, n_mod = len(group_layers), len(modules)
        self.c_out = np.zeros((n_groups, n_mod))
        self.c_in = np.zeros((n_groups, n_mod))
        self.macs0 = np.zeros(n_mod)
        self.w_both = np.zeros(n_mod)  # params scaling with output and input channels (conv/linear kernels)
        self.w_out = np.zeros(n_mod)   # params scaling with one channel dimension (biases, norms, depthwise)
        two_dims = np.zeros(n_mod, dtype=bool)
        dims_out = np.ones(n_mod)
        dims_in = np.ones(n_mod)
        for j, m in enumerate(modules):
            if isinstance(m, nn.Parameter):
                # torch-pruning internal: a bare parameter's Node.pruning_dim (tests/test_torch_pruning_internals.py)
                dims_out[j] = m.shape[graph.module2node[m].pruning_dim]
                self.w_out[j] = m.numel()
                continue
            pruner = graph.get_pruner_of_module(m)
            dims_out[j] = max(pruner.get_out_channels(m) or 1, 1)
            own = list(m.parameters(recurse=isinstance(m, nn.MultiheadAttention)))
            if isinstance(m, CHANNEL_LAYERS) and not is_depthwise(m):
                two_dims[j] = True
                dims_in[j] = max(pruner.get_in_channels(m) or 1, 1)
                self.w_both[j] = m.weight.numel()
                self.w_out[j] = sum(p.numel() for p in own) - m.weight.numel()
            else:
                self.w_out[j] = sum(p.numel() for p in own)
            if m in profile.mac_factors:
                self.macs0[j] = profile.macs(m)
        for g, layers in enumerate(group_layers):
            for ref in layers:
                j = index[id(ref.module)]
                if two_dims[j] and ref.role == "in":
                    self.c_in[g, j] += ref.multiplicity / dims_in[j]
                elif two_dims[j]:
                    self.c_out[g, j] += ref.multiplicity / dims_out[j]
                else:  # one channel dimension: both roles name the same channel (e.g. depthwise in/out)
                    self.c_out[g, j] = max(self.c_out[g, j], ref.multiplicity / dims_out[j])
        all_macs = sum(profile.macs(m) for m in profile.mac_factors)
        self.const_macs = float(all_macs - self.macs0.sum())
        self.const_params = float(total_params - self.w_both.sum() - self.w_out.sum())
        self.macs_per_channel = self.macs0 @ (self.c_out + self.c_in).T if n_mod else np.zeros(n_groups)
        self.params_per_channel = (self.w_both @ (self.c_out + self.c_in).T + self.w_out @ self.c_out.T
                                   if n_mod else np.zeros(n_groups))

    def _fractions(self, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        removed = np.asarray(removed, dtype=np.float64)
        f_out = np.clip(1.0 - removed @ self.c_out, 0.0, 1.0)
        f_in = np.clip(1.0 - removed @ self.c_in, 0.0, 1.0)
        return f_out, f_in

    def macs(self, removed: np.ndarray) -> float:
        """MACs per example after removing ``removed[g]`` channels from each group ``g``."""
        f_out, f_in = self._fractions(removed)
        return self.const_macs + float(self.macs0 @ (f_out * f_in))

    def params(self, removed: np.ndarray) -> float:
        """Parameters after removing ``removed[g]`` channels from each group ``g``."""
        f_out, f_in = self._fractions(removed)
        return self.const_params + float(self.w_both @ (f_out * f_in) + self.w_out @ f_out)

    def total_macs(self) -> float:
        return self.macs(np.zeros(self.c_out.shape[0]))

    def total_params(self) -> float:
        return self.params(np.zeros(self.c_out.shape[0]))
