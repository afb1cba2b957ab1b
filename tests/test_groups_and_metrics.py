"""Channel groups (coupling, output detection, per-channel cost) and measure() against hand counts."""

import warnings

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.selection import Plan
from nets import MLP, ConcatNet, DepthwiseNet, ResidualNet


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(54, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))).flatten(1))


def test_measure_matches_hand_counts():
    stats = ep.measure(Tiny(), torch.randn(2, 1, 6, 6))
    # conv1 4·1·9 + 4 bias, bn 2·4, conv2 6·4·9, fc 54·3 + 3
    assert stats.params == 40 + 8 + 216 + 165
    # per image: conv1 4·9·36 positions, conv2 6·36·9 positions, fc 54·3
    assert stats.macs == 1296 + 1944 + 162
    assert stats.weights == 36 + 4 + 216 + 162          # every tensor named "weight", BatchNorm γ included
    assert stats.nodes == 4 + 6                          # classifier outputs excluded
    assert stats.node_sparsity is None


def test_sparsity_relative_to_baseline():
    x = torch.randn(2, 1, 6, 6)
    model = Tiny()
    dense = ep.measure(model, x)
    ep.prune(model, x, 0.5)
    after = ep.measure(model, x, baseline=dense)
    assert after.nodes == 5                              # half of the 10 nodes
    assert after.node_sparsity == pytest.approx(0.5)
    assert after.weight_sparsity == pytest.approx(1 - after.weights / dense.weights)
    assert 0 < after.weight_sparsity < 1


def test_residual_stream_is_one_group_and_classifier_is_never_pruned():
    model, x = ResidualNet(), torch.randn(2, 3, 8, 8)
    groups = ChannelGroups(model, x)
    producers = {g.name: sorted(r.name for r in g.producers()) for g in groups}
    assert sorted(producers.values()) == sorted([
        ["b1.0.0"], ["b2.0.0"], ["down.0.0"],
        ["b1.1", "b2.1", "stem.0"],         # the first stream: three producers, one index set
        ["down.1", "short.0"],              # the second stream, shortcut conv included
    ])
    assert groups.output_layers == (model.fc,)
    assert all(not (r.module is model.fc and r.role == "out") for g in groups for r in g.layers)
    assert groups.baseline["channels"] == 8 + 12 + 12 + 16 + 16


def test_ignored_layers_keep_their_outputs():
    model, x = ResidualNet(), torch.randn(2, 3, 8, 8)
    groups = ChannelGroups(model, x, ignored_layers=[model.b1[0][0]])
    assert "b1.0.0" not in groups.names
    with pytest.raises(ValueError, match="submodules of the model"):
        ChannelGroups(model, x, ignored_layers=[nn.Linear(2, 2)])


def test_concat_and_flatten_linear_mapping():
    model, x = ConcatNet(), torch.randn(2, 3, 8, 8)
    groups = ChannelGroups(model, x)
    b = groups["b.0"]
    mix_in = next(r for r in b.layers if r.name == "mix.0" and r.role == "in")
    assert sorted(mix_in.idxs.tolist()) == list(range(6, 16))     # second half of the concatenation
    mix = groups["mix.0"]
    fc_in = next(r for r in mix.layers if r.name == "fc" and r.role == "in")
    assert fc_in.multiplicity == 4                                 # one channel = 2×2 flattened features


def test_per_channel_costs_match_hand_counts():
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    first, second = groups["net.0"], groups["net.2"]
    assert (first.width, second.width) == (32, 24)
    assert first.params_per_channel == 20 + 1 + 24    # its row and bias, and a column of the next layer
    assert first.macs_per_channel == 20 + 24
    assert second.params_per_channel == 32 + 1 + 5
    assert second.macs_per_channel == 32 + 5


def test_depthwise_cost_counts_the_kernel_once():
    groups = ChannelGroups(DepthwiseNet(), torch.randn(2, 3, 8, 8))
    stem = groups["stem.0"]
    # stem conv 3·9·64 + dw1 9·64 + pw1 input column 24·64 per channel (8×8 positions everywhere)
    assert stem.macs_per_channel == (27 + 9 + 24) * 64


