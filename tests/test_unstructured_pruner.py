"""EarlyPruner and prune() at granularity "weights" and "both": the same policies decide when, one global ranking
reaches the weight sparsity exactly, masks stay on through training, channels first then weights in one run,
and a resumed run continues identically."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import earlyprune as ep
from earlyprune.unstructured import MaskedWeights
from loops import blobs
from nets import MLP, ResidualNet, randomize_


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def _epochs(pruner, model, opt, x, y, epochs, batch=16):
    for _ in range(epochs):
        for idx in torch.arange(len(y)).split(batch):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            pruner.step(x[idx], y[idx])
        pruner.epoch_end()


def test_weights_at_a_fixed_epoch_reach_the_sparsity_exactly_and_stay():
    torch.manual_seed(0)
    model = randomize_(ResidualNet())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = images()
    pruner = ep.EarlyPruner(model, x[:4], 0.9, granularity="weights", criterion="crop", policy="epoch:2",
                            optimizer=opt, loss_fn=F.cross_entropy, steps=3)
    total = MaskedWeights(model).baseline
    _epochs(pruner, model, opt, x, y, 2)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())  # dense epochs carry no masks
    _epochs(pruner, model, opt, x, y, 4)
    assert [h["phase"] for h in pruner.history] == ["dense", "dense", "pruning", "sparse", "sparse", "sparse"]
    assert [e["level"] for e in pruner.events] == ["weights"] * 3 and all(e["epoch"] == 2 for e in pruner.events)
    weights = MaskedWeights(model)
    assert weights.kept() == round(0.1 * total) == pruner.history[-1]["weights"]
    assert pruner.history[-1]["weight_structure"] == weights.widths() == pruner.structure()
    for t in weights:
        assert torch.count_nonzero(t.value.detach()[~t.mask]) == 0
    stats = pruner.stats()
    assert stats.params == pruner.dense_stats.params and stats.macs == pruner.dense_stats.macs  # dense kernels
    assert stats.weight_sparsity > 0.85 and stats.node_sparsity == 0.0


def test_earlycrop_and_epi_decide_when_on_weights():
    x, y = blobs(128)
    for policy in ("earlycrop:cap=3", "epi:r=1,cap=3"):
        torch.manual_seed(0)
        model = MLP()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        pruner = ep.EarlyPruner(model, x[:4], 0.8, granularity="weights", criterion="magnitude", policy=policy,
                                optimizer=opt, steps=2)
        _epochs(pruner, model, opt, x, y, 5, batch=32)
        assert pruner.prune_epoch is not None and pruner.prune_epoch <= 3
        dense = [h for h in pruner.history if h["phase"] == "dense"]
        assert all(len(h["subnetwork"]) == len(MaskedWeights(model)) for h in dense)  # Ψ over kept counts
        assert dense[-1]["weight_change_score"] is not None or len(dense) == 1
        if len(dense) > 1:
            assert dense[1]["epi"]["0.8"] is not None and 0 <= dense[1]["weight_mask_distance"] <= 1


def test_cropit_u_before_training_with_the_halving_schedule():
    torch.manual_seed(0)
    model = randomize_(ResidualNet())
    x, y = images(32)
    result = ep.prune(model, x[:4], 0.9, granularity="weights", criterion="crop", steps=3,
                      batches=[(x[:16], y[:16]), (x[16:], y[16:])], loss_fn=F.cross_entropy)
    total = sum(result.weight_structure) + sum(result.masked)
    assert result.granularity == "weights" and len(result.masked) == 3
    # ρ_i = ρ − (ρ − 0.5)·0.5^i: 50 %, 70 %, then 90 % of the weights
    assert result.masked[0] == pytest.approx(0.5 * total, abs=1) and sum(result.masked[:2]) == pytest.approx(
        0.7 * total, abs=1)
    assert sum(result.weight_structure) == round(0.1 * total)
    assert result.after.weight_sparsity > 0.85


@pytest.mark.parametrize("criterion", ["snip", "grasp", "random", "magnitude"])
def test_prune_weights_with_every_criterion(criterion):
    model = ResidualNet()
    x, y = images(16)
    result = ep.prune(model, x[:4], 0.8, granularity="weights", criterion=criterion, batches=[(x, y)],
                      loss_fn=F.cross_entropy)
    assert sum(result.weight_structure) == round(0.2 * MaskedWeights(model).baseline)


def test_both_removes_channels_then_masks_weights_in_one_run(tmp_path):
    torch.manual_seed(0)
    model = randomize_(ResidualNet())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = images()
    dense_weights = MaskedWeights(model).baseline
    pruner = ep.EarlyPruner(model, x[:4], 0.4, granularity="both", weight_ratio=0.9, criterion="crop",
                            policy="epoch:1", optimizer=opt, loss_fn=F.cross_entropy, steps=2)
    assert pruner.weight_baseline == dense_weights
    _epochs(pruner, model, opt, x, y, 4)
    assert [e["level"] for e in pruner.events] == ["channels", "channels", "weights", "weights"]
    assert MaskedWeights(model).kept() == round(0.1 * dense_weights)
    last = pruner.history[-1]
    assert last["channels"] < pruner.history[0]["channels"] and "weight_structure" in last and "structure" in last
    stats = pruner.stats()
    assert stats.node_sparsity > 0 and stats.params < pruner.dense_stats.params  # channels removed: faster
    path = ep.save(model, tmp_path / "both.safetensors")
    doc = ep.io.read_structure(path)
    assert doc["history"] and doc["masks"]                          # both recorded in the structure record
    loaded = ep.load(path, ResidualNet()).eval()
    assert torch.equal(loaded(x[:4]), model.eval()(x[:4]))


@pytest.mark.filterwarnings("ignore:.*already pruned")  # the channels removed more than the first weight step asks
def test_a_resumed_weights_run_continues_identically(tmp_path):
    x, y = images()

    def build():
        torch.manual_seed(0)
        model = randomize_(ResidualNet())
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        pruner = ep.EarlyPruner(model, x[:4], 0.4, granularity="both", weight_ratio=0.8, criterion="magnitude",
                                policy="epoch:1", optimizer=opt, steps=2)
        return model, opt, pruner

    model, opt, pruner = build()
    _epochs(pruner, model, opt, x, y, 3)
    ep.save(model, tmp_path / "m.safetensors")
    state = {"opt": copy.deepcopy(opt.state_dict()), "pruner": copy.deepcopy(pruner.state_dict())}
    _epochs(pruner, model, opt, x, y, 2)

    torch.manual_seed(0)
    resumed = ep.load(tmp_path / "m.safetensors", randomize_(ResidualNet()))
    opt2 = torch.optim.SGD(ep.unstructured.parameters_in_plain_order(resumed), lr=0.05, momentum=0.9)
    opt2.load_state_dict(state["opt"])
    pruner2 = ep.EarlyPruner(resumed, x[:4], 0.4, granularity="both", weight_ratio=0.8, criterion="magnitude",
                             policy="epoch:1", optimizer=opt2, steps=2)
    pruner2.load_state_dict(state["pruner"])
    assert pruner2.weight_baseline == pruner.weight_baseline and len(pruner2.levels) == 2
    _epochs(pruner2, resumed, opt2, x, y, 2)
    for (n1, p1), (n2, p2) in zip(sorted(ep.unstructured.plain_state_dict(model).items()),
                                  sorted(ep.unstructured.plain_state_dict(resumed).items())):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_bad_combinations_are_refused():
    model, x = MLP(), torch.randn(2, 20)
    with pytest.raises(ValueError, match="weight_ratio"):
        ep.EarlyPruner(model, x, 0.5, granularity="both", optimizer=None)
    with pytest.raises(ValueError, match="granularity='both' only"):
        ep.EarlyPruner(model, x, 0.5, weight_ratio=0.9, optimizer=None)
    with pytest.raises(ValueError, match="target= shapes channel pruning"):
        ep.EarlyPruner(model, x, 0.5, granularity="weights", target="flops", optimizer=None)
    with pytest.raises(ValueError, match="compute_aware"):
        ep.EarlyPruner(model, x, 0.5, granularity="weights", compute_aware=0.1, optimizer=None)
    with pytest.raises(ValueError, match="no weight-level form"):
        ep.EarlyPruner(model, x, 0.5, granularity="weights", criterion="taylor", optimizer=None)
    with pytest.raises(ValueError, match="scores single weights"):
        ep.EarlyPruner(model, x, 0.5, criterion="crop-u", optimizer=None)
    with pytest.raises(ValueError, match="granularity must be one of"):
        ep.EarlyPruner(model, x, 0.5, granularity="blocks", optimizer=None)
    with pytest.raises(ValueError, match="rescale"):
        ep.prune(model, x, 0.5, granularity="weights", rescale=True)


def test_channels_cannot_be_removed_once_weights_are_masked():
    model = ResidualNet()
    x = torch.randn(2, 3, 8, 8)
    weights = MaskedWeights(model)
    weights.apply({t.name: torch.rand(t.shape) < 0.5 for t in weights})
    groups = ep.ChannelGroups(model, x)                 # traced with the masks lifted: costs are right
    assert groups.totals()["macs"] == ep.measure(model, x).macs
    assert parametrize.is_parametrized(model.stem[0], "weight")   # and the masks are back on
    with pytest.raises(RuntimeError, match="weight masks"):
        ep.prune(model, x, 0.3)


def test_earlycrop_prunes_at_one_point_with_batches():
    """EarlyCroP Algorithm 1: the iterations happen at one point — ``earlycrop:batches=K`` prunes within the
    first K batches of the pruning epoch, halving schedule, each step rescoring fresh batches."""
    torch.manual_seed(0)
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = images()
    pruner = ep.EarlyPruner(model, x[:4], 0.8, granularity="weights", criterion="crop",
                            policy="earlycrop:cap=1,batches=3", steps=3, schedule="halving", optimizer=opt,
                            loss_fn=F.cross_entropy)
    _epochs(pruner, model, opt, x, y, 2, batch=8)
    assert [(e["epoch"], e["batch"]) for e in pruner.events] == [(1, 1), (1, 2), (1, 3)]
    assert [e["amount"] for e in pruner.events] == pytest.approx([0.5, 0.65, 0.8])
    with pytest.raises(ValueError, match="steps must be ≤ 2"):
        ep.EarlyPruner(ResidualNet(), x[:4], 0.8, criterion="crop", policy="earlycrop:batches=2", steps=3,
                       optimizer=None, loss_fn=F.cross_entropy)
