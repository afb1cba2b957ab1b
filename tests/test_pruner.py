"""EarlyPruner inside a training loop: phases, iterative steps, learning after pruning, validation, state."""

import copy

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.policies import POLICIES, EpochReport, Policy
from loops import blobs
from loops import train as run
from nets import MLP, ResidualNet


def make(policy="epoch:2", ratio=0.5, steps=4, **kw):
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = blobs()
    pruner = ep.EarlyPruner(model, x[:32], ratio, policy=policy, optimizer=opt, steps=steps, **kw)
    return pruner, model, opt, x, y


def test_dense_then_iterative_pruning_then_sparse_training_keeps_learning():
    pruner, model, opt, x, y = make()
    dense_channels = pruner.groups.totals()["channels"]
    losses = run(pruner, model, opt, x, y, epochs=8)
    assert [h["phase"] for h in pruner.history] == ["dense", "dense", "pruning"] + ["sparse"] * 5
    assert pruner.prune_epoch == 2 and pruner.done
    assert len(pruner.events) == 4                                     # S iterative steps in epoch 2
    assert all(e["epoch"] == 2 for e in pruner.events)
    removed = [dense_channels - e["channels"] for e in pruner.events]
    assert removed == sorted(removed) and removed[-1] >= 0.5 * dense_channels   # exponential schedule → target
    assert pruner.groups.totals()["channels"] <= 0.5 * dense_channels
    sparse = losses[3:]
    assert sparse[-1] < sparse[0]                                       # the pruned model keeps learning
    assert sparse[-1] < losses[0] / 4
    assert pruner.stats().params < pruner.dense_stats.params


def test_steps_scheduled_across_the_epoch_batches():
    pruner, model, opt, x, y = make(policy="epoch:1", steps=4)
    run(pruner, model, opt, x, y, epochs=2)
    assert [e["batch"] for e in pruner.events] == [2, 4, 6, 8]          # 8 batches per epoch, S = 4


def test_more_steps_than_batches_finish_at_epoch_end():
    pruner, model, opt, x, y = make(policy="epoch:1", steps=12)
    run(pruner, model, opt, x, y, epochs=2)
    assert len(pruner.events) == 12 and pruner.done


def test_epoch_zero_needs_steps_per_epoch():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make(policy="epoch:0")
    pruner, model, opt, x, y = make(policy="epoch:0", steps_per_epoch=8)
    run(pruner, model, opt, x, y, epochs=1)
    assert pruner.done and pruner.prune_epoch == 0


def test_never_keeps_the_model_dense():
    pruner, model, opt, x, y = make(policy="never")
    before = [p.shape for p in model.parameters()]
    run(pruner, model, opt, x, y, epochs=3)
    assert [p.shape for p in model.parameters()] == before and not pruner.events


def test_flops_target_with_a_residual_network():
    torch.manual_seed(0)
    model = ResidualNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 5, (64,))
    pruner = ep.EarlyPruner(model, x[:8], 0.5, target="flops", policy="epoch:1", optimizer=opt, steps=2)
    run(pruner, model, opt, x, y, epochs=3, batch=16)
    assert pruner.stats().macs <= 0.5 * pruner.dense_stats.macs + 1


def test_a_custom_policy_instance_is_used_without_special_cases():
    class AfterLossPlateau(Policy):
        needs_scores = True

        def __init__(self):
            self.reports = []

        def update(self, report: EpochReport) -> bool:
            self.reports.append(report)
            return report.epoch == 1

    policy = AfterLossPlateau()
    pruner, model, opt, x, y = make(policy=policy)
    run(pruner, model, opt, x, y, epochs=4)
    assert pruner.prune_epoch == 2
    assert [r.epoch for r in policy.reports] == [0, 1]
    assert all(r.scores is not None and set(r.scores) == set(pruner.groups.names) for r in policy.reports)


def test_state_dict_round_trip_decides_identically():
    pruner, model, opt, x, y = make(policy="epoch:3")
    run(pruner, model, opt, x, y, epochs=2)
    state = copy.deepcopy(pruner.state_dict())
    twin_model = copy.deepcopy(model)
    twin_opt = torch.optim.SGD(twin_model.parameters(), lr=0.05, momentum=0.9)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict may share tensors
    twin = ep.EarlyPruner(twin_model, x[:32], 0.5, policy="epoch:3", optimizer=twin_opt, steps=4)
    twin.load_state_dict(state)
    run(pruner, model, opt, x, y, epochs=3)
    run(twin, twin_model, twin_opt, x, y, epochs=3)
    assert twin.history == pruner.history and twin.prune_epoch == pruner.prune_epoch == 3
    assert [e["batch"] for e in twin.events] == [e["batch"] for e in pruner.events]
    for a, b in zip(model.parameters(), twin_model.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="not an EarlyPruner state"):
        twin.load_state_dict({"epoch": 1})


