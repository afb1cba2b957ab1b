"""Attention heads as removable units: declared with num_heads=, ranked and removed whole, optionally with their
own ratio; the pruned model equals the dense model with those heads masked."""

import copy

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.surgery.engine import PruningEngine
from earlyprune.graph.groups import ChannelGroups
from earlyprune.planning.selection import select


class TinyAttention(nn.Module):
    """One self-attention block (query/key/value split into heads as transformers do: view(..., -1, head_dim)),
    a residual MLP, and a classifier."""

    def __init__(self, dim: int = 16, heads: int = 4, hidden: int = 24, classes: int = 3) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (layer(x).view(b, t, -1, self.head_dim).transpose(1, 2)
                   for layer in (self.query, self.key, self.value))
        att = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim ** 0.5, dim=-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(b, t, -1))
        x = x + self.down(torch.relu(self.up(x)))
        return self.fc(x.mean(1))


def _setup():
    model = TinyAttention()
    x = torch.randn(2, 5, 16)
    heads = {model.query: 4, model.key: 4, model.value: 4}
    return model, x, ChannelGroups(model, x, ignored_layers=[model.out, model.down], num_heads=heads)


def test_head_groups_remove_whole_heads_and_equal_the_masked_model():
    model, x, groups = _setup()
    attn = groups["query"]
    assert (attn.part, attn.unit_size, attn.width) == ("heads", 4, 16)
    assert groups["up"].part == "channels" and groups["up"].unit_size == 1
    scores = {"up": 10 + torch.rand(24)}
    scores["query"] = torch.tensor([5.0] * 4 + [0.1, 9, 0.1, 0.1] + [4.0] * 4 + [3.0] * 4)  # head 1: mean 2.35
    plan = select(groups, scores, 0.1)                         # 4 of 40 channels
    assert plan.remove["query"] == [4, 5, 6, 7]                # the lowest *mean* head, whole
    masked = copy.deepcopy(model).eval()
    masked_groups = ChannelGroups(masked, x, ignored_layers=[masked.out, masked.down],
                                  num_heads={masked.query: 4, masked.key: 4, masked.value: 4})
    with masked_groups["query"].masked(plan.remove["query"]), masked_groups["up"].masked(plan.remove.get("up", [])):
        expected = masked(x)
    PruningEngine(groups).apply(plan)
    assert model.query.out_features == model.key.out_features == model.value.out_features == 12
    assert model.out.in_features == 12
    torch.testing.assert_close(model.eval()(x), expected, rtol=1e-5, atol=1e-6)


def test_head_ratio_ranks_heads_apart_from_channels():
    model, x, _ = _setup()
    opt = torch.optim.Adam(model.parameters())
    pruner = ep.EarlyPruner(model, x, 0.5, head_ratio=0.25, policy="epoch:0", steps=1, steps_per_epoch=1,
                            optimizer=opt, ignored_layers=[model.out, model.down],
                            num_heads={model.query: 4, model.key: 4, model.value: 4})
    pruner.step()
    assert pruner.structure() == [12, 12]                      # 1 of 4 heads, 12 of 24 neurons
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters()))


@pytest.mark.parametrize("bad, match", [({"num_heads": 3}, "dividing its 16"), ({"num_heads": "x"}, "num_heads must be a mapping"),
                                        ({"head_ratio": 1.5}, r"head_ratio must be a number in \[0, 1\)"),
                                        ({"head_ratio": 0.2, "num_heads": None}, "needs attention-head groups")])
def test_bad_head_arguments_are_refused_with_the_fix(bad, match):
    model, x = TinyAttention(), torch.randn(2, 5, 16)
    kwargs = {"num_heads": {model.query: 4, model.key: 4, model.value: 4}, "ignored_layers": [model.out, model.down]}
    if bad.get("num_heads") == 3:
        bad = {"num_heads": {model.query: 3}}
    elif bad.get("num_heads") == "x":
        bad = {"num_heads": [model.query]}
    kwargs.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        ep.EarlyPruner(model, x, 0.5, optimizer=None, **kwargs)


def test_head_ratio_needs_the_channel_target():
    model, x = TinyAttention(), torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match="target='channels'"):
        ep.EarlyPruner(model, x, 0.5, head_ratio=0.25, target="flops", optimizer=None,
                       num_heads={model.query: 4, model.key: 4, model.value: 4})
