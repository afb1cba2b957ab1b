"""Pruning during training outside image classification (benchmarks/beyond_images.py at a tiny size): a
transformer language model, an MLP regressor with MSE, a REINFORCE policy — each pruned by channels and by
weights inside the user's own loop, with the task's own loss."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "beyond_images.py"
_spec = importlib.util.spec_from_file_location("beyond_images", _PATH)
beyond = importlib.util.module_from_spec(_spec)
sys.modules["beyond_images"] = beyond
_spec.loader.exec_module(beyond)


@pytest.mark.parametrize("task", sorted(beyond.TASKS))
@pytest.mark.parametrize("granularity", ["channels", "weights"])
def test_prunes_during_training(task, granularity):
    t = beyond.TASKS[task](tiny=True)
    out = beyond.run(t, granularity, cap=1)
    assert out["prune_epoch"] == 1                       # earlycrop's cap: dense epoch 0, pruning epoch 1
    phases = [c["phase"] for c in out["curve"]]
    assert phases[:2] == ["dense", "pruning"] and set(phases[2:]) <= {"sparse"}
    assert math.isfinite(out["final"])
    if granularity == "weights":
        assert out["weight_sparsity"] > 0.9 * t.ratio
        assert out["masked_weights_nonzero"] == 0        # pruned weights stayed exactly zero while training
        assert out["params"] == out["params_dense"]      # dense kernels: masks remove nothing
    else:
        assert out["params"] < out["params_dense"] and out["node_sparsity"] > 0


def test_markov_corpus_entropy_rate_is_below_uniform():
    seqs, entropy = beyond.markov_corpus(64, 20, vocab=24)
    assert seqs.shape == (64, 20) and 0 < entropy < math.log(24)


def test_cartpole_follows_the_classic_equations():
    env = beyond.CartPole(1, torch.Generator().manual_seed(0))
    env.reset()
    env.state = torch.zeros(1, 4)
    state, reward, done = env.step(torch.tensor([1]))
    # from rest, pushing right: ẍ = F/m_total − (m_p·l·θ̈·cos θ)/m_total,
    # θ̈ = −cos·(F/m_total)/(l·(4/3 − m_p/m_total))
    temp = 10.0 / 1.1
    theta_acc = -temp / (0.5 * (4 / 3 - 0.1 / 1.1))
    x_acc = temp - 0.05 * theta_acc / 1.1
    assert torch.allclose(state, torch.tensor([[0.0, 0.02 * x_acc, 0.0, 0.02 * theta_acc]]))
    assert reward.item() == 1.0 and not done.item()