def test_a_pruner_resumed_on_the_pruned_model_reports_against_the_original():
    pruner, model, opt, x, y = make(policy="epoch:1")
    run(pruner, model, opt, x, y, epochs=3)
    state = copy.deepcopy(pruner.state_dict())
    resumed = ep.EarlyPruner(model, x[:32], 0.5, policy="epoch:1", optimizer=opt, steps=4)  # already pruned
    assert resumed.dense_stats.params == pruner.stats().params      # measured on what it was given …
    resumed.load_state_dict(state)
    assert resumed.dense_stats == pruner.dense_stats                  # … until the state restores the original
    assert resumed.stats() == pruner.stats() and resumed.stats().node_sparsity > 0.4


@pytest.mark.parametrize("kwargs,error,match", [
    ({"ratio": 0.0}, ValueError, "ratio must be in"),
    ({"ratio": 1.2}, ValueError, "ratio must be a number"),
    ({"criterion": "magnitud"}, ValueError, "unknown criterion 'magnitud'; available: .*magnitude"),
    ({"policy": "epoc:3"}, ValueError, "unknown policy 'epoc'"),
    ({"policy": "epoch:soon"}, ValueError, "whole number"),
    ({"policy": 3}, TypeError, "policy must be a name"),
    ({"steps": 0}, ValueError, "steps must be a positive integer"),
    ({"steps_per_epoch": -5}, ValueError, "steps_per_epoch"),
    ({"target": "seconds"}, ValueError, "target must be one of"),
    ({"max_group_ratio": 0.0}, ValueError, "max_group_ratio must be a number in"),
    ({"optimizer": "sgd"}, TypeError, "torch.optim.Optimizer"),
])
def test_bad_arguments_are_refused_at_construction(kwargs, error, match):
    model = MLP()
    args = {"ratio": 0.5, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    args.update(kwargs)
    ratio = args.pop("ratio")
    with pytest.raises(error, match=match):
        ep.EarlyPruner(model, torch.randn(2, 20), ratio, **args)


def test_the_optimizer_must_be_given():
    with pytest.raises(TypeError, match="needs optimizer="):
        ep.EarlyPruner(MLP(), torch.randn(2, 20), 0.5)


def test_registries_list_what_ships():
    assert "magnitude" in ep.CRITERIA.names()
    assert {"epoch", "never"} <= set(POLICIES.names())


class WeightTimesGrad(ep.Criterion):
    """|Σ w·∂L/∂w| over each producer's filter: a minimal gradient criterion for the interface tests."""

    uses_gradients = True

    def compute(self, groups, batch=None):
        out = {}
        for g in groups:
            total = torch.zeros(g.width)
            for ref in g.producers():
                w = ref.module.weight
                total += g.gather(ref, (w * w.grad).flatten(1).sum(1).abs().detach())
            out[g.name] = total
        return out


class OwnPasses(WeightTimesGrad):
    """Runs its own forward/backward on the batch it is given."""

    uses_gradients = False
    needs_batches = True

    def compute(self, groups, batch=None):
        groups.model.zero_grad()
        batch.loss(groups.model).backward()
        scores = super().compute(groups)
        groups.model.zero_grad()
        return scores


def test_prune_scores_gradient_criteria_on_given_batches():
    x, y = blobs(64)
    model = MLP()
    result = ep.prune(model, x[:8], 0.5, criterion=WeightTimesGrad(), batches=[(x[:32], y[:32]), (x[32:], y[32:])],
                      loss_fn=nn.functional.cross_entropy)
    assert sum(result.structure) <= 28
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="scores from training data"):
        ep.prune(MLP(), x[:8], 0.5, criterion=WeightTimesGrad())
    with pytest.raises(ValueError, match="needs loss_fn"):
        ep.prune(MLP(), x[:8], 0.5, criterion=WeightTimesGrad(), batches=[(x, y)])
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pairs"):
        ep.prune(MLP(), x[:8], 0.5, criterion=WeightTimesGrad(), batches=[x], loss_fn=nn.functional.cross_entropy)


def test_criteria_with_their_own_passes_get_the_batch_from_step():
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = blobs()
    with pytest.raises(ValueError, match="pass loss_fn="):
        ep.EarlyPruner(model, x[:32], 0.5, criterion=OwnPasses(), policy="epoch:1", optimizer=opt)
    pruner = ep.EarlyPruner(model, x[:32], 0.5, criterion=OwnPasses(), policy="epoch:1", optimizer=opt, steps=2,
                            loss_fn=nn.functional.cross_entropy)
    with pytest.raises(ValueError, match=r"call pruner.step\(inputs, targets\)"):
        pruner.step()
    for _ in range(2):
        for idx in torch.arange(len(y)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            pruner.step(x[idx], y[idx])
        pruner.epoch_end()
    assert pruner.done and len(pruner.events) == 2


def test_a_policy_can_confine_pruning_to_the_first_batches():
    class FirstBatches(Policy):
        pruning_batches = 2

        def start(self):
            return True

        def update(self, report):
            return False

    pruner, model, opt, x, y = make(policy=FirstBatches(), steps=2)
    run(pruner, model, opt, x, y, epochs=1)
    assert [e["batch"] for e in pruner.events] == [1, 2]
    assert pruner.history[0]["phase"] == "pruning" and pruner.done
