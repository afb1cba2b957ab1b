"""When-to-prune policies: EPI's trigger rule and cap, EarlyCroP on known Δ_t, Early-Bird on γ sequences,
random:A-B, side-effect-free queries, state round trips, and EPI end to end."""

import copy
import json
import logging

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.graph.groups import ChannelGroups
from earlyprune.policies import EPI, POLICIES, EarlyBird, EarlyCroP, EpochReport, Init, RandomEpoch
from earlyprune.policies.epi import epi_trigger
from earlyprune.signals import SignalRecorder, bn_mask
from loops import blobs, train
from nets import MLP, ResidualNet


def report(epoch, ratio=0.5, **kw):
    return EpochReport(epoch, None, None, ratio=ratio, **kw)  # the policies read only the signals


def run_policy(policy, reports):
    """Feed reports until the policy triggers; returns (trigger epoch or None, decisions)."""
    decisions = []
    for rep in reports:
        fired = policy.update(rep)
        decisions.append(policy.last_decision)
        if fired:
            return rep.epoch, decisions
    return None, decisions


# -- EPI ------------------------------------------------------------------------------------------------------
def test_epi_rule_needs_both_conditions():
    assert epi_trigger(0.99, [0.5, 0.9, 0.98], tau=0.983)
    assert not epi_trigger(0.98, [0.5, 0.9], tau=0.983)                     # below τ
    assert not epi_trigger(0.99, [0.9, 0.995, 0.97], tau=0.983)             # below one of the previous 5
    assert epi_trigger(0.99, [0.999, 0.9, 0.9, 0.9, 0.9, 0.9], tau=0.983)   # the 6th-previous does not count
    assert epi_trigger(0.99, [0.99] * 5, tau=0.983)                         # ties are "≥"
    assert epi_trigger(0.95, [], tau=0.95)
    assert not epi_trigger(None, [], tau=0.5)


#: single-layer structures with r = 1: EPI_t = Ψ(N_t, N_{t−1}) = 1 − |a − b|/(a + b)
SEQUENCE = [[100], [150], [120], [118], [117], [117]]
EPIS = [None, 1 - 50 / 250, 1 - 30 / 270, 1 - 2 / 238, 1 - 1 / 235, 1.0]   # 0.8, 0.889, 0.9916, 0.9957, 1


@pytest.mark.parametrize("tau,expected", [(0.983, 3), (0.995, 4), (0.9999, 5), (0.8, 1), (0.85, 2)])
def test_epi_policy_fires_at_the_first_epoch_meeting_the_rule(tau, expected):
    policy = EPI(tau=tau, r=1, cap=None)
    fired_at, decisions = run_policy(policy, [report(t, structure=s) for t, s in enumerate(SEQUENCE)])
    assert fired_at == expected
    assert [d.signal for d in decisions] == pytest.approx(EPIS[:expected + 1])
    assert decisions[-1].reason == "signal" and policy.signal() == pytest.approx(EPIS[expected])


def test_epi_look_back_binds_when_armed_late():
    policy = EPI(tau=0.999, r=1, cap=None)
    seq = [[100], [100], [104], [104]]                 # EPI: 1.0, 0.98, 1.0
    assert run_policy(policy, [report(t, structure=s) for t, s in enumerate(seq[:3])])[0] == 1
    # resumed with a lower τ after a dip: 0.99 ≥ τ but below EPI 1.0 two epochs back → no trigger
    late = EPI(tau=0.985, r=1, cap=None)
    late.load_state_dict({"signal": None, "structures": [[100]], "epis": [1.0, 0.98]})
    assert not late.evaluate(report(3, structure=[102])).trigger  # Ψ(102, 100) = 0.990
    assert late.evaluate(report(3, structure=[100])).trigger        # Ψ = 1.0 ≥ all


