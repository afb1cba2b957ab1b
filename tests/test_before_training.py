"""Pruning before training: prune() with data-driven criteria (3SP, CroP-S, CroPit, SNAP-it), the halving
schedule, rescaled / re-initialised weights, and the ``before`` policy inside a training loop."""

import copy
import math

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.policies import POLICIES, Before
from earlyprune.planning.selection import halving_amounts, iterative_amounts, step_amounts
from nets import MLP, ResidualNet, randomize_

CE = nn.functional.cross_entropy


def images(n=64, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_halving_schedule_is_cropit_snapit():
    assert halving_amounts(0.9, 4) == pytest.approx([0.5, 0.7, 0.8, 0.9])
    assert halving_amounts(0.95, 1) == [0.95]
    assert halving_amounts(0.3, 3) == [0.3, 0.3, 0.3]            # ρ ≤ 0.5: one shot
    assert step_amounts(0.9, 4, "exponential") == iterative_amounts(0.9, 4)
    with pytest.raises(ValueError, match="schedule"):
        step_amounts(0.9, 4, "linear")
    with pytest.raises(ValueError, match="steps"):
        halving_amounts(0.9, 0)


@pytest.mark.parametrize("criterion", ["snip", "crop"])
def test_iterative_pruning_before_training_rescores_on_the_halving_schedule(criterion):
    torch.manual_seed(0)
    model = randomize_(ResidualNet())
    x, y = images()
    total = 8 + 12 + 12 + 16 + 16
    res = ep.prune(model, x[:8], 0.8, criterion=criterion, steps=3, batches=[(x[:32], y[:32]), (x[32:], y[32:])],
                   loss_fn=CE, max_group_ratio=1.0)
    removed = [sum(len(v) for v in step.values()) for step in res.removed]
    cumulative = [sum(removed[: i + 1]) for i in range(3)]
    assert all(r > 0 for r in removed)                         # every step removed channels after rescoring
    for done, amount in zip(cumulative, [0.5, 0.65, 0.8]):
        assert done >= math.floor(amount * total) - 1 and done <= math.ceil(amount * total) + 1
    assert model(x).shape == (64, 5)
    # "exponential" on request; "auto" picks it for weight-only criteria
    torch.manual_seed(0)
    res = ep.prune(randomize_(ResidualNet()), x[:8], 0.8, criterion="snip", steps=3, schedule="exponential",
                   batches=[(x, y)], loss_fn=CE, max_group_ratio=1.0)
    assert sum(len(v) for v in res.removed[0].values()) < 0.5 * total - 1
    with pytest.raises(ValueError, match="schedule"):
        ep.prune(MLP(), torch.randn(4, 20), 0.5, schedule="halve")


def test_3sp_one_batch_compute_aware_to_a_flops_target():
    torch.manual_seed(0)
    model = randomize_(ResidualNet())
    x, y = images()
    res = ep.prune(model, x[:8], 0.5, criterion="snip", target="flops", compute_aware=0.05, batches=[(x, y)],
                   loss_fn=CE)
    assert res.after.macs <= 0.5 * res.before.macs


def _fan_out(m):
    return m.out_channels // m.groups * math.prod(m.kernel_size) if isinstance(m, nn.Conv2d) else m.out_features


def test_rescale_multiplies_kept_weights_by_sqrt_of_fan_out_ratio():
    torch.manual_seed(0)
    dense = randomize_(ResidualNet())
    x, _ = images()
    plain, scaled = copy.deepcopy(dense), copy.deepcopy(dense)
    ep.prune(plain, x[:8], 0.5, criterion="magnitude")
    ep.prune(scaled, x[:8], 0.5, criterion="magnitude", rescale=True)
    before = {n: _fan_out(m) for n, m in dense.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    changed = 0
    for name, m in plain.named_modules():
        if name not in before:
            continue
        factor = math.sqrt(before[name] / _fan_out(m))
        torch.testing.assert_close(scaled.get_submodule(name).weight, m.weight * factor)
        changed += factor != 1.0
    assert changed >= 3
    torch.testing.assert_close(scaled.stem[1].weight, plain.stem[1].weight)   # BatchNorm and biases untouched
    torch.testing.assert_close(scaled.fc.bias, plain.fc.bias)


def test_reinit_replaces_the_weights_and_excludes_rescale():
    torch.manual_seed(0)
    dense = randomize_(ResidualNet())
    x, _ = images()
    plain, fresh = copy.deepcopy(dense), copy.deepcopy(dense)
    ep.prune(plain, x[:8], 0.5, criterion="magnitude")
    ep.prune(fresh, x[:8], 0.5, criterion="magnitude", reinit=True)
    assert not torch.allclose(fresh.b1[0][0].weight, plain.b1[0][0].weight)
    assert torch.equal(fresh.stem[1].weight, torch.ones_like(fresh.stem[1].weight))  # BatchNorm reset too
    seen = []
    ep.prune(copy.deepcopy(dense), x[:8], 0.5, reinit=lambda m: seen.append(m))
    assert len(seen) == 1 and isinstance(seen[0], ResidualNet)
    with pytest.raises(ValueError, match="exclude"):
        ep.prune(copy.deepcopy(dense), x[:8], 0.5, rescale=True, reinit=True)
    with pytest.raises(TypeError, match="rescale"):
        ep.prune(copy.deepcopy(dense), x[:8], 0.5, rescale=1)


def test_before_policy_prunes_in_the_first_batches_then_trains_sparse():
    torch.manual_seed(0)
    model = randomize_(ResidualNet())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = images(128)
    pruner = ep.EarlyPruner(model, x[:8], 0.8, criterion="crop", policy="before:2", optimizer=opt, steps=2,
                            loss_fn=CE, compute_aware=0.05, max_group_ratio=1.0)
    assert pruner.phase == "pruning" and pruner._amounts[0] == pytest.approx([0.5, 0.8])
    losses = []
    for _ in range(4):
        for idx in torch.arange(128).split(16):
            opt.zero_grad()
            loss = CE(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            pruner.step(x[idx], y[idx])
            losses.append(loss.item())
        pruner.epoch_end()
    assert [e["batch"] for e in pruner.events] == [1, 2] and [e["epoch"] for e in pruner.events] == [0, 0]
    assert pruner.done and pruner.history[0]["phase"] == "pruning"
    assert pruner.groups.totals()["channels"] <= 0.2 * 64 + 1
    assert sum(losses[-8:]) < sum(losses[2:10])                  # the pruned model learns


def test_before_policy_spec_and_validation():
    assert POLICIES.build("before").pruning_batches == 1 and POLICIES.build("before:5").pruning_batches == 5
    assert Before().start() and Before.schedule == "halving"
    for bad in ("before:0", "before:x"):
        with pytest.raises(ValueError, match="before:K"):
            POLICIES.build(bad)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps must be ≤ 1"):
        ep.EarlyPruner(model, torch.randn(4, 20), 0.5, criterion="snip", policy="before", optimizer=opt, loss_fn=CE)
    # weight-only criteria may take several steps on one batch
    ep.EarlyPruner(model, torch.randn(4, 20), 0.5, criterion="magnitude", policy="before", optimizer=opt, steps=3)
