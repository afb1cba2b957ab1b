"""Per-epoch signals: Ψ and EPI (PaT Eq. 4–6), weight change, Early-Bird masks, rank correlations, the recorder
and what EarlyPruner records in its history."""

import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.graph.groups import ChannelGroups
from earlyprune.signals import (SIGNAL_KEYS, SignalRecorder, _count_inversions, bn_mask, kendall_tau,
                                mask_distance, spearman_rho, weight_change_score, weight_distance)
from loops import blobs, train
from nets import MLP


# -- Ψ and EPI -------------------------------------------------------------------------------------------------
def test_structure_similarity_equals_hand_computed_values():
    assert ep.structure_similarity([4, 8, 16], [4, 8, 16]) == 1.0                      # identical
    # Eq. 4: d = (2/6, 0/8, 4/8); Eq. 5: Ψ = 1 − (1/3 + 0 + 1/2)/3 = 13/18
    assert ep.structure_similarity([2, 4, 6], [4, 4, 2]) == pytest.approx(13 / 18, abs=1e-12)
    assert ep.structure_similarity([4, 4, 2], [2, 4, 6]) == pytest.approx(13 / 18, abs=1e-12)  # symmetric
    # disjoint-heavy: d = (8/10, 10/10) → Ψ = 1 − 0.9
    assert ep.structure_similarity([1, 10], [9, 0]) == pytest.approx(0.1, abs=1e-12)
    assert ep.structure_similarity([5, 0], [0, 5]) == 0.0                                # fully disjoint
    assert ep.structure_similarity([3], [1]) == pytest.approx(0.5, abs=1e-12)            # single layer: 1 − 2/4
    assert ep.structure_similarity(torch.tensor([3]), np.array([3])) == 1.0             # tensors, arrays


@pytest.mark.parametrize("n1,n2,match", [
    ([1, 2, 3], [1, 2], "same length"),
    ([0, 2], [0, 3], "layer 0 has zero channels in both"),
    ([1, -2], [1, 2], "non-negative"),
    ([], [], "non-empty"),
    ([[1, 2]], [[1, 2]], "1-D"),
    (["a"], ["b"], "numbers"),
    ([1.0, float("nan")], [1, 2], "finite"),
])
def test_structure_similarity_rejects_bad_vectors(n1, n2, match):
    with pytest.raises(ValueError, match=match):
        ep.structure_similarity(n1, n2)


def test_early_pruning_indicator_equals_hand_computed_values():
    n0, n1, n2 = [2, 4, 6], [4, 4, 2], [2, 4, 6]
    # EPI_2 = (Ψ(N2, N1) + Ψ(N2, N0)) / 2 = (13/18 + 1) / 2
    assert ep.early_pruning_indicator([n0, n1, n2], 2) == pytest.approx(31 / 36, abs=1e-12)
    assert ep.early_pruning_indicator([n0, n1, n2], 1) == pytest.approx(13 / 18, abs=1e-12)
    # only the last r + 1 structures count
    assert ep.early_pruning_indicator([[100, 1, 1], n0, n1, n2], 2) == pytest.approx(31 / 36, abs=1e-12)
    assert ep.early_pruning_indicator([[7], [7], [7]], 2) == 1.0
    assert ep.early_pruning_indicator([[3], [1]], 1) == pytest.approx(0.5)               # single layer


def test_early_pruning_indicator_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 3 structure vectors"):
        ep.early_pruning_indicator([[1, 2], [1, 2]], 2)
    with pytest.raises(ValueError, match="r must be a positive integer"):
        ep.early_pruning_indicator([[1], [1]], 0)
    with pytest.raises(ValueError, match="same length"):
        ep.early_pruning_indicator([[1, 2], [1, 2, 3]], 1)
    with pytest.raises(ValueError, match="zero channels in both"):
        ep.early_pruning_indicator([[0, 1], [0, 2]], 1)
    with pytest.raises(ValueError, match="list of structure vectors"):
        ep.early_pruning_indicator("12", 1)


# -- rank correlations -------------------------------------------------------------------------------------------
def brute_kendall_b(x, y):
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tx += 1
        elif dy == 0:
            ty += 1
        elif dx == dy:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