def test_epi_window_and_default_thresholds():
    policy = EPI(r=2, cap=None)                         # τ from the criterion family
    n0, n1, n2 = [2, 4, 6], [4, 4, 2], [2, 4, 6]
    policy.update(report(0, structure=n0))
    policy.update(report(1, structure=n1))
    assert policy.signal() == pytest.approx(13 / 18)   # truncated window: r = min(2, 1)
    d = policy.evaluate(report(2, structure=n2, criterion_family="gradient"))
    assert d.signal == pytest.approx(31 / 36)          # full window, Eq. 6
    assert policy.threshold("magnitude") == 0.983 and policy.threshold("gradient") == 0.944
    with pytest.raises(ValueError, match="no default τ"):
        policy.threshold("random")
    with pytest.raises(ValueError, match="structure N_t"):
        policy.evaluate(report(3))


@pytest.mark.parametrize("policy", [EPI(tau=0.9999, r=1, cap=3), EarlyCroP(cap=3), EarlyBird(cap=3)])
def test_every_signal_policy_prunes_at_the_cap_and_says_so(policy):
    reports = [report(t, structure=[100 + 40 * (t % 2)], weight_change=float(4 ** t),
                      bn_mask=torch.tensor([t % 2 == 0, True, t % 3 == 0, False])) for t in range(6)]
    fired_at, decisions = run_policy(policy, reports)
    assert fired_at == 2 and decisions[-1].reason == "cap"           # 3 dense epochs (0, 1, 2): epoch 3 prunes
    assert "cap of 3 dense epochs" in decisions[-1].message
    assert [d.trigger for d in decisions[:-1]] == [False, False]
    assert not type(policy)(cap=None).update(reports[5])


# -- EarlyCroP ---------------------------------------------------------------------------------------------------
def weight_change_reports(deltas, ratio=0.5):
    """Reports from a parameter trajectory θ_t = θ_0 + √Δ_t·u (u a unit vector over all parameters), with Δ_t
    measured by the same recorder EarlyPruner uses."""
    torch.manual_seed(0)
    model = MLP()
    groups = ChannelGroups(model, torch.randn(2, 20))
    rec = SignalRecorder()
    rec.start(groups, ratio=ratio, needs={"weight_change"})
    theta0 = [p.detach().clone() for p in model.parameters()]
    u = [torch.randn_like(p) for p in theta0]
    norm = torch.sqrt(sum((v ** 2).sum() for v in u))
    reports = []
    for t, delta in enumerate(deltas):
        with torch.no_grad():
            for p, p0, v in zip(model.parameters(), theta0, u):
                p.copy_(p0 + delta ** 0.5 * v / norm)
        signals = rec.epoch_end(None)
        assert signals.weight_change == pytest.approx(delta, rel=1e-4, abs=1e-6)
        reports.append(report(t, ratio=ratio, weight_change=signals.weight_change))
    return reports


@pytest.mark.parametrize("ratio,expected", [(0.5, 3), (0.8, 4), (0.95, None)])
def test_earlycrop_fires_on_a_known_trajectory(ratio, expected):
    # Δ_t (t = 1…6): scores |Δ_t − Δ_{t−1}|/Δ_1 = 1, 0.8, 0.6, 0.3, 0.1, 0.06 against th = 1 − ratio
    reports = weight_change_reports([1.0, 1.8, 2.4, 2.7, 2.8, 2.86], ratio)
    policy = EarlyCroP(cap=None, norm="eq11")
    fired_at, decisions = run_policy(policy, reports)
    assert fired_at == expected
    scores = [d.signal for d in decisions]
    assert scores == pytest.approx([1.0, 0.8, 0.6, 0.3, 0.1, 0.06][:len(scores)], rel=1e-3)


