"""Find the prunable parts of a transformer: attention heads and MLP intermediate neurons.

A transformer block has two kinds of prunable channels — the heads of its self-attention (query, key and value
features, removed one whole head at a time so every head keeps its width) and the intermediate neurons of its
MLP — and one kind that must stay: the hidden size of the residual stream, which the embeddings, every block's
output projections and the layer norms share. :func:`find_blocks` recognises the layouts below by attribute
names, and returns what :class:`~earlyprune.EarlyPruner` needs: ``num_heads`` for the query/key/value projections
and ``ignored_layers`` that keep every other layer's output channels (the residual stream, poolers, heads of
the task, patch embeddings).

=================  ==============================================  =======================================
family             attention (head width attribute)                MLP up-projection
=================  ==============================================  =======================================
BERT, RoBERTa, …   ``query`` / ``key`` / ``value`` (``attention_head_size``)   ``intermediate.dense``
ViT, DeiT, …       ``q_proj`` / ``k_proj`` / ``v_proj`` (``head_dim``)         ``mlp.fc1``
=================  ==============================================  =======================================

GPT-2 (and other models built from ``transformers.pytorch_utils.Conv1D``) are refused. torch-pruning 1.6's
dependency graph has no rule for that layer (its weight is stored transposed, ``(in, out)``), so it traces no
prunable group in it at all. A custom rule fixes the MLP (``c_fc`` → ``c_proj`` groups come out right) but not
the attention: the fused ``c_attn`` output (query, key and value side by side, then ``split``) is coupled index
for index to the input of ``c_proj``, which only the value part feeds — so the graph cannot express a head, and
pruning through it would cut the wrong features. Grouped-query attention (fewer key/value heads than query heads) is refused too:
removing a query head there does not remove a key/value head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..core.validation import InvalidParameterError

#: (query, key, value) attribute names of an attention module, and the attribute holding the head width
ATTENTION_LAYOUTS = ((("query", "key", "value"), ("attention_head_size", "head_dim")),
                     (("q_proj", "k_proj", "v_proj"), ("head_dim", "attention_head_size")))
#: (parent attribute, layer attribute) of an MLP's up-projection: its output channels are the MLP neurons
MLP_LAYOUTS = (("intermediate", "dense"), ("mlp", "fc1"))


@dataclass
class TransformerBlocks:
    """What to prune in a transformer: heads of the attention modules, MLP neurons, and every other layer kept."""

    num_heads: dict[nn.Module, int] = field(default_factory=dict)
    mlp: list[nn.Module] = field(default_factory=list)
    ignored_layers: list[nn.Module] = field(default_factory=list)
    attention_names: list[str] = field(default_factory=list)
    mlp_names: list[str] = field(default_factory=list)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers")


def find_blocks(model: nn.Module, *, heads: bool = True, mlp: bool = True) -> TransformerBlocks:
    """The attention heads and MLP neurons of ``model`` (see the module docstring for the layouts recognised).

    Raises :class:`~earlyprune.InvalidParameterError` (a ValueError), naming the model class, when nothing prunable
    is recognised or the model uses a layer torch-pruning cannot follow.
    """
    if not heads and not mlp:
        raise InvalidParameterError("nothing to prune: heads=False and mlp=False")
    conv1d = [name for name, m in model.named_modules() if _is_conv1d(m)]
    if conv1d:
        raise InvalidParameterError(
            f"{type(model).__name__} is built from transformers' Conv1D layers ({conv1d[0]}, …; GPT-2 style). "
            f"torch-pruning 1.6's dependency graph has no rule for Conv1D (its weight is stored as (in, out)) and "
            f"maps the fused query/key/value projection c_attn index for index onto c_proj, so heads cannot be "
            f"pruned consistently; BERT- and ViT-style models (nn.Linear projections) are supported")
    found = TransformerBlocks()
    keep: set[nn.Module] = set()
    for name, module in model.named_modules():
        for (q, k, v), width_attrs in ATTENTION_LAYOUTS:
            layers = [getattr(module, a, None) for a in (q, k, v)]
            head_dim = next((getattr(module, a) for a in width_attrs if isinstance(getattr(module, a, None), int)),
                            None)
            if not all(isinstance(m, nn.Linear) for m in layers) or head_dim is None:
                continue
            widths = {m.out_features for m in layers}
            if len(widths) != 1:
                raise InvalidParameterError(f"{name}: query/key/value widths differ {sorted(widths)} (grouped-query "
                                 f"attention); removing a query head would not remove a key/value head")
            if heads:
                for layer in layers:
                    found.num_heads[layer] = layer.out_features // head_dim
                    keep.add(layer)
                found.attention_names.append(name)
            break
        for parent, attr in MLP_LAYOUTS:
            up = getattr(getattr(module, parent, None), attr, None)
            if isinstance(up, nn.Linear) and mlp:
                found.mlp.append(up)
                found.mlp_names.append(f"{name}.{parent}.{attr}".lstrip("."))
                keep.add(up)
    if not found.num_heads and not found.mlp:
        raise InvalidParameterError(
            f"found no attention heads or MLP layers to prune in {type(model).__name__}: recognised are modules with "
            f"query/key/value (+ attention_head_size) or q_proj/k_proj/v_proj (+ head_dim) nn.Linear layers, and "
            f"MLPs at intermediate.dense or mlp.fc1; pass num_heads= and ignored_layers= to EarlyPruner yourself "
            f"for other layouts")
    # every other producer keeps its output channels: the residual stream, poolers, the task head
    found.ignored_layers = [m for m in model.modules()
                            if isinstance(m, (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)) and m not in keep]
    return found
