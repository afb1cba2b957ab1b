"""round_to="auto": the latency table predicts the layer widths a plan leaves, and the choice follows the timings."""

import copy
import json
import math

import pytest
import torch
from nets import ARCHITECTURES, ResidualNet, cbr
from torch import nn

import earlyprune as ep
from earlyprune.criteria import CRITERIA, LatencyTable
from earlyprune.criteria.latency import _channels, _timed, clear_cache
from earlyprune.engine import PruningEngine
from earlyprune.groups import ChannelGroups
from earlyprune.rounding import AutoRoundTo, RoundToChoice, batch_size_of, check_round_to, pick
from earlyprune.selection import select


def wide_net() -> nn.Module:
    """Widths 32 / 48 / 64: wide enough for multiples up to 8 (a quarter of the median width, 48)."""
    return nn.Sequential(cbr(3, 32), cbr(32, 48), cbr(48, 64, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 5))


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def fake_layer_time(cost):
    """Replace the clock of LatencyTable by ``cost(c_in, c_out)`` per timed layer, and record the calls."""
    calls = []

    def layer_time(self, m, c_in, c_out, in_shape):
        calls.append((m, c_in, c_out, self.batch_size))
        return float(cost(c_in, c_out))
    return layer_time, calls


@pytest.mark.parametrize("arch", ["residual", "concat", "depthwise", "mlp"])
def test_structure_latency_sees_the_widths_the_engine_leaves(arch, monkeypatch):
    build, shape = ARCHITECTURES[arch]
    model = build().eval()
    x = torch.randn(shape)
    groups = ChannelGroups(model, x)
    layer_time, calls = fake_layer_time(lambda c_in, c_out: c_in * 1000 + c_out)
    monkeypatch.setattr(LatencyTable, "_layer_time", layer_time)
    scores = CRITERIA.build("random:3").scores(groups)
    plan = select(groups, scores, 0.4)
    LatencyTable().structure_latency(groups, {k: len(v) for k, v in plan.remove.items()})
    predicted = {id(m): (c_in, c_out) for m, c_in, c_out, _ in calls}
    PruningEngine(groups).apply(plan)        # prune for real and read the layers' shapes
    timed = [m for m in model.modules() if _timed(m) and id(m) in predicted]
    assert len(timed) == len(predicted) > 0
    for m in timed:
        assert predicted[id(m)] == _channels(m), m


def test_pick_takes_the_smallest_multiple_within_tolerance():
    assert pick({1: 1.0, 2: 0.99, 4: 0.90, 8: 0.89}, 0.03) == 4
    assert pick({1: 1.0, 2: 0.99, 4: 0.90, 8: 0.89}, 0.0) == 8
    assert pick({1: 0.5, 8: 0.6}, 0.03) == 1


def test_auto_prefers_tile_aligned_widths_when_the_device_does(monkeypatch):
    model, x = wide_net(), torch.randn(4, 3, 8, 8)
    groups = ChannelGroups(model, x)
    scores = CRITERIA.build("random:1").scores(groups)
    # a device that computes in 8×8 tiles: a layer costs the tiles it touches
    tiles, _ = fake_layer_time(lambda c_in, c_out: math.ceil(c_in / 8) * math.ceil(c_out / 8))
    monkeypatch.setattr(LatencyTable, "_layer_time", tiles)
    choice = AutoRoundTo().choose(groups, scores, 0.5)
    assert set(choice.seconds) == {1, 2, 4, 8}                       # 16, 32 > a quarter of the median width
    assert choice.value > 1 and choice.seconds[choice.value] < choice.seconds[1]
    widths = select(groups, scores, 0.5, round_to=choice.value).structure
    assert all(w % 8 == 0 for w in widths), widths                    # the plan it keeps fills whole tiles
    # a device where time follows MACs: no multiple beats the unconstrained plan by the tolerance → 1
    macs, _ = fake_layer_time(lambda c_in, c_out: c_in * c_out)
    monkeypatch.setattr(LatencyTable, "_layer_time", macs)
    assert AutoRoundTo(tolerance=0.2).choose(groups, scores, 0.5).value == 1