def test_earlycrop_guards_degenerate_trajectories():
    # a first epoch that does not move the weights: Δ_1 is taken from the first epoch that does
    fired_at, decisions = run_policy(EarlyCroP(th=0.5, cap=None, norm="eq11"), weight_change_reports([0.0, 1.0, 1.5, 1.6]))
    assert [d.signal for d in decisions][:1] == [None] and fired_at == 3
    assert decisions[2].signal == pytest.approx(0.5, rel=1e-3)         # 0.5 is not < 0.5
    # weights never move: never a score, never a division by zero; only the cap prunes
    fired_at, decisions = run_policy(EarlyCroP(cap=4, norm="eq11"), weight_change_reports([0.0] * 6))
    assert fired_at == 3 and decisions[-1].reason == "cap" and all(d.signal is None for d in decisions)
    policy = EarlyCroP(cap=None)
    assert not policy.update(report(0, weight_change=float("nan"))) and policy.state_dict()["ref"] is None
    with pytest.raises(ValueError, match="th must be a positive"):
        EarlyCroP(th=0)


# -- Early-Bird -------------------------------------------------------------------------------------------------
class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(20, 10), nn.BatchNorm1d(10)
        self.fc2, self.bn2 = nn.Linear(10, 10), nn.BatchNorm1d(10)
        self.out = nn.Linear(10, 5)

    def forward(self, x):
        return self.out(torch.relu(self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(x)))))))


def gamma_reports(keep_sets, ratio=0.5):
    """Reports from a γ sequence: epoch t has |γ| = 2 on the channels of keep_sets[t] (10 of 20), 1 elsewhere."""
    model = BNNet()
    reports = []
    for t, keep in enumerate(keep_sets):
        gamma = torch.ones(20)
        gamma[sorted(keep)] = 2.0
        with torch.no_grad():
            model.bn1.weight.copy_(gamma[:10])
            model.bn2.weight.copy_(-gamma[10:])    # the sign of γ does not matter
        reports.append(report(t, ratio=ratio, bn_mask=bn_mask(model, ratio)))
    return reports


def test_earlybird_fires_when_the_newest_mask_is_within_eps_of_the_four_older():
    base = set(range(0, 20, 2))
    moved = lambda k: (base - set(range(0, 2 * k, 2))) | set(range(1, 2 * k, 2))  # noqa: E731 (2k entries differ)
    # distances to `base`: moved(2) 0.2, moved(1) 0.1 (not < ε), then five masks within ε of each other
    seq = [moved(3), moved(2), moved(1), base, base, base, base, base, base]
    fired_at, decisions = run_policy(EarlyBird(cap=None), gamma_reports(seq))
    # epoch 6: the newest (base) vs epochs 2–5 — epoch 2's mask is 0.1 away, not < ε; epoch 7: all 0
    assert fired_at == 7
    assert decisions[6].signal == pytest.approx(0.1) and decisions[7].signal == 0.0
    assert decisions[0].signal is None and decisions[1].signal == pytest.approx(0.1)   # moved(3) vs moved(2)
    # a looser ε fires as soon as five masks are queued
    assert run_policy(EarlyBird(eps=0.35, cap=None), gamma_reports(seq))[0] == 4


def test_earlybird_needs_batchnorm():
    with pytest.raises(ValueError, match="no affine BatchNorm"):
        ep.EarlyPruner(MLP(), torch.randn(2, 20), 0.5, policy="earlybird", optimizer=None)
    with pytest.raises(ValueError, match="eps must be"):
        EarlyBird(eps=0)


# -- schedules ---------------------------------------------------------------------------------------------------
def test_random_epoch_is_reproducible_with_a_seed():
    draws = [POLICIES.build(f"random:2-6,seed={s}").epoch for s in range(60)]
    assert draws == [POLICIES.build(f"random:2-6,seed={s}").epoch for s in range(60)]
    assert set(draws) == {2, 3, 4, 5, 6}                                    # uniform over [A, B], ends included
    torch.manual_seed(3)
    a = POLICIES.build("random:0-100").epoch
    torch.manual_seed(3)
    assert POLICIES.build("random:0-100").epoch == a                         # unseeded: torch's global generator
    policy = RandomEpoch(4, 4)
    assert [policy.update(report(t)) for t in range(5)] == [False, False, False, True, False]
    assert (RandomEpoch().low, RandomEpoch().high) == (0, 30)                # PaT's random baseline


