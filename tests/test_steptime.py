"""The step-time predictor of target="latency" (fake cost tables), the greedy time-budget selection, and the
per-group removal limit."""

import math

import numpy as np
import pytest
import torch
from nets import ARCHITECTURES, MLP, ResidualNet

import earlyprune as ep
from earlyprune.speed import steptime
from earlyprune.criteria import LatencyTable
from earlyprune.criteria.latency import _channels, _timed
from earlyprune.graph.metrics import is_depthwise as _is_depthwise
from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.targets import select
from earlyprune.speed.steptime import LayerCurve, Link, StepTimePredictor, layer_curves, measure_step_time
from loops import blobs
from loops import train as run


pytestmark = pytest.mark.usefixtures("fresh_latency_cache")


def fake_layer_time(cost):
    def layer_time(self, m, c_in, c_out, in_shape):
        return float(cost(m, c_in, c_out))
    return layer_time


def bilinear_cost(m, c_in, c_out):
    """A MACs-like cost, exact under the predictor's interpolation: bilinear in (c_in, c_out) for two-dimension
    layers, linear in the width for one-dimension ones (norms, depthwise convolutions)."""
    if m is not None and not (isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and not _is_depthwise(m)):
        return 1e-6 * (1 + c_out)
    return 1e-6 * (3 + 2 * c_in + c_out + 0.5 * c_in * c_out)


# -- layer curves ---------------------------------------------------------------------------------------------
def test_curve_interpolates_bilinear_costs_exactly_and_extrapolates_linearly():
    ins, outs = [8, 16, 32], [16, 48]
    f = lambda a, b: 1 + 2 * a + 3 * b + 0.25 * a * b
    curve = LayerCurve("c", ins, outs, [[f(a, b) for b in outs] for a in ins])
    for a, b in [(8, 16), (12, 20), (24, 40), (32, 48), (4, 16), (40, 60)]:
        assert curve.time(a, b) == pytest.approx(f(a, b))
    tied = LayerCurve("bn", [32], [8, 16, 32], [[1.0, 3.0, 7.0]], tied=True)
    assert tied.time(999, 24) == pytest.approx(5.0)          # tied: the input width follows the output width
    assert tied.time(0, 2) == 0.0                            # extrapolated below 0 → clipped
    fixed = LayerCurve("first", [3], [16, 32], [[2.0, 4.0]])
    assert fixed.time(3, 24) == pytest.approx(3.0)
    assert LayerCurve.from_dict(curve.to_dict()) == curve


@pytest.mark.parametrize("arch", ["residual", "concat", "depthwise", "grouped", "mlp"])
def test_predicted_layer_widths_are_the_widths_the_engine_leaves(arch, monkeypatch):
    build, shape = ARCHITECTURES[arch]
    model, x = build().eval(), torch.randn(shape)
    groups = ChannelGroups(model, x)
    monkeypatch.setattr(LatencyTable, "_layer_time", fake_layer_time(bilinear_cost))
    curves, links = layer_curves(groups, LatencyTable(), align=1)
    predictor = StepTimePredictor(groups.names, groups.widths(), curves, links)
    modules = {n: m for n, m in model.named_modules()}
    plan = select(groups, ep.CRITERIA.build("random:3").scores(groups), 0.4, max_group_ratio=1.0)
    removed = {n: len(v) for n, v in plan.remove.items()}
    predicted = predictor.layer_widths(predictor.vector(removed))
    expected_seconds = predictor.layer_seconds(removed)
    PruningEngine(groups).apply(plan)
    assert predicted
    for l, (c_in, c_out) in predicted.items():
        assert (c_in, c_out) == _channels(modules[curves[l].name]), curves[l].name
    # and the predicted layer time is the cost of those widths
    assert expected_seconds == pytest.approx(sum(bilinear_cost(modules[curves[l].name], *predicted[l])
                                                 for l in predicted))