def test_auto_skips_multiples_that_cannot_reach_the_target(monkeypatch):
    model, x = wide_net(), torch.randn(4, 3, 8, 8)
    groups = ChannelGroups(model, x)
    layer_time, _ = fake_layer_time(lambda c_in, c_out: 1.0)
    monkeypatch.setattr(LatencyTable, "_layer_time", layer_time)
    choice = AutoRoundTo(candidates=(1, 8), max_fraction=1.0).choose(
        groups, CRITERIA.build("random:1").scores(groups), 0.9)   # 90 % with widths of multiples of 8: impossible
    assert set(choice.seconds) == {1} and choice.value == 1


def test_round_to_values_are_validated():
    assert check_round_to(8) == 8 and isinstance(check_round_to("auto"), AutoRoundTo)
    for bad in (0, -1, 2.5, True, "fast", None):
        with pytest.raises(ValueError, match="round_to must be an integer ≥ 1 or 'auto'"):
            check_round_to(bad)
    for kw, msg in (({"candidates": (0,)}, "candidates"), ({"tolerance": 1.5}, "tolerance"),
                    ({"max_fraction": 0}, "max_fraction")):
        with pytest.raises(ValueError, match=msg):
            AutoRoundTo(**kw)
    with pytest.raises(TypeError, match="LatencyTable"):
        AutoRoundTo(table=object())
    with pytest.raises(ValueError, match="round_to must be"):
        ep.prune(ResidualNet(), torch.randn(2, 3, 8, 8), 0.5, round_to=0)
    assert batch_size_of((torch.zeros(5, 2), 3)) == 5 and batch_size_of({"x": torch.zeros(7)}) == 7
    assert batch_size_of("text") is None


def test_timing_leaves_the_random_streams_alone():
    model, x = ResidualNet(), torch.randn(4, 3, 8, 8)
    groups = ChannelGroups(model, x)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LatencyTable(repeats=1, warmup=0).structure_latency(groups, {})   # builds and times layers
    assert torch.equal(torch.rand(3), expected)


def test_pruner_measures_once_records_the_choice_and_keeps_it_across_a_resume(monkeypatch):
    tiles, calls = fake_layer_time(lambda c_in, c_out: math.ceil(c_in / 8) * math.ceil(c_out / 8))
    monkeypatch.setattr(LatencyTable, "_layer_time", tiles)
    model, x = wide_net(), torch.randn(6, 3, 8, 8)
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = ep.EarlyPruner(model, x[:2], 0.5, criterion="random:2", policy="epoch:0", optimizer=opt, steps=2,
                            steps_per_epoch=2, round_to="auto")
    assert isinstance(pruner.round_to, AutoRoundTo)
    changed = [pruner.step(x), pruner.step(x)]
    assert changed == [True, True] and pruner.done
    n_calls = len(calls)
    assert pruner.round_to == 8 and pruner.round_to_choice.value == 8
    assert [e["round_to"] for e in pruner.events] == [8, 8]
    assert all(w % 8 == 0 for w in pruner.structure())
    assert pruner.round_to_choice.seconds and n_calls > 0             # measured once, at the first step
    assert json.loads(pruner.history_json())["round_to"]["value"] == 8
    state = pruner.state_dict()
    assert RoundToChoice.from_dict(state["round_to_choice"]) == pruner.round_to_choice
    # a fresh pruner loading the state uses the recorded choice and measures nothing
    opt2 = torch.optim.SGD(twin.parameters(), lr=0.1)
    again = ep.EarlyPruner(twin, x[:2], 0.5, criterion="random:2", policy="epoch:0", optimizer=opt2, steps=2,
                           steps_per_epoch=2, round_to="auto")
    again.load_state_dict(state)
    assert again.round_to == 8 and len(calls) == n_calls
    # the layers were timed at the batch size step() saw, not the example's
    assert {batch for *_, batch in calls} == {6}


def test_prune_auto_times_at_the_batches_batch_size(monkeypatch):
    seen = []

    def layer_time(self, m, c_in, c_out, in_shape):
        seen.append(self.batch_size)
        return 1.0
    monkeypatch.setattr(LatencyTable, "_layer_time", layer_time)
    model, x = wide_net(), torch.randn(16, 3, 8, 8)
    res = ep.prune(model, x[:2], 0.5, criterion="snip", batches=[(x, torch.zeros(16, dtype=torch.long))],
                   loss_fn=lambda out, y: out.sum(), round_to="auto")
    assert set(seen) == {16} and res.round_to == res.round_to_choice.value == 1   # all equal: smallest wins
    assert isinstance(model, nn.Module)
