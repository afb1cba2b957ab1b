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
from earlyprune.criteria.latency import _channels, _timed
from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.rounding import AutoRoundTo, RoundToChoice, batch_size_of, check_round_to, decide
from earlyprune.planning.selection import select


def wide_net() -> nn.Module:
    """Widths 32 / 48 / 64: wide enough for multiples up to 8 (a quarter of the median width, 48)."""
    return nn.Sequential(cbr(3, 32), cbr(32, 48), cbr(48, 64, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 5))


pytestmark = pytest.mark.usefixtures("fresh_latency_cache")


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


def test_decide_keeps_the_default_unless_a_multiple_wins_clearly():
    # paired by round: 1 is 20 % faster than 8 in every round → measured
    rounds = {1: [0.8, 1.6, 0.8, 0.8], 4: [1.0, 2.0, 1.0, 1.0], 8: [1.0, 2.0, 1.0, 1.0]}
    value, rule, ratios = decide(rounds, 8, 0.05)
    assert (value, rule) == (1, "measured") and ratios[1]["median"] == pytest.approx(0.8)
    # faster in the median but not in three rounds of four: the default stays
    rounds = {1: [0.8, 0.8, 1.1, 1.2], 8: [1.0, 1.0, 1.0, 1.0]}
    assert decide(rounds, 8, 0.05)[:2] == (8, "default")
    # 3 % faster is not clearly faster with a 5 % margin, but is with 2 %
    rounds = {2: [0.97] * 5, 8: [1.0] * 5}
    assert decide(rounds, 8, 0.05)[0] == 8 and decide(rounds, 8, 0.02)[0] == 2
    # among clear winners the smallest multiple within the tolerance of the best
    rounds = {1: [0.705] * 3, 2: [0.70] * 3, 16: [0.9] * 3, 8: [1.0] * 3}
    assert decide(rounds, 8, 0.05, tolerance=0.01)[0] == 1 and decide(rounds, 8, 0.05, tolerance=0.0)[0] == 2


def sample_from(cost, calls=None, noise=0.0, seed=0):
    """Replace LatencyTable's clock by ``cost(c_in, c_out)`` per layer sample, times a random factor in
    [1 − noise, 1 + noise] (a loaded machine)."""
    gen = torch.Generator().manual_seed(seed)

    def sample(self, m, c_in, c_out, in_shape):
        if calls is not None:
            calls.append((m, c_in, c_out, self.batch_size))
        return float(cost(c_in, c_out)) * (1 + noise * (2 * torch.rand((), generator=gen).item() - 1))
    return sample


def test_noise_gives_the_documented_default_not_a_coin_toss(monkeypatch):
    model, x = wide_net(), torch.randn(4, 3, 8, 8)
    groups = ChannelGroups(model, x)
    scores = CRITERIA.build("random:1").scores(groups)
    # a device where time follows MACs (no multiple is really faster), timed under ±40 % noise: every draw of
    # the load gives the same answer
    for seed in range(6):
        monkeypatch.setattr(LatencyTable, "_sample", sample_from(lambda c_in, c_out: c_in * c_out, noise=0.4,
                                                                 seed=seed))
        choice = AutoRoundTo(rounds=5).choose(groups, scores, 0.5)
        assert (choice.value, choice.rule, choice.default) == (8, "default", 8), seed
        assert set(choice.rounds) == {1, 2, 4, 8} and all(len(v) == 5 for v in choice.rounds.values())
    # a device where multiples of 8 are slow (twice the cost): a narrower multiple wins clearly through ±10 % noise
    monkeypatch.setattr(LatencyTable, "_sample", sample_from(
        lambda c_in, c_out: c_in * c_out * (2 if c_out % 8 == 0 else 1), noise=0.1))
    choice = AutoRoundTo().choose(groups, scores, 0.5)
    assert choice.rule == "measured" and choice.value in (1, 2) and choice.ratios[choice.value]["q3"] < 0.95
    assert "faster than the default 8" in choice.describe()


def test_auto_prefers_tile_aligned_widths_when_the_device_does(monkeypatch):
    model, x = wide_net(), torch.randn(4, 3, 8, 8)
    groups = ChannelGroups(model, x)
    scores = CRITERIA.build("random:1").scores(groups)
    # a device that computes in 8×8 tiles: a layer costs the tiles it touches
    monkeypatch.setattr(LatencyTable, "_sample", sample_from(lambda c_in, c_out: math.ceil(c_in / 8) *
                                                             math.ceil(c_out / 8)))
    choice = AutoRoundTo().choose(groups, scores, 0.5)
    assert set(choice.seconds) == {1, 2, 4, 8}                       # 16, 32 > a quarter of the median width
    assert choice.value == 8 and choice.seconds[8] < choice.seconds[1]
    widths = select(groups, scores, 0.5, round_to=choice.value).structure
    assert all(w % 8 == 0 for w in widths), widths                    # the plan it keeps fills whole tiles
    # with a default of 1, a multiple has to win — and one does, clearly: the smallest as fast as the fastest
    choice = AutoRoundTo(default=1).choose(groups, scores, 0.5)
    assert choice.rule == "measured" and choice.value > 1
    assert choice.seconds[choice.value] <= 1.01 * min(choice.seconds.values()) < choice.seconds[1]


def test_auto_skips_multiples_that_cannot_reach_the_target(monkeypatch):
    model, x = wide_net(), torch.randn(4, 3, 8, 8)
    groups = ChannelGroups(model, x)
    monkeypatch.setattr(LatencyTable, "_sample", sample_from(lambda c_in, c_out: 1.0))
    choice = AutoRoundTo(candidates=(1, 8), max_fraction=1.0).choose(
        groups, CRITERIA.build("random:1").scores(groups), 0.9)   # 90 % with widths of multiples of 8: impossible
    assert choice.macs.keys() == {1} and (choice.value, choice.rule) == (1, "only candidate")


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
    calls = []
    monkeypatch.setattr(LatencyTable, "_sample", sample_from(lambda c_in, c_out: math.ceil(c_in / 8) *
                                                             math.ceil(c_out / 8), calls))
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

    def sample(self, m, c_in, c_out, in_shape):
        seen.append(self.batch_size)
        return 1.0
    monkeypatch.setattr(LatencyTable, "_sample", sample)
    model, x = wide_net(), torch.randn(16, 3, 8, 8)
    res = ep.prune(model, x[:2], 0.5, criterion="snip", batches=[(x, torch.zeros(16, dtype=torch.long))],
                   loss_fn=lambda out, y: out.sum(), round_to="auto")
    assert set(seen) == {16} and res.round_to == res.round_to_choice.value == 8   # all equal: the default
    assert res.round_to_choice.rule == "default"
    assert isinstance(model, nn.Module)


def test_the_real_clock_times_every_plan_in_rounds():
    model, x = wide_net(), torch.randn(4, 3, 8, 8)
    groups = ChannelGroups(model, x)
    choice = AutoRoundTo(rounds=3, table=LatencyTable(warmup=1)).choose(
        groups, CRITERIA.build("random:1").scores(groups), 0.5)
    assert choice.value in (1, 2, 4, 8) and choice.rule in ("default", "measured")
    assert all(len(v) == 3 and min(v) > 0 for v in choice.rounds.values())
    assert RoundToChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice  # recorded in full
