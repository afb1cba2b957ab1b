"""One global ranking of single weights to a target sparsity: exact counts, hand-checked choices, pruned weights
never revived, the per-tensor floor, weights removed with channels counted as gone."""

import pytest
import torch
from torch import nn

import earlyprune
from earlyprune.unstructured import MaskedWeights, mask_distance, select_weights, subnetwork_counts
from earlyprune.unstructured.criteria import MagnitudeU
from nets import ResidualNet


def _two_layers():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.9], [0.5, 0.3]]))
        model[1].weight.copy_(torch.tensor([[-0.2, 0.7]]))
    return model


def test_global_ranking_by_hand():
    """Six weights |θ| = .1 .9 .5 .3 | .2 .7: keeping half keeps .9 .7 .5 — two in layer 0, one in layer 1."""
    model = _two_layers()
    weights = MaskedWeights(model)
    plan = select_weights(weights, MagnitudeU().scores(weights), 0.5, min_weights=0)
    assert plan.keep["0.weight"].tolist() == [[False, True], [True, False]]
    assert plan.keep["1.weight"].tolist() == [[False, True]]
    assert plan.structure == [2, 1] and plan.kept == 3 and plan.sparsity == 0.5


def test_the_floor_keeps_each_tensors_best():
    model = _two_layers()
    with torch.no_grad():
        model[1].weight.mul_(0.01)  # layer 1 would lose everything at 2/3 sparsity
    weights = MaskedWeights(model)
    plan = select_weights(weights, MagnitudeU().scores(weights), 4 / 6, min_weights=1)
    assert plan.structure == [1, 1]
    assert plan.keep["1.weight"].tolist() == [[False, True]]
    with pytest.warns(UserWarning, match="min_weights"):
        select_weights(weights, MagnitudeU().scores(weights), 0.99, min_weights=1)


@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9, 0.98])
def test_exact_count_on_a_network(amount):
    weights = MaskedWeights(ResidualNet())
    plan = select_weights(weights, MagnitudeU().scores(weights), amount)
    assert plan.kept == round((1 - amount) * weights.baseline)
    assert plan.structure == [int(k.sum()) for k in plan.keep.values()]


def test_pruned_weights_are_never_revived_and_iterations_compound():
    weights = MaskedWeights(ResidualNet())
    crit = MagnitudeU()
    first = select_weights(weights, crit.scores(weights), 0.5)
    weights.apply(first.keep)
    # scores that would favour exactly the pruned weights: they must stay pruned anyway
    inverted = {t.name: (~t.mask).float() + 0.01 * torch.rand(t.shape) for t in weights}
    second = select_weights(weights, inverted, 0.8)
    assert all(not (second.keep[n] & ~first.keep[n]).any() for n in weights.names)
    assert second.kept == round(0.2 * weights.baseline)


def test_weights_removed_with_channels_count_as_gone():
    model = ResidualNet()
    x = torch.randn(2, 3, 8, 8)
    baseline = MaskedWeights(model).baseline
    earlyprune.prune(model, x, 0.5, criterion="magnitude")
    weights = MaskedWeights(model, baseline=baseline)
    plan = select_weights(weights, MagnitudeU().scores(weights), 0.9)
    assert plan.kept == round(0.1 * baseline)
    with pytest.warns(UserWarning, match="already pruned"):
        plan = select_weights(weights, MagnitudeU().scores(weights), 0.05)
    assert plan.kept == sum(t.width for t in weights)  # nothing more to prune


def test_bad_scores_are_refused():
    weights = MaskedWeights(_two_layers())
    good = MagnitudeU().scores(weights)
    with pytest.raises(ValueError, match="missing"):
        select_weights(weights, {"0.weight": good["0.weight"]}, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        select_weights(weights, {**good, "1.weight": torch.tensor([[float("nan"), 1.0]])}, 0.5)
    with pytest.raises(ValueError, match="entries"):
        select_weights(weights, {**good, "1.weight": torch.ones(3)}, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        select_weights(weights, good, 1.0)


def test_weight_level_structure_and_mask_distance():
    weights = MaskedWeights(_two_layers())
    scores = MagnitudeU().scores(weights)
    assert subnetwork_counts(weights, scores, [0.5, 0.0], min_weights=0) == {0.5: [2, 1], 0.0: [4, 2]}
    a = select_weights(weights, scores, 0.5, min_weights=0).keep
    b = {k: v.clone() for k, v in a.items()}
    b["0.weight"][0, 0] = True
    assert mask_distance(a, b) == pytest.approx(1 / 6)
    assert mask_distance(a, a) == 0.0