@pytest.mark.parametrize("spec,match", [
    ("random:5-2", "A ≤ B"), ("random:x", "random:A-B"), ("random:1-3,sed=2", "random:A-B"),
    ("epi:tau=2", "tau must be"), ("epi:r=0", "r must be"), ("epi:window=3", "key=value options among"),
    ("epi:cap=0", "cap must be"), ("earlycrop:th=-1", "th must be"), ("earlybird:queue=1", "queue must be"),
    ("init:3", "no ':' argument"), ("epi:tau=high", "bad value"),
])
def test_bad_policy_specs_are_refused_clearly(spec, match):
    with pytest.raises(ValueError, match=match):
        POLICIES.build(spec)


def test_specs_build_the_documented_policies():
    p = POLICIES.build("epi:tau=0.95,r=3,cap=none")
    assert (p.tau, p.r, p.cap) == (0.95, 3, None)
    assert POLICIES.build("earlycrop:th=0.3,cap=20").th == 0.3
    assert POLICIES.build("earlybird:eps=0.05").eps == 0.05
    assert isinstance(POLICIES.build("init"), Init) and POLICIES.build("init").start()
    assert {"epi", "earlycrop", "earlybird", "init", "random", "epoch", "never"} <= set(POLICIES.names())


# -- side effects and state -----------------------------------------------------------------------------------
SPECS = ["epi:r=2,tau=0.97", "earlycrop:th=0.4,norm=eq11", "earlybird:eps=0.3", "epoch:6", "random:1-7,seed=0", "never"]
STRUCTURES = [[20, 12, 30], [28, 12, 30], [20, 14, 30], [24, 12, 27], [24, 12, 29]] + [[23, 12, 29]] * 4
DELTAS = [1.0, 1.9, 2.7, 3.4, 3.7, 3.8, 3.85, 3.87, 3.88]   # scores 1, .9, .8, .7, .3, .1, …


def synthetic_reports():
    """Nine epochs on which every policy but `never` triggers at epoch 4 or later."""
    g = torch.Generator().manual_seed(1)
    base = torch.rand(40, generator=g) < 0.5
    masks = [torch.rand(40, generator=g) < 0.5 for _ in range(3)]
    for _ in range(6):
        noisy = base.clone()
        noisy[torch.randint(0, 40, (2,), generator=g)] ^= True
        masks.append(noisy)
    return [report(t, structure=s, weight_change=d, bn_mask=m)
            for t, (s, d, m) in enumerate(zip(STRUCTURES, DELTAS, masks))]


@pytest.mark.parametrize("spec", SPECS)
def test_policies_are_free_of_side_effects_when_queried(spec):
    policy = POLICIES.build(spec)
    for rep in synthetic_reports():
        before = copy.deepcopy(policy.state_dict())
        first, second = policy.evaluate(rep), policy.evaluate(rep)
        assert (first.trigger, first.reason, first.signal) == (second.trigger, second.reason, second.signal)
        signal = policy.signal()
        assert policy.signal() == signal
        assert repr(policy.state_dict()) == repr(before)                    # evaluate changed nothing
        assert policy.update(rep) == first.trigger


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("cut", [2, 4])
def test_every_policy_survives_a_state_round_trip_mid_run(spec, cut):
    reports = synthetic_reports()
    policy = POLICIES.build(spec)
    for rep in reports[:cut]:
        policy.update(rep)
    twin = POLICIES.build(spec.replace("seed=0", "seed=1"))             # even a different draw is overwritten
    twin.load_state_dict(copy.deepcopy(policy.state_dict()))
    ours = [(policy.update(r), policy.signal()) for r in reports[cut:]]
    theirs = [(twin.update(r), twin.signal()) for r in reports[cut:]]
    assert ours == theirs


def test_synthetic_reports_make_the_round_trip_meaningful():
    """Guard for the test above: on these reports every policy except `never` triggers after both cuts."""
    for spec in SPECS[:-1]:
        fired_at, _ = run_policy(POLICIES.build(spec), synthetic_reports())
        assert fired_at is not None and fired_at >= 4, spec


