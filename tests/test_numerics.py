"""Numerical faults: a batch whose loss or gradients are NaN / infinite is left out of the scores with a warning
that names it; a run whose loss stays non-finite stops naming the hyper-parameter, and its last good checkpoint
stays intact (and resumable)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import earlyprune as ep
from earlyprune.cli import main
from earlyprune.training import trainer as trainer_module
from earlyprune.training.numerics import PATIENCE
from loops import blobs
from nets import MLP


def _taylor_pruner(model, opt, steps_per_epoch=None):
    return ep.EarlyPruner(model, torch.randn(2, 20), 0.5, criterion="taylor", policy="never", optimizer=opt,
                          steps_per_epoch=steps_per_epoch)


def _backward(model, x, y, poison=False):
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    if poison:  # what an overflowing fp16 step or a diverging loss leaves in the gradients
        for p in model.parameters():
            p.grad.fill_(float("nan"))
        loss = loss * float("nan")
    return loss


def test_a_batch_with_nan_gradients_is_left_out_of_the_scores_and_named(caplog):
    torch.manual_seed(0)
    x, y = blobs(96)
    model, twin = MLP(), MLP()
    twin.load_state_dict(model.state_dict())
    pruner = _taylor_pruner(model, None)
    reference = _taylor_pruner(twin, None)
    batches = list(zip(x.split(32), y.split(32)))
    for i, (xb, yb) in enumerate(batches):
        loss = _backward(model, xb, yb, poison=(i == 1))
        pruner.step(loss=loss)
        if i != 1:
            _backward(twin, xb, yb)
            reference.step()
    scores = pruner.criterion.scores(pruner.groups)
    expected = reference.criterion.scores(reference.groups)
    for name in expected:                                     # the mean of the two good batches, exactly
        torch.testing.assert_close(scores[name], expected[name])
    with caplog.at_level(logging.WARNING, logger="earlyprune"):
        pruner.epoch_end()
    assert "1 batch(es) left out of the taylor scores" in caplog.text and "epoch 0, batch 1" in caplog.text
    assert "learning rate" in caplog.text and pruner.skipped_batches == 1


def test_a_nan_loss_alone_leaves_the_batch_out():
    x, y = blobs(64)
    model = MLP()
    pruner = _taylor_pruner(model, None)
    for i, (xb, yb) in enumerate(zip(x.split(32), y.split(32))):
        loss = _backward(model, xb, yb)
        pruner.step(loss=torch.tensor(float("inf")) if i == 0 else loss)
    assert pruner.criterion.observations == 1


def test_when_every_batch_is_non_finite_the_pruning_step_says_what_to_check():
    x, y = blobs(64)
    model = MLP()
    pruner = ep.EarlyPruner(model, torch.randn(2, 20), 0.5, criterion="taylor", policy="init", optimizer=None,
                            steps_per_epoch=2, steps=1)
    with pytest.raises(ep.NonFiniteError, match="lower the learning rate"):
        for xb, yb in zip(x.split(32), y.split(32)):
            pruner.step(loss=_backward(model, xb, yb, poison=True))
    assert [p.shape for p in model.parameters()] == [p.shape for p in MLP().parameters()]   # nothing removed


FAST = ["--model", "small_cnn", "--model-arg", "width=4", "--dataset", "synthetic:64", "--image-size", "8",
        "--batch-size", "8", "--epochs", "3", "--policy", "epoch:1", "--steps", "1", "--round-to", "1",
        "--channels-last", "off", "--progress", "none"]


class _NaNLoss(torch.nn.CrossEntropyLoss):
    def forward(self, input, target):  # noqa: A002 - torch's signature
        return super().forward(input, target) * float("nan")


def test_a_diverged_run_stops_naming_lr_and_keeps_its_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    assert main(["train", *FAST, "--out-dir", str(tmp_path), "--name", "r", "--stop-after", "1"]) == 0
    kept = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    monkeypatch.setattr(trainer_module.nn, "CrossEntropyLoss", _NaNLoss)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the training loss was NaN or infinite" in err and "(epoch 1" in err
    assert "--lr (now 0.1" in err and "the checkpoint after epoch 0" in err and "\n" not in err
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == kept   # untouched
    monkeypatch.undo()                                        # the cause fixed: the run resumes from it
    assert main(["train", "--resume", str(run)]) == 0
    assert "epoch   3/3" in capsys.readouterr().out or (run / "summary.json").is_file()


def test_one_nan_batch_that_poisons_the_weights_stops_the_run_at_the_epoch_end(monkeypatch):
    calls = {"n": 0}

    class _OnceNaN(torch.nn.CrossEntropyLoss):
        def forward(self, input, target):  # noqa: A002 - torch's signature
            calls["n"] += 1
            loss = super().forward(input, target)
            return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(trainer_module.nn, "CrossEntropyLoss", _OnceNaN)
    from earlyprune.training.config import TrainConfig

    cfg = TrainConfig(model="small_cnn", model_args={"width": 4}, dataset="synthetic:64", image_size=8, batch_size=8,
                      epochs=2, policy="never", progress="none", round_to=1,
                      precision="fp32", channels_last="off")   # "auto" would time steps through the patched loss
    with pytest.raises(ep.NonFiniteError, match="NaN or infinite weights after epoch 0"):  # SGD cannot recover
        trainer_module.train(cfg, write=False, log=lambda _m: None)
    assert 2 < calls["n"] < 2 + PATIENCE                  # stopped at the end of the epoch, not 20 batches on
