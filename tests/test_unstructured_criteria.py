"""Weight-level criteria against the maths: |θ|, |θ ⊙ g| = |∂L/∂c| of a per-weight mask, θ ⊙ H·g against finite
differences of the gradient; names resolve per granularity."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from earlyprune.criteria import CRITERIA, Batch
from earlyprune.unstructured import MaskedWeights
from earlyprune.unstructured.criteria import (CroPU, GraSPU, MagnitudeU, RandomU, SnipU, hessian_gradient,
                                              resolve_criterion, weight_criteria)
from nets import ResidualNet


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _batch(n=7):
    g = torch.Generator().manual_seed(1)
    return Batch(torch.randn(n, 5, generator=g).double(), torch.randint(0, 3, (n,), generator=g), F.cross_entropy)


def test_magnitude_is_the_absolute_weight():
    model = _mlp()
    scores = MagnitudeU().scores(MaskedWeights(model))
    assert torch.equal(scores["0.weight"], model[0].weight.detach().abs().float())


def test_snip_u_is_the_gradient_of_a_per_weight_mask():
    """SNIP: ∂L/∂c at c = 1 for W ⊙ c equals θ ⊙ g, read from .grad."""
    model = _mlp()
    batch = _batch()
    c = [torch.ones_like(model[i].weight, requires_grad=True) for i in (0, 2)]
    h = torch.tanh(F.linear(batch.inputs, model[0].weight * c[0], model[0].bias))
    loss = F.cross_entropy(F.linear(h, model[2].weight * c[1], model[2].bias), batch.targets)
    expected = torch.autograd.grad(loss, c)
    weights = MaskedWeights(model)
    crit = SnipU()
    batch.loss(model).backward()
    crit.observe(weights, batch)
    scores = crit.scores(weights)
    assert torch.allclose(scores["0.weight"].double(), expected[0].abs(), atol=1e-6)
    assert torch.allclose(scores["2.weight"].double(), expected[1].abs(), atol=1e-6)


def test_snip_u_without_gradients_says_what_to_do():
    weights = MaskedWeights(_mlp())
    with pytest.raises(RuntimeError, match="backward"):
        SnipU().compute(weights)


def test_hessian_gradient_matches_finite_differences():
    model = _mlp()
    batch = _batch()
    weights = MaskedWeights(model)
    params = [t.parameter for t in weights]
    hg = hessian_gradient(weights, batch)

    def grads():
        return torch.autograd.grad(batch.loss(model), params)

    g = [x.detach() for x in grads()]
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, g):
            p.add_(eps * d)
    plus = grads()
    with torch.no_grad():
        for p, d in zip(params, g):
            p.sub_(2 * eps * d)
    minus = grads()
    with torch.no_grad():
        for p, d in zip(params, g):
            p.add_(eps * d)
    for t, a, b in zip(weights, plus, minus):
        assert torch.allclose(hg[t.name], (a - b) / (2 * eps), atol=1e-6)


def test_crop_u_and_grasp_u_are_theta_times_hg():
    model = _mlp()
    batch = _batch()
    weights = MaskedWeights(model)
    hg = hessian_gradient(weights, batch)
    crop, grasp = CroPU(), GraSPU()
    crop.observe(weights, batch)
    grasp.observe(weights, batch)
    for t in weights:
        signed = (t.value.detach() * hg[t.name]).float()
        assert torch.allclose(crop.scores(weights)[t.name], signed.abs())
        assert torch.allclose(grasp.scores(weights)[t.name], signed)  # GraSP keeps the sign: removes largest −θHg


def test_crop_u_leaves_gradients_and_batchnorm_statistics_alone():
    model = ResidualNet().train()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    running = model.stem[1].running_mean.clone()
    F.cross_entropy(model(x), y).backward()
    grad = model.stem[0].weight.grad.clone()
    running_after_step = model.stem[1].running_mean.clone()
    CroPU().observe(MaskedWeights(model), Batch(x, y, F.cross_entropy))
    assert torch.equal(model.stem[0].weight.grad, grad)
    assert torch.equal(model.stem[1].running_mean, running_after_step)
    assert not torch.equal(running, running_after_step)


def test_masked_weights_score_on_the_masked_network():
    """CroPit / SNIP-it rescore the pruned network: a masked weight's θ is 0, so its score is 0."""
    model = _mlp()
    weights = MaskedWeights(model)
    keep = {t.name: torch.rand(t.shape) < 0.5 for t in weights}
    weights.apply(keep)
    crit = CroPU()
    crit.observe(weights, _batch())
    for t in weights:
        assert torch.equal(crit.scores(weights)[t.name][~keep[t.name]], torch.zeros(int((~keep[t.name]).sum())))


def test_random_u_is_seeded_and_resumable():
    weights = MaskedWeights(_mlp())
    a, b = CRITERIA.build("random-u:3"), RandomU(3)
    assert torch.equal(a.scores(weights)["0.weight"], b.scores(weights)["0.weight"])
    state = a.state_dict()
    first = a.scores(weights)["0.weight"]
    a.load_state_dict(state)
    assert torch.equal(a.scores(weights)["0.weight"], first)
    with pytest.raises(ValueError, match="integer seed"):
        CRITERIA.build("random-u:x")


def test_names_resolve_per_granularity():
    assert set(weight_criteria()) == {"crop-u", "snip-u", "grasp-u", "magnitude-u", "random-u"}
    assert isinstance(resolve_criterion("crop", "weights"), CroPU)
    assert isinstance(resolve_criterion("crop-u", "weights"), CroPU)
    assert resolve_criterion("random:4", "weights").seed == 4
    assert resolve_criterion("crop", "channels").name == "crop"
    with pytest.raises(ValueError, match="no weight-level form"):
        resolve_criterion("taylor", "weights")
    with pytest.raises(ValueError, match="granularity='weights'"):
        resolve_criterion("snip-u", "channels")
    with pytest.raises(ValueError, match="granularity"):
        resolve_criterion(CroPU(), "channels")
    with pytest.raises(ValueError, match="unknown criterion"):
        resolve_criterion("nope", "weights")