# -- EPI end to end ------------------------------------------------------------------------------------------------


def test_epi_end_to_end_dense_trigger_prune_sparse(caplog):
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = blobs(128)
    pruner = ep.EarlyPruner(model, x[:8], 0.5, policy="epi:r=3,min_steps=0", optimizer=opt, steps=2)
    dense_channels = pruner.groups.totals()["channels"]
    with caplog.at_level(logging.INFO, logger="earlyprune"):
        train(pruner, model, opt, x, y, epochs=12)
    h = pruner.history
    k = pruner.prune_epoch
    assert k is not None and 2 <= k < 10
    assert [e["phase"] for e in h] == ["dense"] * k + ["pruning"] + ["sparse"] * (11 - k)
    assert h[k - 1]["trigger"] and h[k - 1]["trigger_reason"] == "signal"
    assert not any(e["trigger"] for e in h[:k - 1])
    assert "triggers" in caplog.text
    # the EPI curve up to the trigger, from the recorded structures N_t (Eq. 6, window truncated early on)
    curve = [e["policy_signal"] for e in h[1:k]]
    subnets = [e["subnetwork"] for e in h[:k]]
    assert curve == pytest.approx([ep.early_pruning_indicator(subnets[max(0, t - 3):t + 1], min(3, t))
                                   for t in range(1, k)])
    assert curve[-1] >= 0.983 and all(c < 0.983 for c in curve[:-1])
    assert all(set(e["epi"]) >= {"0.1", "0.5", "0.9"} and e["epi"]["0.9"] is not None for e in h[1:k])
    assert all(e["epoch"] == k for e in pruner.events) and len(pruner.events) == 2
    assert pruner.done and pruner.groups.totals()["channels"] <= 0.5 * dense_channels
    assert h[k]["epi"]["0.5"] is None and h[-1]["structure"] == pruner.structure()
    assert json.loads(pruner.history_json())["prune_epoch"] == k


def test_the_pruner_logs_and_records_a_prune_at_the_cap(caplog):
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = blobs(128)
    pruner = ep.EarlyPruner(model, x[:8], 0.5, policy="earlycrop:th=0.0001,cap=2,norm=eq11", optimizer=opt,
                            steps=2)
    with caplog.at_level(logging.WARNING, logger="earlyprune"):
        train(pruner, model, opt, x, y, epochs=4)
    assert pruner.prune_epoch == 2 and [e["trigger_reason"] for e in pruner.history] == [None, "cap", None, None]
    assert "did not fire within its cap of 2 dense epochs: pruning at the cap, epoch 2" in caplog.text
    assert pruner.history[1]["policy_signal"] == pytest.approx(pruner.history[1]["weight_change_score"])


@pytest.mark.parametrize("spec", ["epi:cap=6", "earlycrop:cap=6", "earlybird:cap=6,eps=0.2", "random:2-5,seed=0"])
def test_pruner_state_round_trip_decides_identically_for_every_policy(spec):
    torch.manual_seed(0)
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 5, (64,))
    pruner = ep.EarlyPruner(model, x[:4], 0.5, policy=spec, optimizer=opt, steps=2)
    train(pruner, model, opt, x, y, epochs=2)
    state = copy.deepcopy(pruner.state_dict())
    twin_model = copy.deepcopy(model)
    twin_opt = torch.optim.SGD(twin_model.parameters(), lr=0.05, momentum=0.9)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    twin = ep.EarlyPruner(twin_model, x[:4], 0.5, policy=spec, optimizer=twin_opt, steps=2)
    twin.load_state_dict(state)
    train(pruner, model, opt, x, y, epochs=6)
    train(twin, twin_model, twin_opt, x, y, epochs=6)
    assert pruner.prune_epoch is not None and pruner.prune_epoch >= 2
    assert twin.prune_epoch == pruner.prune_epoch and twin.history == pruner.history