def test_scale_and_rest_of_the_step_are_fitted_to_the_measurements():
    curves = [LayerCurve("a", [4], [1, 2, 4], [[1.0, 1.5, 4.0]], positions=10), LayerCurve("b", [8], [8], [[5.0]])]
    predictor = StepTimePredictor(["g"], [4], curves, [[Link(0, "out", 1)]])
    acts = lambda r: (10 * (4 - r) + 8) / 48
    truth = lambda r, rho1=0.0: 1.3 * predictor.layer_seconds([r]) + 0.5 + rho1 * acts(r)
    predictor.fit_rest([(np.array([0]), truth(0)), (np.array([2]), truth(2))])      # the default: α and ρ₀
    assert (predictor.alpha, predictor.rho0, predictor.rho1) == pytest.approx((1.3, 0.5, 0.0))
    assert predictor.predict([1]) == pytest.approx(truth(1))
    predictor.fit_rest([(np.array([r]), truth(r, 3.0)) for r in (0, 1, 3)], terms=("alpha", "rho1", "rho0"))
    assert (predictor.alpha, predictor.rho1, predictor.rho0) == pytest.approx((1.3, 3.0, 0.5))
    restored = StepTimePredictor.from_dict(predictor.to_dict())
    assert restored.predict([2]) == pytest.approx(truth(2, 3.0))
    # a fit that needs a negative term drops it instead of predicting less time for more work
    predictor.fit_rest([(np.array([0]), 10.0), (np.array([3]), 9.9)])
    assert predictor.alpha >= 0 and predictor.rho1 >= 0 and predictor.rho0 >= 0
    assert predictor.predict([3]) < predictor.predict([0])
    with pytest.raises(ValueError, match="terms must be among"):
        predictor.fit_rest([(np.array([0]), 1.0)], terms=("beta",))


def test_measure_step_time_calibrates_on_the_dense_model_and_a_uniform_copy(monkeypatch):
    model, x = ResidualNet(), torch.randn(2, 3, 8, 8)
    groups = ChannelGroups(model, x)
    monkeypatch.setattr(LatencyTable, "_layer_time", fake_layer_time(bilinear_cost))
    seen = []

    def fake_step(net, inputs, **kw):   # the "real" step: its layers' cost + 1 ms + 2 ms × activation share
        seen.append(inputs.shape[0])
        convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        return sum(bilinear_cost(None, *_channels(m)) for m in convs) + 1e-3 * 1
    monkeypatch.setattr(steptime, "time_step", fake_step)
    predictor = measure_step_time(groups, batch_size=16, align=4, repeats=3)
    assert seen == [16] * 8                     # dense + calibration copy, interleaved: 1 warm-up + 3 rounds each
    assert len(predictor.info["measured"]) == 2
    assert predictor.dense_seconds == pytest.approx(predictor.info["measured"][0])
    assert predictor.info["predicted"] == pytest.approx(predictor.info["measured"], rel=0.2)
    assert model.stem[0].out_channels == 8                            # the model itself was not pruned


def test_refitting_on_the_planned_structure_brings_the_prediction_there_closer(monkeypatch):
    from earlyprune.speed.steptime import refine_step_time
    model, x = ResidualNet(), torch.randn(2, 3, 8, 8)
    groups = ChannelGroups(model, x)
    monkeypatch.setattr(LatencyTable, "_layer_time", fake_layer_time(bilinear_cost))

    def truth(net, inputs, **kw):   # the "real" step: not of the predictor's form (layers ** 1.15)
        return 3e-4 + 2.0 * sum(bilinear_cost(m, *_channels(m)) for m in net.modules() if _timed(m)) ** 1.15
    monkeypatch.setattr(steptime, "time_step", truth)
    predictor = measure_step_time(groups, align=4, repeats=1)
    plan = select(groups, {g.name: torch.rand(g.width, generator=torch.Generator().manual_seed(g.index))
                           for g in groups}, 0.6, target="latency", predictor=predictor, max_group_ratio=1.0)
    removed = np.array(predictor.widths) - np.array(plan.structure)
    actual = truth(steptime.pruned_copy(model, x, dict(zip(predictor.names, removed.tolist()))), None)
    before = abs(predictor.predict(removed) / actual - 1)
    refine_step_time(predictor, groups, removed, repeats=1)
    after = abs(predictor.predict(removed) / actual - 1)
    assert len(predictor.info["points"]) == 3 and predictor.info["measured"][2] == pytest.approx(actual)
    assert after < before and before > 0.01
    refine_step_time(predictor, groups, removed, repeats=1)           # a structure already measured: no-op
    assert len(predictor.info["points"]) == 3


