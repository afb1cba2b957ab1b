"""Criteria that score fresh batches before every pruning step (taylor, snip, …) and epochs with fewer batches than
pruning steps: told at construction when the epoch length is known, fitted when it is learned, never a crash after
the dense phase."""

import json

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.cli import main
from nets import ResidualNet


def train(pruner, model, opt, batches_per_epoch, epochs, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8 * batches_per_epoch, 3, 8, 8, generator=g), torch.randint(0, 5, (8 * batches_per_epoch,),
                                                                                    generator=g)
    for _ in range(epochs):
        for idx in torch.arange(len(y)).split(8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            pruner.step(x[idx], y[idx])
        pruner.epoch_end()


def build(**kwargs):
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, opt, ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, criterion="taylor", optimizer=opt,
                                      **kwargs)


def test_too_many_steps_for_the_epoch_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"steps=8 but an epoch has 2 batch\(es\).*'taylor'.*pass steps=2"):
        build(policy="epoch:1", steps=8, steps_per_epoch=2)
    build(policy="epoch:1", steps=2, steps_per_epoch=2)  # fits
    model = ResidualNet()  # criteria that score from the weights: at most one step per batch too
    with pytest.raises(ValueError, match=r"steps=8 but an epoch has 2 batch\(es\).*at most once per batch"):
        ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, optimizer=None, steps=8, steps_per_epoch=2)


def test_learned_epoch_length_fits_the_steps_instead_of_failing_after_the_dense_phase(caplog):
    model, opt, pruner = build(policy="epoch:1", steps=8)  # no steps_per_epoch: learned from epoch 0
    with caplog.at_level("WARNING", logger="earlyprune"):
        train(pruner, model, opt, batches_per_epoch=2, epochs=3)
    assert "steps=8 but the pruning epoch has 2 batch(es)" in caplog.text
    assert pruner.done and pruner.steps == 2 and [e["step"] for e in pruner.events] == [1, 2]
    assert [e["batch"] for e in pruner.events] == [1, 2]  # each step after a batch of its own
    outcome = ep.pruning_outcome(pruner, epochs=3)
    assert outcome.pruned and outcome.epoch == 1 and outcome.channels_removed > 0
    # the fitted schedule survives a checkpoint
    _, _, again = build(policy="epoch:1", steps=8)
    again.load_state_dict(pruner.state_dict())
    assert again.steps == 2 and again._amounts == pruner._amounts


def test_a_pruning_epoch_shorter_than_declared_still_reaches_the_target(caplog):
    model, opt, pruner = build(policy="epoch:1", steps=4, steps_per_epoch=4)
    train(pruner, model, opt, batches_per_epoch=4, epochs=1)
    with caplog.at_level("WARNING", logger="earlyprune"):
        train(pruner, model, opt, batches_per_epoch=2, epochs=1)  # 2 batches instead of 4: steps at 1, 2, then end
    assert pruner.done and [e["step"] for e in pruner.events] == [1, 2, 4]
    assert pruner.events[-1]["amount"] == 0.5 and "reuses that step's 'taylor' scores" in caplog.text
    channels = pruner.groups.baseline["channels"]
    assert pruner.groups.totals()["channels"] <= 0.5 * channels + 1e-9


def test_the_cli_fits_the_steps_into_a_short_epoch_and_says_so(tmp_path, capsys):
    argv = ["train", "--model", "small_cnn", "--model-arg", "width=8", "--dataset", "synthetic:64", "--batch-size",
            "32", "--criterion", "taylor", "--epochs", "3", "--policy", "epoch:1", "--out-dir", str(tmp_path),
            "--name", "t", "--progress", "none", "--round-to", "1", "--target", "channels"]
    # the trainer knows the epoch's length: it fits the default --steps 8 into the 2 batches and says so
    assert main([a if a != "none" else "log" for a in argv]) == 0
    out = capsys.readouterr()
    assert "--steps 8 is more than the 2 batches of an epoch" in out.out + out.err
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["pruned"] and summary["pruning"]["steps"] == 2
