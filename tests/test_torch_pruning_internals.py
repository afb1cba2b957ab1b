"""The torch-pruning internals earlyprune relies on are still where it expects them.

earlyprune reaches past torch-pruning's documented API in a few places (each marked by a comment naming this
file). If an upgrade of torch-pruning moves one of them, this test says which attribute and which earlyprune
module reads it — instead of a pruning run failing somewhere deep, or silently slicing the wrong dimension.
"""

import pytest
import torch
import torch_pruning as tp
from torch import nn


class ScaledNet(nn.Module):
    """conv → bare per-channel scale (an ``nn.Parameter`` outside any layer) → conv: the graph has a node for a
    parameter, as in ConvNeXt's layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(8))
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)) * self.scale.view(1, -1, 1, 1))


@pytest.fixture()
def graph():
    model = ScaledNet()
    g = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8), verbose=False,
                                              unwrapped_parameters=[(model.scale, 0)])
    return model, g


def need(condition: bool, what: str, used_by: str) -> None:
    if not condition:
        pytest.fail(f"torch-pruning {getattr(tp, '__version__', '?')} no longer provides {what}, which "
                    f"earlyprune's {used_by} reads; adapt it there (and pin torch-pruning until then)")


def test_graph_param_to_name(graph):
    model, g = graph
    need(hasattr(g, "_param_to_name"), "DependencyGraph._param_to_name", "groups.py (ChannelGroups._name_of) and "
         "engine.py (PruningEngine._locate)")
    need(g._param_to_name.get(model.scale) == "scale", "DependencyGraph._param_to_name[param] == its qualified name",
         "groups.py and engine.py")


def test_module2node_nodes_and_their_pruning_dim(graph):
    model, g = graph
    need(isinstance(getattr(g, "module2node", None), dict), "DependencyGraph.module2node (a dict)",
         "groups.py (_warn_untraced), cost.py and criteria/gates.py (gate_points)")
    node = g.module2node.get(model.scale)
    need(node is not None and getattr(node, "pruning_dim", None) == 0,
         "module2node[bare parameter].pruning_dim", "cost.py (CostModel)")
    conv = g.module2node.get(model.conv1)
    need(conv is not None and all(hasattr(n, "module") for n in getattr(conv, "outputs", [None])),
         "Node.outputs (list of nodes with .module)", "criteria/gates.py (gate_points)")


def test_handlers_are_bound_to_pruners_that_read_pruning_dim(graph):
    model, g = graph
    group = g.get_pruning_group(model.conv1, tp.prune_conv_out_channels, [0])
    for item in group:
        need(all(hasattr(item.dep, a) for a in ("handler", "target")) and hasattr(item.dep.target, "pruning_dim"),
             "Dependency.handler / .target.pruning_dim", "optimizer_state.py (_call_handler)")
        need(hasattr(item, "idxs") and hasattr(item, "root_idxs"), "GroupItem.idxs / .root_idxs",
             "groups.py (ChannelGroups.refresh)")
    scale_deps = [item.dep for item in group if item.dep.target.module is model.scale]
    need(len(scale_deps) == 1 and hasattr(scale_deps[0].handler, "__self__"),
         "a bare parameter's handler bound to a pruner object (handler.__self__)", "optimizer_state.py (_call_handler)")
    handler = scale_deps[0].handler
    saved = getattr(handler.__self__, "pruning_dim", None)
    try:  # the dimension the handler slices is the one set on handler.__self__ (what _call_handler relies on)
        shapes = []
        for dim in (0, 1):
            handler.__self__.pruning_dim = dim
            shapes.append(tuple(handler(nn.Parameter(torch.zeros(8, 8), requires_grad=False), [0, 1]).shape))
    finally:
        handler.__self__.pruning_dim = saved
    need(shapes == [(6, 8), (8, 6)], "handler.__self__.pruning_dim as the dimension the handler prunes (set by "
         "Dependency.__call__)", "optimizer_state.py (_call_handler)")


def test_public_graph_methods_earlyprune_calls(graph):
    model, g = graph
    for name, used_by in (("get_all_groups", "groups.py"), ("get_pruning_group", "groups.py"),
                          ("is_out_channel_pruning_fn", "groups.py"), ("get_pruner_of_module", "cost.py"),
                          ("get_out_channels", "groups.py"), ("pruning_history", "structure.py"),
                          ("load_pruning_history", "io.py")):
        need(callable(getattr(g, name, None)), f"DependencyGraph.{name}()", used_by)
    pruner = g.get_pruner_of_module(model.conv1)
    need(callable(getattr(pruner, "get_out_channels", None)) and callable(getattr(pruner, "get_in_channels", None)),
         "pruner.get_out_channels() / get_in_channels()", "cost.py (CostModel)")


def test_an_earlyprune_model_with_a_bare_parameter_prunes_and_names_it():
    import earlyprune as ep

    model = ScaledNet()
    groups = ep.ChannelGroups(model, torch.randn(2, 3, 8, 8))
    names = {ref.name for g in groups for ref in g.layers}
    assert "scale" in names                                   # named through _param_to_name
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    ep.prune(model, torch.randn(2, 3, 8, 8), 0.5, optimizer=opt)
    assert model.scale.shape[0] == model.conv1.out_channels < 8
    assert opt.state[model.scale]["momentum_buffer"].shape == model.scale.shape   # sliced along pruning_dim


def test_index_mapping_internals_that_tracing_guards():
    from torch_pruning.dependency import index_mapping

    from earlyprune.graph import tracing

    for name in tracing._UPDATES:
        need(callable(getattr(index_mapping, name, None)), f"torch_pruning.dependency.index_mapping.{name}",
             "tracing.py (_guard_updates: unmapped nodes)")
    flatten = getattr(index_mapping, "_FlattenIndexMapping", None)
    need(flatten is not None, "index_mapping._FlattenIndexMapping", "tracing.py (bounded index lists)")
    mapping = flatten(stride=3, reverse=False)
    need(hasattr(mapping, "_stride") and hasattr(mapping, "reverse"), "_FlattenIndexMapping._stride / .reverse",
         "tracing.py (bounded index lists)")
    need(isinstance(getattr(tp.DependencyGraph(), "IGNORED_LAYERS_IN_TRACING", None), list),
         "DependencyGraph.IGNORED_LAYERS_IN_TRACING (a list)", "groups.py (ChannelGroups._tp_groups)")
    model = ScaledNet()
    graph = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8), verbose=False,
                                                  unwrapped_parameters=[(model.scale, 0)])
    need(graph._module2name.get(model.conv1) == "conv1", "DependencyGraph._module2name",
         "tracing.py (check_fits: the layer's name)")


def test_group_internals_that_tracing_indexes(graph):
    model, g = graph
    group = g.get_pruning_group(model.conv1, tp.prune_conv_out_channels, [0, 1])
    for attr in ("has_pruning_op", "add_dep", "add_and_merge"):
        need(callable(getattr(tp.dependency.Group, attr, None)), f"Group.{attr}", "tracing.py (_ItemIndex)")
    need(isinstance(getattr(group, "_group", None), list) and all(hasattr(i, "dep") and hasattr(i, "idxs")
                                                                   for i in group._group),
         "Group._group (a list of items with .dep and .idxs)", "tracing.py (_ItemIndex)")
    item = tp._helpers.GroupItem(dep=group[0].dep, idxs=[0])
    need(item.dep is group[0].dep and item.idxs == [0], "torch_pruning._helpers.GroupItem(dep=, idxs=)",
         "tracing.py (add_and_merge)")


def test_what_a_rollback_restores_and_assumes(graph):
    """rollback.py (Snapshot) restores these graph attributes and relies on a removal replacing parameters by new
    tensors (the old ones stay intact, so holding references is a complete backup)."""
    model, g = graph
    need(isinstance(getattr(g, "_pruning_history", None), list), "DependencyGraph._pruning_history (a list)",
         "rollback.py (Snapshot.restore)")
    need(all(hasattr(n, "module") for n in g.module2node.values()), "Node.module", "rollback.py (Snapshot.restore)")
    old_weight, old_scale = model.conv1.weight, model.scale
    kept = old_weight.detach().clone()
    group = g.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[0, 1])
    group.prune()
    need(model.conv1.weight is not old_weight and torch.equal(old_weight.detach(), kept)
         and old_weight.shape[0] == 8, "Group.prune() replacing parameters by new ones (the old left intact)",
         "rollback.py (Snapshot keeps references, not copies)")
    need(model.scale is not old_scale and g._param_to_name.get(model.scale) == "scale",
         "bare parameters re-keyed in _param_to_name after pruning", "rollback.py (Snapshot.restore)")
    need(len(g._pruning_history) == 1, "one _pruning_history entry per Group.prune()", "rollback.py and io.py")
