"""A run that removed nothing says so, and why — in summary.json, `earlyprune info` and the run's picture."""

import importlib.util
import json

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.cli import main
from earlyprune.outcome import pruning_outcome
from earlyprune.policies.base import SignalPolicy
from nets import ResidualNet

FAST = ["--model", "small_cnn", "--model-arg", "width=8", "--batch-size", "32", "--steps", "2", "--progress", "none",
        "--dataset", "synthetic:64", "--round-to", "1", "--target", "channels",   # a count: nothing timed decides
        "--channels-last", "off"]


def _train(tmp_path, name, *extra):
    assert main(["train", *FAST, "--out-dir", str(tmp_path), "--name", name, *extra]) == 0
    return json.loads((tmp_path / name / "summary.json").read_text())


def test_a_policy_that_fires_after_the_last_epoch_is_reported_as_not_pruned(tmp_path, capsys):
    # EPI fires at the end of the last epoch (the case; a fixed epoch that late is refused at start-up)
    summary = _train(tmp_path, "late", "--epochs", "2", "--policy", "epi:cap=30,min_steps=0")
    assert summary["pruned"] is False and summary["prune_epoch"] is None
    outcome = summary["pruning"]
    assert outcome["code"] == "triggered_too_late" and outcome["triggered_after_epoch"] == 1
    assert "the last one" in outcome["reason"] and "epi:cap=1" in outcome["reason"]
    capsys.readouterr()
    assert main(["info", str(tmp_path / "late")]) == 0
    info = capsys.readouterr().out
    assert "not pruned: policy EPI(tau=auto, r=5, cap=30, min_steps=0) triggered at the end of epoch 1" in info
    assert "pruned during" not in info
    # the same outcome from the library, for a fixed epoch that a loop never reaches
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, policy="epoch:2", optimizer=opt, steps=2)
    _loop(pruner, model, opt, 2)
    outcome = pruning_outcome(pruner, epochs=2)
    assert outcome.code == "triggered_too_late" and "epoch:K with K ≤ 1" in outcome.reason


def test_a_fixed_epoch_after_the_run_and_a_pruned_run(tmp_path):
    # a fixed epoch after the run is refused before training (nothing would be pruned) ...
    assert main(["train", *FAST, "--out-dir", str(tmp_path), "--name", "never", "--epochs", "2", "--policy",
                 "epoch:5"]) == 2
    assert not (tmp_path / "never" / "metrics.jsonl").exists()
    # ... and a loop that stops before it is told why
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, policy="epoch:5", optimizer=opt, steps=2)
    _loop(pruner, model, opt, 2)
    outcome = pruning_outcome(pruner, epochs=2)
    assert outcome.code == "not_triggered" and "Train at least 6 epochs" in outcome.reason
    summary = _train(tmp_path, "ok", "--epochs", "2", "--policy", "epoch:1")
    if importlib.util.find_spec("matplotlib") is not None:  # `earlyprune train` ends with the run's picture
        assert (tmp_path / "ok" / "run.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["pruned"] is True and summary["prune_epoch"] == 1 and summary["pruning"]["reason"] is None
    assert summary["pruning"]["channels_removed"] > 0 and summary["pruning"]["steps"] == 2


def _loop(pruner, model, opt, epochs, batches=2):
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    for _ in range(epochs):
        for idx in torch.arange(16).split(16 // batches):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            pruner.step()
        pruner.epoch_end()


class Patient(SignalPolicy):
    """A signal policy whose rule never fires: only its cap can."""

    name = "patient"

    def _advance(self, report):
        return 0.5, False, {}


def test_a_signal_policy_whose_cap_lies_after_the_run_names_the_cap():
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, policy=Patient(cap=30), optimizer=opt)
    _loop(pruner, model, opt, 3)
    outcome = pruning_outcome(pruner, epochs=3)
    assert not outcome.pruned and outcome.code == "not_triggered"
    assert "its cap — prune during epoch 30 at the latest — lies after the last epoch (2)" in outcome.reason
    assert "last signal 0.5" in outcome.reason and "patient:cap=1" in outcome.reason
    assert pruning_outcome(pruner, epochs=10).code == "not_yet"  # the run is not over


def test_steps_that_may_remove_nothing_are_called_blocked():
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    widest = max(ep.ChannelGroups(model, torch.randn(2, 3, 8, 8)).widths())
    with pytest.raises(ep.InfeasibleTargetError, match=f"min_channels={widest}"):  # refused at construction
        ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, policy="epoch:1", optimizer=opt, steps=2,
                       min_channels=widest)
    with pytest.warns(UserWarning, match="cannot remove"):  # without the check, the steps run and remove nothing
        pruner = ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, policy="epoch:1", optimizer=opt, steps=2,
                                min_channels=widest, checks=False)
        _loop(pruner, model, opt, 3)
    outcome = pruning_outcome(pruner, epochs=3)
    assert not outcome.pruned and outcome.code == "blocked" and outcome.steps == 2
    assert f"min_channels={widest}" in outcome.reason and "not pruned:" in outcome.describe()


def test_a_time_target_that_removed_nothing_names_its_layer_timing_cache(tmp_path):
    """Nothing "worth" removing may come from stale or edited timings: the reason names the file to delete."""
    from types import SimpleNamespace

    from earlyprune.policies import POLICIES
    from earlyprune.speed.steptime import StepTime

    cache = tmp_path / "latency.json"
    pruner = SimpleNamespace(events=[{"removed": 0}] * 3, epoch=2, history=[], policy=POLICIES.build("epoch:1"),
                             prune_epoch=1, phase="sparse", round_to=8, target="latency", min_channels=1,
                             max_group_ratio=0.8, step_time=StepTime(cache_path=str(cache)))
    outcome = pruning_outcome(pruner, epochs=2)
    assert outcome.code == "blocked" and outcome.reason.endswith(f"read from and written to {cache} — delete it "
                                                                 f"to measure them again")
    pruner.step_time = None
    assert "cache" not in pruning_outcome(pruner, epochs=2).reason