def test_grouped_convolution_channels_come_in_units_of_its_groups():
    from nets import GroupedNet

    groups = ChannelGroups(GroupedNet(), torch.randn(2, 3, 8, 8))
    assert groups["stem.0"].ch_groups == 4 and groups["grouped.0"].ch_groups == 4
    assert groups["head.0"].ch_groups == 1
    plan = ep.select(groups, {g.name: torch.rand(g.width) for g in groups}, 0.5)
    for name in ("stem.0", "grouped.0"):
        width = groups[name].width
        removed = plan.remove.get(name, [])
        positions = {i % (width // 4) for i in removed}
        assert len(removed) == 4 * len(positions)           # a position leaves every group at once


def test_a_grouped_convolution_pruned_to_one_channel_per_group_is_not_depthwise():
    """Pruned to one input and one output channel per group, a grouped convolution looks depthwise, but its input
    and output channels are two groups: neither may lose a channel any more (RegNet-Y broke at the second step)."""
    from nets import GroupedNet

    model, x = GroupedNet().eval(), torch.randn(2, 3, 8, 8)
    groups = ChannelGroups(model, x)
    engine = PruningEngine(groups)
    # stem: 8 → 4 (one channel per conv group), grouped: 16 → 4 (one per group)
    engine.apply(Plan({"stem.0": [0, 2, 4, 6], "grouped.0": [i for i in range(16) if i % 4]}, [], [], 0, 0.0, 0.0))
    conv = model.grouped[0]
    assert conv.groups == conv.in_channels == conv.out_channels == 4
    assert groups["stem.0"].ch_groups == groups["stem.0"].width == 4
    assert groups["grouped.0"].ch_groups == groups["grouped.0"].width == 4
    plan = ep.select(groups, {g.name: torch.rand(g.width) for g in groups}, 0.6)  # from the head only
    assert plan.remove.get("head.0") and "stem.0" not in plan.remove and "grouped.0" not in plan.remove
    engine.apply(plan)
    assert model(x).shape == (2, 5)


def test_bad_model_and_inputs_are_explained():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ChannelGroups("resnet", torch.randn(1, 3))
    with pytest.raises(ValueError, match="could not be run on example_inputs"):
        ChannelGroups(MLP(), torch.randn(2, 7))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ep.measure(None, torch.randn(1))


class AuxHead(nn.Module):
    """An auxiliary head used only in training (as in GoogLeNet): invisible to an eval-mode trace."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)
        self.aux = nn.Linear(8, 4)

    def forward(self, x):
        h = self.body(x).mean((2, 3))
        return (self.head(h), self.aux(h)) if self.training else self.head(h)


class AuxNet(nn.Module):
    """AuxHead with BatchNorm statistics and dropout draws that a training-mode trace must leave untouched."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 4)
        self.aux = nn.Linear(8, 4)

    def forward(self, x):
        h = self.body(x).mean((2, 3))
        return (self.head(h), self.aux(h)) if self.training else self.head(h)


def test_layers_used_only_in_training_are_traced_in_training_mode(tmp_path):
    """The auxiliary head runs only in training: the graph is traced in training mode so that its inputs follow
    pruning, its output layer is kept like the classifier, tracing leaves the model as it was, and load()
    replays the structure on a graph traced the same way."""
    model, x = AuxNet().eval(), torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = ChannelGroups(model, x)
    assert not model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.head in groups.output_layers and model.aux in groups.output_layers
    (group,) = list(groups)
    assert {ref.name for ref in group.layers} == {"body.0", "body.1", "head", "aux"}
    PruningEngine(groups).apply(Plan({group.name: [0, 1, 2]}, [5], [group.name], 5, 0.0, 0.0))
    assert model.aux.in_features == 5 and model.body[0].out_channels == 5
    assert model.train()(torch.randn(2, 3, 8, 8))[1].shape == (2, 4)
    loaded = ep.load(ep.save(model, tmp_path / "m.safetensors"), AuxNet())
    assert loaded.aux.in_features == 5 and loaded.head.in_features == 5
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_a_training_mode_trace_that_fails_falls_back_with_a_warning():
    # one example of 1x1: BatchNorm cannot compute training statistics, so only the eval-mode graph exists
    with pytest.warns(UserWarning, match="not reached when tracing.*aux.*tracing in training mode failed"):
        ChannelGroups(AuxNet(), torch.randn(1, 3, 1, 1))


def test_an_untraceable_model_gets_a_clear_error(monkeypatch):
    import torch_pruning as tp

    def broken(self, *args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", broken)
    with pytest.raises(ValueError, match="torch-pruning could not trace the channel dependencies of MLP"):
        ChannelGroups(MLP(), torch.randn(2, 20))


class TinyAttention(nn.Module):
    """A residual stream through multi-head attention: its width must stay a multiple of the heads."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 12)
        self.attn = nn.MultiheadAttention(12, num_heads=4, batch_first=True)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.fc(h.mean(1))


def test_attention_keeps_whole_heads_and_is_not_reported_untraced():
    import warnings as _warnings

    x = torch.randn(2, 5, 6)
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")                 # out_proj is used through its parent: no warning
        model = TinyAttention()
        groups = ChannelGroups(model, x)
    stream = groups["embed"]
    assert stream.width_multiple == 4
    for ratio in (0.3, 0.5, 0.9):
        scores = {g.name: torch.rand(g.width) for g in groups}
        if ratio == 0.9:                                # 90 % would leave less than one whole head: said so
            with pytest.raises(ep.InfeasibleTargetError, match="embed"):
                ep.select(groups, scores, ratio)
        plan = ep.select(groups, scores, ratio, clip=True)
        assert plan.structure[stream.index] % 4 == 0 and plan.structure[stream.index] >= 4
    fresh = TinyAttention()
    ep.prune(fresh, x, 0.5)
    assert fresh.attn.embed_dim % 4 == 0 and fresh(x).shape == (2, 3)
