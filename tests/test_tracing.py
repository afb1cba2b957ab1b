"""earlyprune.graph.tracing: groups torch-pruning cannot compute or map are kept whole (the rest is still pruned
exactly), index mappings are bounded, and torch-pruning is unchanged for everyone else."""

import contextlib
import copy
import warnings

import pytest
import torch
import torch_pruning as tp

import earlyprune as ep
from earlyprune.graph import tracing
from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.selection import select
from masking import mask_, removed_entries
from nets import ConcatNet, DepthwiseNet, ResidualNet, ShuffleNet, randomize_

SHUFFLED = {"stem.0", "units.0.branch.5", "units.1.branch.5"}  # their channels pass the channel shuffle


def _groups(model, x):
    with pytest.warns(UserWarning, match="keep all their output channels because torch-pruning cannot map"):
        return ChannelGroups(model, x)


def _pruned_equals_masked(model, groups, x):
    scores = {g.name: torch.rand(g.width, generator=torch.Generator().manual_seed(1)) for g in groups}
    plan = select(groups, scores, 0.4)
    assert plan.n_removed > 0
    masked = copy.deepcopy(model)
    mask_(masked, removed_entries(groups, plan))
    PruningEngine(groups).apply(plan)
    torch.testing.assert_close(model.eval()(x), masked.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_channel_shuffle_keeps_its_groups_whole_and_the_rest_prunes_exactly():
    model, x = randomize_(ShuffleNet()).eval(), torch.randn(2, 3, 8, 8)
    groups = _groups(model, x)
    assert set(groups.kept) == SHUFFLED and "IndexMappingDiverged" in groups.kept["stem.0"]
    assert groups.names == ["units.0.branch.0", "units.1.branch.0", "head.0"]
    _pruned_equals_masked(model, groups, x)


def test_a_group_indexing_past_a_layer_is_refused_even_when_it_does_not_diverge(monkeypatch):
    monkeypatch.setattr(tracing, "INDEX_LIMIT_FACTOR", 10**6)  # the bound never fires: check_fits must
    groups = _groups(randomize_(ShuffleNet()).eval(), torch.randn(2, 3, 8, 8))
    assert set(groups.kept) == SHUFFLED and "maps the group onto index" in groups.kept["stem.0"]


def test_torch_pruning_itself_is_unchanged_outside_earlyprune_graphs():
    model = ShuffleNet().eval()
    graph = tp.DependencyGraph().build_dependency(model, torch.randn(2, 3, 8, 8), verbose=False)
    group = graph.get_pruning_group(model.stem[0], tp.prune_conv_out_channels, list(range(8)))
    assert max(len(item.idxs) for item in group) > 8  # torch-pruning's own (wrong) mapping, no error


def test_a_node_torch_pruning_cannot_map_keeps_the_groups_through_it(monkeypatch):
    def fails(graph, node):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setitem(tracing._ORIGINAL_UPDATES, "update_concat_index_mapping", fails)
    model, x = randomize_(ConcatNet()).eval(), torch.randn(2, 3, 8, 8)
    groups = _groups(model, x)
    assert set(groups.kept) == {"a.0", "b.0"} and "cannot map" in groups.kept["a.0"]
    assert "stem.0" in groups.names and "mix.0" in groups.names
    _pruned_equals_masked(model, groups, x)
    with pytest.raises(ZeroDivisionError):  # a plain torch-pruning graph still sees its own error
        tp.DependencyGraph().build_dependency(ConcatNet().eval(), x, verbose=False)


def test_a_model_with_kept_groups_saves_and_loads(tmp_path):
    model, x = randomize_(ShuffleNet()).eval(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep.prune(model, x, 0.3)
        loaded = ep.load(ep.save(model, tmp_path / "m.safetensors"), ShuffleNet())
    assert torch.equal(loaded.eval()(x), model(x))


@pytest.mark.parametrize("net", [ConcatNet, ShuffleNet])
def test_index_mappings_computed_once_per_unchanged_model_give_the_same_groups(monkeypatch, net):
    def layers(groups):
        return [[(r.name, r.role, r.idxs.tolist(), r.root_idxs.tolist()) for r in g.layers] for g in groups]

    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        once = ChannelGroups(net().eval(), x)
        calls = []
        original = tracing._ORIGINAL_UPDATES["update_index_mapping"]
        monkeypatch.setitem(tracing._ORIGINAL_UPDATES, "update_index_mapping",
                            lambda graph: (calls.append(1), original(graph))[1])
        monkeypatch.setattr(tracing.Graph, "unchanged", lambda self: contextlib.nullcontext())
        every = ChannelGroups(net().eval(), x)
    assert len(calls) > 2 * len(every)  # without the block: once per group, and again per refresh
    assert once.names == every.names and layers(once) == layers(every) and once.kept == every.kept


@pytest.mark.parametrize("net", [ConcatNet, ShuffleNet, ResidualNet, DepthwiseNet])
def test_the_indexed_group_walk_gives_torch_pruning_s_own_groups(monkeypatch, net):
    """Inside a Graph's walk, Group.has_pruning_op / add_and_merge answer from an index; outside, torch-pruning's
    own scans run: the groups (layers, index sets) must be the same."""
    def layers(groups):
        return [[(r.name, r.role, r.idxs.tolist(), r.root_idxs.tolist()) for r in g.layers] for g in groups]

    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        indexed = ChannelGroups(randomize_(net()).eval(), x)
        monkeypatch.setattr(tracing, "INDEX_LIMIT_FACTOR", 10**9)  # never diverges: only the walk differs
        bounded = ChannelGroups(randomize_(net()).eval(), x)
        monkeypatch.setattr(tracing.Graph, "get_pruning_group", tp.DependencyGraph.get_pruning_group)
        scanned = ChannelGroups(randomize_(net()).eval(), x)
    assert bounded.names == scanned.names and layers(bounded) == layers(scanned)
    assert set(indexed.kept) == set(scanned.kept)
