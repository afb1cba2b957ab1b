"""The engine removes channels physically: a pruned model equals the masked dense one, and so do its
optimizer steps."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.selection import select
from masking import kept_slice, mask_, removed_entries
from nets import ARCHITECTURES, randomize_


def random_scores(groups, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {grp.name: torch.rand(grp.width, generator=g) for grp in groups}


def build(arch, seed=0):
    torch.manual_seed(seed)
    builder, shape = ARCHITECTURES[arch]
    return randomize_(builder(), seed), torch.randn(*shape)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_pruned_equals_masked_dense(arch, ratio):
    model, x = build(arch)
    groups = ChannelGroups(model, x)
    plan = select(groups, random_scores(groups), ratio)
    assert plan.n_removed > 0
    masked = copy.deepcopy(model)
    mask_(masked, removed_entries(groups, plan))
    dense_params = sum(p.numel() for p in model.parameters())
    PruningEngine(groups).apply(plan)
    assert sum(p.numel() for p in model.parameters()) < dense_params  # physically smaller
    model.eval(), masked.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), rtol=1e-5, atol=1e-5)
    assert groups.widths() == plan.structure


@pytest.mark.parametrize("arch", ["residual", "concat", "depthwise", "grouped"])
def test_repeated_pruning_keeps_function(arch):
    """Iterative pruning: three removals on the same model, each checked against its masked twin."""
    model, x = build(arch, seed=1)
    groups = ChannelGroups(model, x)
    engine = PruningEngine(groups)
    for step, amount in enumerate([0.2, 0.4, 0.6]):
        plan = select(groups, random_scores(groups, seed=step), amount)
        masked = copy.deepcopy(model)
        mask_(masked, removed_entries(groups, plan))
        engine.apply(plan)
        model.eval(), masked.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), masked(x), rtol=1e-5, atol=1e-5)
    assert groups.totals()["channels"] <= 0.4 * groups.baseline["channels"] + 1e-9


OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True),
}


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("arch", ["residual", "concat", "depthwise", "grouped", "mlp"])
def test_optimizer_step_after_pruning_equals_masked_dense(arch, opt_name):
    model, x = build(arch)
    y = torch.randint(0, 5, (x.shape[0],))
    model.train()
    masked = copy.deepcopy(model)
    opt = OPTIMIZERS[opt_name](model.parameters())
    opt_masked = OPTIMIZERS[opt_name](masked.parameters())
    for _ in range(2):  # build up momentum / moments on both
        train_step(model, opt, x, y)
        train_step(masked, opt_masked, x, y)

    groups = ChannelGroups(model, x)
    plan = select(groups, random_scores(groups), 0.5)
    entries = removed_entries(groups, plan)
    mask_(masked, entries)
    PruningEngine(groups).apply(plan, opt)

    # the optimizer now holds exactly the model's parameters, with state shaped like them
    params = list(model.parameters())
    assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(p) for p in params]
    for p in params:
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and value.dim() > 0:
                assert value.shape == p.shape, key
    dense_state = {name: opt_masked.state[p] for name, p in masked.named_parameters()}
    for name, p in model.named_parameters():
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and value.dim() > 0:
                torch.testing.assert_close(value, kept_slice(name, dense_state[name][key], entries, masked))

    train_step(model, opt, x, y)
    train_step(masked, opt_masked, x, y)
    for name, p in model.named_parameters():
        dense = dict(masked.named_parameters())[name]
        torch.testing.assert_close(p.detach(), kept_slice(name, dense.detach(), entries, masked),
                                   rtol=1e-4, atol=1e-5)


def test_gradients_are_sliced_with_the_weights():
    model, x = build("residual")
    y = torch.randint(0, 5, (x.shape[0],))
    nn.functional.cross_entropy(model(x), y).backward()
    dense_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    reference = copy.deepcopy(model)
    groups = ChannelGroups(model, x)
    plan = select(groups, random_scores(groups), 0.5)
    entries = removed_entries(groups, plan)
    PruningEngine(groups).apply(plan)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape
        torch.testing.assert_close(p.grad, kept_slice(name, dense_grads[name], entries, reference))


def test_lr_scheduler_and_grad_scaler_keep_working():
    model, x = build("residual")
    y = torch.randint(0, 5, (x.shape[0],))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=True)

    def step():
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()

    step()
    groups = ChannelGroups(model, x)
    PruningEngine(groups).apply(select(groups, random_scores(groups), 0.5), opt)
    before = [p.detach().clone() for p in model.parameters()]
    step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters())]
    assert any(changed)  # the optimizer updates the new parameters


def test_plan_for_another_model_is_refused():
    model, x = build("residual")
    groups = ChannelGroups(model, x)
    plan = select(groups, random_scores(groups), 0.5)
    other, x2 = build("mlp")
    other_groups = ChannelGroups(other, x2)
    with pytest.raises(ValueError, match="groups this model does not have"):
        PruningEngine(other_groups).apply(plan)


def test_optimizer_type_is_checked():
    model, x = build("mlp")
    groups = ChannelGroups(model, x)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        PruningEngine(groups).apply(select(groups, random_scores(groups), 0.5), optimizer="sgd")


def test_masked_channels_compute_like_removed_ones_and_are_restored():
    model, x = build("residual")
    groups = ChannelGroups(model, x)
    plan = select(groups, random_scores(groups), 0.4)
    model.eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    twin = copy.deepcopy(model)
    twin_groups = ChannelGroups(twin, x)
    with torch.no_grad(), contextlib.ExitStack() as stack:
        for name, idxs in plan.remove.items():
            stack.enter_context(twin_groups[name].masked(idxs))
        masked_out = twin(x)
        PruningEngine(groups).apply(plan)
        torch.testing.assert_close(model(x), masked_out, rtol=1e-5, atol=1e-5)
    for n, p in twin.named_parameters():
        assert torch.equal(p, before[n]), n   # restored on exit


class FixedWidth(nn.Module):
    """A forward that hard-codes a width (as torchvision's ViT does with hidden_dim)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.a(x).reshape(-1, 8))


def test_a_model_that_stops_running_after_pruning_is_reported_clearly():
    model, x = FixedWidth(), torch.randn(2, 4)
    groups = ChannelGroups(model, x)
    with pytest.raises(RuntimeError, match="no longer runs on example_inputs.*ignored_layers"):
        PruningEngine(groups).apply(select(groups, random_scores(groups), 0.5))