# -- greedy selection under a time budget ---------------------------------------------------------------------
def mlp_predictor(groups, per_channel):
    """Group i's channels each cost ``per_channel[i]`` seconds; nothing else costs anything."""
    curves, links = [], []
    for i, g in enumerate(groups):
        curves.append(LayerCurve(g.name, [g.width], [1, g.width], [[0.0, per_channel[i] * (g.width - 1)]]))
        links.append([Link(i, "out", 1)])
    return StepTimePredictor(groups.names, groups.widths(), curves, links, rho0=1.0)


def test_latency_target_removes_by_importance_per_second_saved():
    groups = ChannelGroups(MLP(), torch.randn(2, 20))         # widths 32 and 24
    predictor = mlp_predictor(groups, [1.0, 4.0])
    dense = predictor.predict()                                # 1 + 31 + 92 = 124
    scores = {"net.0": torch.ones(32), "net.2": torch.full((24,), 2.0)}
    # per second saved: net.0 loses 1/1, net.2 loses 2/4 = 0.5 → net.2 first: 16 channels (64 s) reach 62 s
    plan = select(groups, scores, 0.5, target="latency", predictor=predictor, max_group_ratio=1.0)
    assert plan.structure == [32, 8]
    assert plan.seconds <= 0.5 * dense + 1e-9
    removed = {n: len(v) for n, v in plan.remove.items()}
    assert predictor.predict(removed) == pytest.approx(plan.seconds)
    # minimal: one channel fewer would miss the budget
    fewer = dict(removed, **{"net.2": removed["net.2"] - 1})
    assert predictor.predict(fewer) > 0.5 * dense


def test_latency_target_honours_floors_rounding_and_the_group_limit():
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    predictor = mlp_predictor(groups, [1.0, 4.0])
    scores = {"net.0": torch.ones(32), "net.2": torch.full((24,), 2.0)}
    plan = select(groups, scores, 0.3, target="latency", predictor=predictor, round_to=8, max_group_ratio=0.5)
    assert plan.structure[1] == 16                              # 24 · (1 − 0.5) = 12 → rounded up to 16
    assert all(w % 8 == 0 for w in plan.structure)
    with pytest.warns(UserWarning, match="cannot remove 90.0% of the predicted step time"):
        far = select(groups, scores, 0.9, target="latency", predictor=predictor, max_group_ratio=0.5)
    assert far.structure == [16, 12]


