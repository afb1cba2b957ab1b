"""A pruning step that fails leaves the model, the optimizer and torch-pruning's graph exactly as before it."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import earlyprune as ep
from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.io import structure_json
from earlyprune.planning.selection import select
from nets import ARCHITECTURES, randomize_


def build(arch, seed=0):
    torch.manual_seed(seed)
    builder, shape = ARCHITECTURES[arch]
    return randomize_(builder(), seed), torch.randn(*shape)


def adam_with_state(model, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x).float().pow(2).mean().backward()
    opt.step()
    return opt


def state_of(model, opt):
    params = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    moments = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for p, s in opt.state.items()}
    return params, buffers, moments, [list(g["params"]) for g in opt.param_groups]


def assert_unchanged(model, opt, before):
    params, buffers, moments, groups = before
    now = dict(model.named_parameters())
    assert now.keys() == params.keys()
    for name, (obj, value) in params.items():
        assert now[name] is obj and torch.equal(now[name].detach(), value), name
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    assert [list(g["params"]) for g in opt.param_groups] == groups
    assert {id(p) for p in opt.state} == set(moments)
    for p, s in opt.state.items():
        for k, v in s.items():
            assert torch.equal(v, moments[id(p)][k]) if torch.is_tensor(v) else v == moments[id(p)][k]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_failed_step_is_undone_and_the_same_step_then_succeeds(arch, monkeypatch):
    model, x = build(arch)
    twin = copy.deepcopy(model)
    opt = adam_with_state(model, x)
    groups = ChannelGroups(model, x)
    widths, history = groups.widths(), structure_json(model)["history"]
    plan = select(groups, {g.name: torch.rand(g.width) for g in groups}, 0.5)
    assert plan.n_removed > 0
    before = state_of(model, opt)
    engine = PruningEngine(groups)

    def broken(removed):  # the failure comes after every group of the plan was removed
        raise RuntimeError("simulated: the pruned model does not run")

    monkeypatch.setattr(engine, "_check_runs", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        engine.apply(plan, opt)
    assert_unchanged(model, opt, before)
    assert groups.widths() == widths and structure_json(model)["history"] == history
    model(x)  # runs, at the original widths

    # the restored graph (concat sizes, parameter names, history) prunes as if nothing had happened
    monkeypatch.undo()
    engine.apply(plan, opt)
    PruningEngine(ChannelGroups(twin, x)).apply(plan)
    assert [p.shape for p in model.parameters()] == [p.shape for p in twin.parameters()]
    assert structure_json(model)["history"] == structure_json(twin)["history"]
    opt.zero_grad()
    model(x).float().pow(2).mean().backward()
    opt.step()  # the optimizer state follows the pruned parameters


class HardCodedAttention(nn.Module):
    """A BERT-like self-attention block whose reshape uses the head size fixed at construction."""

    def __init__(self, d: int = 16, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.heads, self.head_size = heads, d // heads
        self.embed = nn.Linear(6, d)
        self.q, self.k, self.v, self.out = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, classes)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_size).transpose(1, 2)  # breaks when q/k/v lose channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        q, k, v = self.split(self.q(h)), self.split(self.k(h)), self.split(self.v(h))
        a = torch.softmax(q @ k.transpose(-1, -2) / self.head_size ** 0.5, -1) @ v
        h = h + self.out(a.transpose(1, 2).reshape(h.shape[0], h.shape[1], self.heads * self.head_size))
        h = h + self.fc2(F.gelu(self.fc1(h)))
        return self.head(h.mean(1))


def test_an_attention_with_a_hard_coded_head_size_is_left_intact_and_trainable():
    torch.manual_seed(0)
    model = HardCodedAttention()
    x, y = torch.randn(8, 5, 6), torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    n_params = sum(p.numel() for p in model.parameters())
    with pytest.raises(ep.UnprunableGroupsError, match=r"ignored_layers=\[model\.q"):  # caught at construction
        ep.EarlyPruner(model, x[:2], 0.5, policy="epoch:0", steps=1, steps_per_epoch=1, optimizer=opt, round_to=1)
    # without that check, the failing step itself is undone
    pruner = ep.EarlyPruner(model, x[:2], 0.5, policy="epoch:0", steps=1, steps_per_epoch=1, optimizer=opt,
                            round_to=1, checks=False)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    before = state_of(model, opt)
    with pytest.raises(RuntimeError, match="hard-coded head size.*Nothing was pruned"):
        pruner.step()
    assert_unchanged(model, opt, before)
    assert sum(p.numel() for p in model.parameters()) == n_params and not pruner.events
    for _ in range(2):  # the model and its optimizer keep training
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    # keeping the attention projections, as the error says, prunes the rest
    torch.manual_seed(0)
    model = HardCodedAttention()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ep.prune(model, x[:2], 0.3, ignored_layers=[model.q, model.k, model.v], optimizer=opt)
    assert sum(p.numel() for p in model.parameters()) < n_params
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_several_optimizers_are_all_restored(monkeypatch):
    model, x = build("residual")
    params = list(model.parameters())
    opts = [torch.optim.SGD(params[: len(params) // 2], lr=0.1, momentum=0.9),
            torch.optim.Adam(params[len(params) // 2:], lr=1e-3)]
    model(x).pow(2).mean().backward()
    for opt in opts:
        opt.step()
    groups = ChannelGroups(model, x)
    plan = select(groups, {g.name: torch.rand(g.width) for g in groups}, 0.5)
    before = [state_of_one(opt) for opt in opts]
    engine = PruningEngine(groups)
    monkeypatch.setattr(engine, "_check_runs", lambda removed: (_ for _ in ()).throw(RuntimeError("simulated")))
    with pytest.raises(RuntimeError, match="simulated"):
        engine.apply(plan, opts)
    assert [state_of_one(opt) for opt in opts] == before
    assert all(p is q for p, q in zip(model.parameters(), params))


def state_of_one(opt):
    return ([[id(p) for p in g["params"]] for g in opt.param_groups],
            {id(p): {k: (v.shape, float(v.sum())) if torch.is_tensor(v) else v for k, v in s.items()}
             for p, s in opt.state.items()})