def brute_spearman(x, y):
    def ranks(v):
        return np.array([1 + (v < a).sum() + ((v == a).sum() - 1) / 2 for a in v])
    return float(np.corrcoef(ranks(np.asarray(x)), ranks(np.asarray(y)))[0, 1])


def test_count_inversions_matches_brute_force():
    g = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 64, 100):
        a = g.integers(0, 10, n)
        assert _count_inversions(a) == sum(a[i] > a[j] for i, j in itertools.combinations(range(n), 2))


@pytest.mark.parametrize("seed", range(4))
def test_rank_correlations_match_brute_force_with_ties(seed):
    g = np.random.default_rng(seed)
    n = 60
    x = g.integers(0, 12, n).astype(float)           # many ties
    y = x + g.integers(-3, 4, n)
    assert kendall_tau(x, y) == pytest.approx(brute_kendall_b(x, y), abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(brute_spearman(x, y), abs=1e-12)
    xf, yf = g.normal(size=n), g.normal(size=n)       # no ties
    assert kendall_tau(xf, yf) == pytest.approx(brute_kendall_b(xf, yf), abs=1e-12)
    assert spearman_rho(torch.tensor(xf), torch.tensor(yf)) == pytest.approx(brute_spearman(xf, yf), abs=1e-12)


def test_rank_correlations_edge_cases():
    a = [1.0, 2.0, 3.0, 4.0]
    assert kendall_tau(a, a) == 1.0 and spearman_rho(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, a[::-1]) == -1.0 and spearman_rho(a, a[::-1]) == pytest.approx(-1.0)
    assert kendall_tau(a, [2, 2, 2, 2]) is None and spearman_rho(a, [2, 2, 2, 2]) is None   # undefined
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        spearman_rho([1], [1])


# -- weight change, Early-Bird masks ---------------------------------------------------------------------------
def test_weight_distance_and_score():
    theta0 = [torch.zeros(2, 2), torch.zeros(3)]
    theta = [torch.full((2, 2), 1.0), torch.tensor([0.0, 2.0, 0.0])]
    assert weight_distance(theta, theta0) == pytest.approx(4 + 4)                  # ‖θ − θ_0‖² = 4·1² + 2²
    with pytest.raises(ValueError, match="no longer matches"):
        weight_distance([torch.zeros(2, 3), torch.zeros(3)], theta0)
    assert weight_change_score(2.8, 2.7, 1.0) == pytest.approx(0.1)
    assert weight_change_score(1.0, 0.0, None) is None        # no epoch has moved the weights yet
    assert weight_change_score(1.0, 0.0, 0.0) is None
    assert weight_change_score(float("nan"), 0.0, 1.0) is None


class TwoBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm1d(4), nn.BatchNorm1d(4)


def test_bn_mask_uses_one_global_quantile_and_hamming_distance():
    model = TwoBN()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([1.0, -2.0, 3.0, 4.0]))
        model.bn2.weight.copy_(torch.tensor([10.0, 20.0, -30.0, 40.0]))
    # |γ| sorted: 1 2 3 4 10 20 30 40; the ⌊8·0.5⌋ = 4 smallest are masked — all of bn1, none of bn2, where a
    # per-layer quantile would keep 2 + 2
    mask = bn_mask(model, 0.5)
    assert mask.tolist() == [False] * 4 + [True] * 4
    assert bn_mask(model, 0.3).tolist() == [False, False, True, True] + [True] * 4     # ⌊2.4⌋ = 2 masked
    assert bn_mask(model, 0.0).all()
    assert bn_mask(MLP(), 0.5) is None
    assert mask_distance(mask, torch.zeros(8, dtype=torch.bool)) == 0.5
    assert mask_distance(mask, mask) == 0.0
    with pytest.raises(ValueError, match="same size"):
        mask_distance(mask, mask[:4])


