"""Weight masks (torch.nn.utils.parametrize): pruned weights stay exactly zero through training, whatever the
optimizer keeps; the optimizer's Parameter objects survive; masks only ever lose entries."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from earlyprune.unstructured import MaskedWeights, parameters_in_plain_order, plain_state_dict
from earlyprune.graph.masks import mask_of, plain_name, prunable_weights
from nets import ARCHITECTURES, ResidualNet


def _random_keep(weights, fraction=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {t.name: torch.rand(t.shape, generator=g) < fraction for t in weights}


def _train(model, optimizer, steps, seed=1, shape=(8, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(shape, generator=g), torch.randint(0, 5, (shape[0],), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


OPTIMIZERS = {
    "sgd-momentum-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adam-amsgrad-wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3, amsgrad=True),
    "rmsprop-momentum": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9, weight_decay=1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero_through_training(name):
    """Masks applied mid-training (momentum and Adam moments non-zero), then 60 more steps: the effective
    weights, the raw parameters and every optimizer state tensor stay exactly zero where pruned."""
    torch.manual_seed(0)
    model = ResidualNet()
    optimizer = OPTIMIZERS[name](model.parameters())
    params_before = [id(p) for p in optimizer.param_groups[0]["params"]]
    _train(model, optimizer, 5)
    weights = MaskedWeights(model)
    keep = _random_keep(weights)
    weights.apply(keep, optimizer)
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == params_before  # same Parameter objects
    _train(model, optimizer, 60, seed=2)
    for t in weights:
        drop = ~keep[t.name]
        assert torch.count_nonzero(t.value.detach()[drop]) == 0
        assert torch.count_nonzero(t.parameter.detach()[drop]) == 0
        for key, state in optimizer.state[t.parameter].items():
            if isinstance(state, torch.Tensor) and state.shape == t.shape:
                assert torch.count_nonzero(state[drop]) == 0, key
        assert torch.count_nonzero(t.value.detach()[keep[t.name]]) > 0.9 * int(keep[t.name].sum())  # kept ones train


def test_masked_model_computes_as_the_dense_model_with_zeroed_weights():
    model = ResidualNet().eval()
    weights = MaskedWeights(model)
    keep = _random_keep(weights)
    reference = ResidualNet().eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        for t in weights:
            reference.get_parameter(t.name)[~keep[t.name]] = 0
    weights.apply(keep)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(model(x), reference(x))


def test_masks_follow_dtype_and_the_gradient_of_a_pruned_weight_is_zero():
    layer = nn.Linear(3, 2)
    weights = MaskedWeights(layer)
    keep = torch.tensor([[True, False, True], [False, True, True]])
    weights.apply({"weight": keep})
    layer.to(torch.bfloat16)
    assert mask_of(layer, "weight").mask.dtype == torch.bfloat16
    assert torch.equal(weights["weight"].mask, keep)
    (layer.weight.float() * torch.randn(2, 3)).sum().backward()
    assert torch.equal(weights["weight"].parameter.grad[~keep].float(), torch.zeros(2))


def test_masks_only_lose_entries_and_apply_counts_new_ones():
    model = ResidualNet()
    weights = MaskedWeights(model)
    first = _random_keep(weights, 0.5, seed=0)
    n1 = weights.apply(first)
    assert n1 == sum(int((~k).sum()) for k in first.values())
    second = _random_keep(weights, 0.5, seed=1)
    n2 = weights.apply(second)
    for t in weights:
        assert torch.equal(t.mask, first[t.name] & second[t.name])  # a pruned weight is never revived
    assert n1 + n2 == sum(t.width - t.kept for t in weights)
    assert weights.sparsity() == pytest.approx(1 - weights.kept() / weights.baseline)


def test_assignment_writes_through_the_mask():
    """Rewinding (LTR) assigns old weights: the pruned entries stay zero."""
    layer = nn.Linear(4, 3)
    weights = MaskedWeights(layer)
    keep = torch.rand(3, 4) < 0.5
    weights.apply({"weight": keep})
    layer.weight = torch.ones(3, 4)
    assert torch.equal(layer.weight, keep.float())


def test_lstm_and_attention_weights_are_masked():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.lstm = nn.LSTM(8, 16, batch_first=True)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 20)

        def forward(self, x):
            h, _ = self.lstm(self.emb(x))
            return self.head(self.attn(h, h, h)[0])

    model = LM()
    names = [n for n, _, _ in prunable_weights(model)]
    assert names == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "attn.in_proj_weight", "attn.out_proj.weight",
                     "head.weight"]  # no embedding, no bias
    weights = MaskedWeights(model)
    keep = _random_keep(weights)
    x = torch.randint(0, 20, (2, 5))
    reference = LM()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        for t in weights:
            reference.get_parameter(t.name)[~keep[t.name]] = 0
    weights.apply(keep)
    assert torch.allclose(model(x), reference(x), atol=1e-6)


def test_tied_weights_are_left_alone_with_a_warning():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.mid = nn.Linear(4, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, x):
            return self.out(self.mid(self.emb(x)))

    with pytest.warns(UserWarning, match="tied"):
        weights = MaskedWeights(Tied())
    assert weights.names == ["mid.weight"]


def test_plain_names_order_and_state_dict():
    model = ResidualNet()
    order = [n for n, _ in model.named_parameters()]
    weights = MaskedWeights(model)
    weights.apply(_random_keep(weights))
    assert plain_name("b1.0.0.parametrizations.weight.original") == "b1.0.0.weight"
    expected = [weights[n].parameter if n in weights.names else model.get_parameter(n) for n in order]
    assert [id(p) for p in parameters_in_plain_order(model)] == [id(p) for p in expected]
    plain = list(plain_state_dict(model))
    assert plain == list(ResidualNet().state_dict())             # the unmasked model's names, in its order
    values = plain_state_dict(model)
    assert torch.equal(values["stem.0.weight"], model.stem[0].weight)


def test_remove_bakes_the_masked_values():
    model = ResidualNet()
    weights = MaskedWeights(model)
    keep = _random_keep(weights)
    weights.apply(keep)
    weights.remove()
    assert mask_of(model.stem[0], "weight") is None
    assert isinstance(model.stem[0].weight, nn.Parameter)
    assert torch.count_nonzero(model.stem[0].weight[~keep["stem.0.weight"]]) == 0


def test_bad_input_is_refused_clearly():
    model = ResidualNet()
    with pytest.raises(ValueError, match="ignored_layers"):
        MaskedWeights(model, ignored_layers=[nn.Linear(2, 2)])
    weights = MaskedWeights(model)
    with pytest.raises(ValueError, match="does not prune"):
        weights.apply({"nope.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        weights.apply({"fc.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="no prunable weights"):
        MaskedWeights(nn.Sequential(nn.BatchNorm1d(3)))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_test_architecture_masks_and_trains(arch):
    build, shape = ARCHITECTURES[arch]
    model = build()
    weights = MaskedWeights(model)
    weights.apply(_random_keep(weights, 0.2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(shape), torch.randint(0, 5, (shape[0],))
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert all(torch.count_nonzero(t.value.detach()[~t.mask]) == 0 for t in weights)