def test_reachable_time_is_the_step_left_with_every_group_at_its_floor():
    import warnings
    from earlyprune.planning.timebudget import reachable_time
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    predictor = mlp_predictor(groups, [1.0, 4.0])               # dense: 1 + 31 + 92 = 124
    # floors at max_group_ratio 0.5: 16 and 12 channels → 1 + 15 + 44 = 60
    assert reachable_time(groups, predictor, max_group_ratio=0.5) == pytest.approx(1 - 60 / 124)
    assert reachable_time(groups, predictor, max_group_ratio=1.0) == pytest.approx(1 - 1 / 124)
    assert reachable_time(groups, predictor, min_channels=8, round_to=8, max_group_ratio=1.0) == pytest.approx(
        1 - (1 + 7 + 28) / 124)
    # asking exactly the reachable amount is met without the "cannot remove" warning
    most = reachable_time(groups, predictor, max_group_ratio=0.5)
    scores = {"net.0": torch.ones(32), "net.2": torch.full((24,), 2.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = select(groups, scores, most, target="latency", predictor=predictor, max_group_ratio=0.5)
    assert plan.structure == [16, 12]


def test_reachable_time_skips_widths_that_save_no_time():
    from earlyprune.planning.timebudget import reachable_time
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    # net.0 at its floor of 8 channels is slower than at 16 (a slower kernel): the greedy stops at 16
    curves = [LayerCurve("net.0", [20], [8, 16, 24, 32], [[3.0, 2.0, 10.0, 10.0]]),
              LayerCurve("net.2", [24], [1, 24], [[0.0, 23.0]])]
    predictor = StepTimePredictor(groups.names, groups.widths(), curves, [[Link(0, "out", 1)], [Link(1, "out", 1)]])
    # dense 10 + 23 = 33; floors (round_to 8): net.0 16 (2.0, not 8's 3.0), net.2 8 (7.0)
    assert reachable_time(groups, predictor, round_to=8, max_group_ratio=0.75) == pytest.approx(1 - (2 + 7) / 33)


def test_retarget_clips_the_time_target_to_what_the_predictor_says_the_limits_allow():
    from earlyprune.planning.timebudget import reachable_time
    model = MLP()
    pruner = ep.EarlyPruner(model, torch.randn(2, 20), 0.3, policy="epoch:1", optimizer=None, target="latency",
                            max_group_ratio=0.5)
    assert pruner.retarget(0.9, clip=True) == 0.9          # no predictor measured yet: the selection will warn
    assert pruner.reachable_ratio() is None
    pruner.predictor = mlp_predictor(pruner.groups, [1.0, 4.0])
    most = reachable_time(pruner.groups, pruner.predictor, max_group_ratio=0.5)
    assert pruner.reachable_ratio() == pytest.approx(1 - 60 / 124) == pytest.approx(most)
    counted = ep.EarlyPruner(MLP(), torch.randn(2, 20), 0.3, policy="epoch:1", optimizer=None, target="channels",
                             max_group_ratio=0.5)
    assert counted.reachable_ratio() == pytest.approx(0.5)   # 16 of 32 and 12 of 24 channels may go
    assert pruner.retarget(0.9, clip=True) == pytest.approx(most) and pruner.ratio == pytest.approx(most)
    assert pruner.retarget(0.3, clip=True) == 0.3          # reachable: unchanged
    assert pruner.retarget(0.9) == 0.9                     # without clip: pruned as far as allowed, with a warning


def test_one_greedy_pass_gives_nested_plans_for_several_budgets():
    from earlyprune.planning.selection import ranked_units
    from earlyprune.planning.timebudget import select_by_time
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    predictor = mlp_predictor(groups, [1.0, 3.0])
    g = torch.Generator().manual_seed(0)
    scores = {"net.0": torch.rand(32, generator=g), "net.2": torch.rand(24, generator=g)}
    plans = select_by_time(groups, ranked_units(groups, scores), [0.6, 0.2, 0.4], predictor, max_group_ratio=1.0)
    kept = [np.array(p.structure) for p in plans]
    assert (kept[1] >= kept[2]).all() and (kept[2] >= kept[0]).all()
    for p, amount in zip(plans, [0.6, 0.2, 0.4]):
        assert p.seconds <= (1 - amount) * predictor.predict() + 1e-9
        single = select(groups, scores, amount, target="latency", predictor=predictor, max_group_ratio=1.0)
        assert single.structure == p.structure


def test_moves_that_save_no_time_are_merged_with_the_next():
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    # net.0 is a step function: 32 → 17 channels save nothing, 16 saves a lot (a vector-width step)
    curves = [LayerCurve("net.0", [20], [8, 16, 24, 32], [[1.0, 2.0, 10.0, 10.0]]),
              LayerCurve("net.2", [24], [1, 24], [[0.0, 23.0]])]
    predictor = StepTimePredictor(groups.names, groups.widths(), curves, [[Link(0, "out", 1)], [Link(1, "out", 1)]])
    scores = {"net.0": torch.ones(32), "net.2": torch.full((24,), 100.0)}
    plan = select(groups, scores, 0.2, target="latency", predictor=predictor, round_to=8, max_group_ratio=1.0)
    assert plan.structure[0] == 16          # jumped over 24, which saves nothing


def test_latency_target_needs_a_matching_predictor():
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    scores = {g.name: torch.rand(g.width) for g in groups}
    with pytest.raises(ValueError, match="needs the step-time predictor"):
        select(groups, scores, 0.5, target="latency")
    other = ChannelGroups(ResidualNet(), torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="measured on another model"):
        select(groups, scores, 0.5, target="latency", predictor=mlp_predictor(other, [1.0] * len(other)))
    with pytest.raises(TypeError, match="step_time must be"):
        ep.EarlyPruner(MLP(), torch.randn(2, 20), 0.5, optimizer=None, target="latency", step_time="fast")


# -- the pruner with target="latency" -------------------------------------------------------------------------
def test_pruner_with_latency_target_records_signals_prunes_to_the_budget_and_resumes(monkeypatch):
    monkeypatch.setattr(LatencyTable, "_layer_time", fake_layer_time(bilinear_cost))
    monkeypatch.setattr(steptime, "time_step", lambda net, inputs, **kw: 1e-3 + sum(
        bilinear_cost(None, *_channels(m)) for m in net.modules() if isinstance(m, torch.nn.Linear)))
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = blobs()
    pruner = ep.EarlyPruner(model, x[:32], 0.4, policy="epoch:2", optimizer=opt, steps=2, target="latency",
                            max_group_ratio=0.9)
    losses = run(pruner, model, opt, x, y, epochs=5)
    assert pruner.predictor is not None and pruner.predictor.info["batch_size"] == 32   # the example batch
    dense_history = [h for h in pruner.history if h["phase"] == "dense"]
    assert all(h["subnetwork"] is not None for h in dense_history)          # N_t with the time target
    assert dense_history[1]["epi"]                                            # and EPI from it
    final = pruner.events[-1]
    assert final["predicted_step_seconds"] <= 0.6 * final["predicted_dense_step_seconds"] + 1e-12
    assert losses[-1] < losses[3]                                             # learning after pruning
    state = pruner.state_dict()
    clone = ep.EarlyPruner(model, x[:32], 0.4, policy="epoch:2", optimizer=opt, steps=2, target="latency")
    clone.load_state_dict(state)
    assert clone.predictor.to_dict() == pruner.predictor.to_dict()
    assert clone.groups.original_widths == {"net.0": 32, "net.2": 24}


# -- the per-group limit --------------------------------------------------------------------------------------
def test_max_group_ratio_keeps_a_share_of_every_group_counted_from_the_original_width():
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    scores = {"net.0": torch.zeros(32), "net.2": torch.arange(1.0, 25.0)}
    plan = select(groups, scores, 0.5, max_group_ratio=0.75)
    assert plan.structure[0] == 8                                    # ceil(32 · 0.25)
    unlimited = select(groups, scores, 0.5, max_group_ratio=1.0)
    assert unlimited.structure[0] == 4                               # the 28 channels all come from net.0
    PruningEngine(groups).apply(plan)                                # 32 → 8 now; the limit still counts from 32
    again = select(groups, {"net.0": torch.zeros(8), "net.2": torch.arange(1.0, 1.0 + groups[1].width)}, 0.7,
                   max_group_ratio=0.75)
    assert again.structure[0] == 8


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "0.8", True])
def test_max_group_ratio_is_validated(value):
    groups = ChannelGroups(MLP(), torch.randn(2, 20))
    with pytest.raises(ValueError, match="max_group_ratio must be a number in"):
        select(groups, {g.name: torch.rand(g.width) for g in groups}, 0.5, max_group_ratio=value)


def test_the_group_limit_stops_a_global_ranking_from_emptying_a_layer_with_small_init_scale():
    """The collapse of issue 10: PaT Eq. 2 early in training is each layer's initialisation scale, so a global
    ranking removes a whole wide layer first; an absolute min_channels does not prevent it, the relative limit
    does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 256, 1),
                                torch.nn.ReLU(), torch.nn.Conv2d(256, 32, 1), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        model[2].weight.mul_(0.1)          # the wide layer's filters are all smaller than every other filter
    groups = ChannelGroups(model, torch.randn(2, 3, 8, 8))
    scores = ep.CRITERIA.build("magnitude").compute(groups)
    wide = groups.names.index("2")
    # 78 % of the 320 channels: the wide layer alone (256 → 8) could provide them
    assert select(groups, scores, 0.78, min_channels=8, max_group_ratio=1.0).structure[wide] == 8
    limited = select(groups, scores, 0.78, min_channels=8, max_group_ratio=0.8).structure
    assert limited[wide] == math.ceil(0.2 * 256) and sum(limited) <= 0.22 * 320