# -- the recorder and the pruner's history ----------------------------------------------------------------------
def test_recorder_records_epi_curves_and_round_trips_its_state():
    model = MLP()
    groups = ChannelGroups(model, torch.randn(2, 20))
    rec = SignalRecorder(ratios=(0.25, 0.75), r=2)
    rec.start(groups, ratio=0.5)
    g = torch.Generator().manual_seed(0)
    score_seq = [{n: torch.rand(groups[n].width, generator=g) for n in groups.names} for _ in range(5)]
    records = []
    for t, scores in enumerate(score_seq):
        if t == 2:
            twin = SignalRecorder(ratios=(0.25, 0.75), r=2)
            twin.start(groups, ratio=0.5)
            twin.load_state_dict(copy.deepcopy(rec.state_dict()))
        with torch.no_grad():
            model.net[0].weight.add_(0.1)
        records.append(rec.epoch_end(scores).record)
        if t >= 2:
            assert twin.epoch_end(scores).record == records[-1]
    assert set(records[0]) == set(SIGNAL_KEYS)
    assert set(records[0]["epi"]) == {"0.25", "0.5", "0.75"}
    assert all(v is None for v in records[0]["epi"].values()) and records[0]["kendall_tau"] is None
    structures = [ep.select(groups, s, 0.75).structure for s in score_seq]
    assert records[1]["epi"]["0.75"] == pytest.approx(ep.structure_similarity(structures[1], structures[0]))
    assert records[4]["epi"]["0.75"] == pytest.approx(ep.early_pruning_indicator(structures[2:5], 2))
    assert records[3]["kendall_tau"] == pytest.approx(
        kendall_tau(torch.cat(list(score_seq[2].values())), torch.cat(list(score_seq[3].values()))))
    # Δ_t: 32·20 weights each moved by 0.1 per epoch
    assert records[2]["weight_change"] == pytest.approx(640 * 0.3 ** 2, rel=1e-5)
    assert records[2]["weight_change_score"] == pytest.approx((0.09 - 0.04) / 0.01, rel=1e-4)
    assert records[0]["earlybird_distance"] is None                                  # MLP: no BatchNorm
    json.dumps(records, allow_nan=False)
    rec.stop()
    assert rec.state_dict()["theta0"] is None and rec.epoch_end(score_seq[0]).record["weight_change"] is None


def test_never_records_every_signal_each_epoch_and_dumps_json(tmp_path):
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = blobs(128)
    pruner = ep.EarlyPruner(model, x[:8], 0.5, policy="never", optimizer=opt)
    train(pruner, model, opt, x, y, epochs=3)
    h = pruner.history
    assert [e["phase"] for e in h] == ["dense"] * 3
    assert set(h[0]["epi"]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"}
    for key in ("epi", "kendall_tau", "spearman_rho", "weight_change"):
        assert h[2][key] is not None, key
    assert all(v is not None for v in h[2]["epi"].values())
    assert len(h[2]["subnetwork"]) == len(pruner.groups) and sum(h[2]["subnetwork"]) <= 0.5 * 56 + 1
    assert 0 < h[0]["weight_change"] < h[1]["weight_change"] < h[2]["weight_change"]
    path = tmp_path / "history.json"
    text = pruner.history_json(path)
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(text) and loaded["history"] == h and loaded["prune_epoch"] is None


def test_record_signals_off_accumulates_only_what_the_policy_needs():
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = blobs(128)
    pruner = ep.EarlyPruner(model, x[:8], 0.5, policy="never", optimizer=opt, record_signals=False)
    assert pruner.signals.state_dict()["theta0"] is None                      # no copy of θ_0 kept
    for idx in torch.arange(len(y)).split(32):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        pruner.step()
    assert pruner.criterion.observations == 0                                   # nothing accumulated
    pruner.epoch_end()
    assert all(pruner.history[0][k] is None for k in SIGNAL_KEYS if k != "epi")
    # epi still gets its structure (and accumulates) with recording off
    pruner = ep.EarlyPruner(MLP(), x[:8], 0.5, policy="epi", optimizer=None, record_signals=False)
    pruner.step()
    assert pruner.criterion.observations == 1
    pruner.epoch_end()
    assert pruner.history[0]["subnetwork"] is not None and pruner.history[0]["kendall_tau"] is None
    with pytest.raises(TypeError, match="record_signals"):
        ep.EarlyPruner(MLP(), x[:8], 0.5, optimizer=None, record_signals="yes")
