"""What a default run does (issue 20): it prunes like the papers, measures nothing that decides its result, and
gives the same structure and metrics whatever the machine's load; the signals wait for training to happen; the
accuracy after the pruning epoch is the model's (BatchNorm statistics re-estimated)."""

import json
import multiprocessing
import time

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.surgery.batchnorm import recalibrate_batchnorm
from earlyprune.cli import main
from earlyprune.policies import POLICIES, EpochReport
from earlyprune.policies.earlycrop import EarlyCroP
from earlyprune.signals.measures import pruning_time_score
from earlyprune.training import TrainConfig
from earlyprune.training.speed import hardware_settings

SMALL = ["--model", "small_cnn", "--model-arg", "width=8", "--dataset", "synthetic:96", "--batch-size", "32",
         "--epochs", "3", "--policy", "epoch:1", "--steps", "2", "--progress", "none", "--threads", "1"]


def test_the_defaults_are_the_papers_and_measure_nothing():
    cfg = TrainConfig().resolved()
    assert cfg.target == "channels" and cfg.round_to == 8 and cfg.compile == "off"
    assert cfg.precision == "auto" and cfg.channels_last == "auto"
    assert cfg.policy == "epi:cap=30" and TrainConfig(epochs=30).resolved().policy == "epi:cap=10"


def test_auto_precision_and_layout_come_from_the_hardware_not_from_a_timing():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    settings = hardware_settings(conv, torch.zeros(1, 3, 8, 8), torch.device("cpu"), "auto", "auto")
    assert settings.measured == {} and settings.seconds_spent == 0.0
    assert settings.channels_last is True        # 2-D convolutions fed images
    assert settings.precision in ("fp32", "bf16")
    mlp = nn.Linear(4, 2)
    assert hardware_settings(mlp, torch.zeros(1, 4), torch.device("cpu"), "fp32", "auto").channels_last is False
    assert hardware_settings(conv, torch.zeros(1, 3, 8, 8), torch.device("cpu"), "auto", "off").channels_last is False


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def _run(tmp_path, name, *extra):
    assert main(["train", *SMALL, "--out-dir", str(tmp_path), "--name", name, *extra]) == 0
    run = tmp_path / name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    return summary, rows, json.loads((run / "structure.json").read_text())


def test_a_default_run_repeats_exactly_under_load(tmp_path):
    quiet = _run(tmp_path, "quiet")
    busy = [multiprocessing.get_context("spawn").Process(target=_spin, args=(60.0,)) for _ in range(2)]
    for p in busy:
        p.start()
    try:
        loaded = _run(tmp_path, "loaded")
    finally:
        for p in busy:
            p.terminate()
            p.join()
    (s1, rows1, struct1), (s2, rows2, struct2) = quiet, loaded
    assert s1["pruned"] and struct1 == struct2
    assert s1["params"] == s2["params"] and s1["macs"] == s2["macs"]
    for key in ("train_loss", "test_accuracy", "test_loss"):
        assert [r[key] for r in rows1] == [r[key] for r in rows2], key
    assert s1["speed_settings"]["measured"] == {} and s1["speed_settings"]["seconds_spent"] == 0.0
    assert s1["round_to"] == 8


def test_a_dense_run_with_the_time_target_builds_no_predictor():
    x = torch.randn(64, 8)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = ep.EarlyPruner(model, x[:4], 0.5, policy="never", target="latency", optimizer=opt)
    for _ in range(2):
        for i in range(0, 64, 16):
            opt.zero_grad()
            model(x[i:i + 16]).sum().backward()
            opt.step()
            pruner.step()
        pruner.epoch_end()
    assert pruner.predictor is None and pruner.history[-1]["subnetwork"] is not None


# -- the signal clock --------------------------------------------------------------------------------------------
def _report(epoch, steps, structure):
    return EpochReport(epoch, nn.Linear(1, 1), None, ratio=0.5, structure=structure, steps=steps)


def test_signal_policies_wait_for_min_steps_of_training():
    epi = POLICIES.build("epi:tau=0.5,r=1,cap=none")
    assert epi.min_steps == 1000
    same = [4, 4, 4]
    assert not epi.update(_report(0, 30, same))        # no EPI yet
    assert not epi.update(_report(1, 60, same))        # EPI = 1 ≥ τ, but 60 steps < 1000
    assert epi.signal() == 1.0
    assert epi.update(_report(2, 1000, same))          # the same signal, trained enough
    eager = POLICIES.build("epi:tau=0.5,r=1,cap=none,min_steps=0")
    eager.update(_report(0, 30, same))
    assert eager.update(_report(1, 60, same))
    # a report that does not say how many steps (a hand-made loop's) leaves the gate open
    gate = POLICIES.build("epi:tau=0.5,r=1,cap=none")
    gate.update(_report(0, None, same))
    assert gate.update(_report(1, None, same))


def test_the_cap_still_prunes_before_min_steps():
    epi = POLICIES.build("epi:cap=2")
    assert not epi.update(_report(0, 10, [4, 4]))
    decision = epi.evaluate(_report(1, 20, [4, 4]))
    assert decision.trigger and decision.reason == "cap"


def test_min_steps_is_validated():
    with pytest.raises(ep.EarlyPruneError, match="min_steps"):
        POLICIES.build("epi:min_steps=-1")


def test_the_pruner_counts_steps_and_resumes_the_count():
    x = torch.randn(32, 8)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    pruner = ep.EarlyPruner(model, x[:4], 0.5, policy="epi", optimizer=None)
    for _ in range(3):
        pruner.step()
    pruner.epoch_end()
    pruner.step()
    assert pruner.steps_taken == 4
    other = ep.EarlyPruner(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), x[:4], 0.5, policy="epi",
                           optimizer=None)
    other.load_state_dict(pruner.state_dict())
    assert other.steps_taken == 4


# -- EarlyCroP's three normalisations ---------------------------------------------------------------------------
def test_pruning_time_score_forms_by_hand():
    # Δ_t = 10, Δ_{t−1} = 8, Δ_1 = 4, ‖θ_0‖² = 100
    assert pruning_time_score("algorithm1", 10.0, 8.0, 4.0, 100.0) == pytest.approx(0.02)
    assert pruning_time_score("eq11", 10.0, 8.0, 4.0, 100.0) == pytest.approx(0.5)
    assert pruning_time_score("current", 10.0, 8.0, 4.0, 100.0) == pytest.approx(0.2)
    assert pruning_time_score("algorithm1", 8.0, 10.0, 4.0, 100.0) == pytest.approx(-0.02)   # signed, as written
    assert pruning_time_score("algorithm1", 10.0, 8.0, 4.0, 0.0) is None
    assert pruning_time_score("current", 0.0, 0.0, None, None) is None
    with pytest.raises(ValueError, match="normalisation"):
        pruning_time_score("l2", 1.0, 0.0, 1.0, 1.0)


def test_earlycrop_defaults_to_algorithm_1_and_fires_on_it():
    crop = EarlyCroP(cap=None, min_steps=0)
    assert crop.norm == "algorithm1"

    def report(epoch, delta):
        return EpochReport(epoch, nn.Linear(1, 1), None, ratio=0.5, weight_change=delta, initial_norm=100.0,
                           steps=1000)
    assert not crop.update(report(0, 60.0))      # (60 − 0) / 100 = 0.6 > 0.5
    assert crop.update(report(1, 100.0))         # (100 − 60) / 100 = 0.4 ≤ 0.5
    eq11 = EarlyCroP(cap=None, min_steps=0, norm="eq11")
    eq11.update(report(0, 60.0))
    assert not eq11.update(report(1, 100.0))     # |100 − 60| / 60 = 0.67
    with pytest.raises(ep.EarlyPruneError, match="norm"):
        POLICIES.build("earlycrop:norm=l2")


def test_compute_aware_defaults_to_the_papers_per_filter_cost():
    from earlyprune.criteria.modifiers import ComputeAware

    assert ComputeAware("snip", lam=0.05).cost == "filter"
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 2))
    groups = ep.ChannelGroups(model, torch.randn(1, 3, 8, 8))
    costs = ComputeAware("snip", lam=0.05).costs(groups)
    first = next(g.name for g in groups if groups.model[0] in [r.module for r in g.producers()])
    assert costs[first] == pytest.approx(8 * 8 * 3 * 9)     # H·W·C_in·K² of the producing filter


# -- BatchNorm statistics after removal ----------------------------------------------------------------------------
def test_recalibration_gives_the_statistics_of_the_batches_and_keeps_everything_else():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    model.eval()
    batches = [torch.randn(8, 3, 5, 5) * 2 + 1 for _ in range(3)]
    weights = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    assert recalibrate_batchnorm(model, batches) == 3
    feats = torch.cat([model[0](b) for b in batches])            # what the BatchNorm saw
    per_batch_var = torch.stack([model[0](b).var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    bn = model[1]
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, per_batch_var, atol=1e-5)   # the cumulative average of the batches'
    assert bn.momentum == 0.1 and not model.training and not bn.training
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert torch.equal(rng, torch.get_rng_state())
    assert recalibrate_batchnorm(nn.Linear(2, 2), batches) == 0
    with pytest.raises(ValueError, match="max_batches"):
        recalibrate_batchnorm(model, batches, max_batches=0)


def test_the_pruning_epoch_reports_the_accuracy_after_recalibration(tmp_path):
    summary, rows, _ = _run(tmp_path, "bn")
    record = summary["bn_recalibration"]
    assert record is not None and record["batches"] == 3      # 96 images, batch 32
    assert rows[1]["bn_recalibration"] == record and "test_accuracy_before" in record


def test_a_wait_that_outlasts_the_cap_is_said_at_the_start(tmp_path, capsys):
    argv = [a if a != "epoch:1" else "epi:cap=2" for a in SMALL]
    argv[argv.index("none")] = "log"   # --progress log
    assert main(["train", *argv, "--out-dir", str(tmp_path), "--name", "wait"]) == 0
    out = capsys.readouterr().out
    assert "waits for 1,000 optimizer steps" in out and "3 per epoch: 6 before its cap" in out
    assert "e.g. epi:cap=2,min_steps=3" in out
    assert json.loads((tmp_path / "wait" / "summary.json").read_text())["prune_epoch"] == 2


def test_the_progress_line_says_when_pruning_steps_removed_nothing():
    from earlyprune.training.loop import _epoch_line

    row = {"epoch": 1, "phase": "pruning", "train_loss": 1.0, "train_accuracy": 0.5, "test_accuracy": 0.5,
           "seconds": 1.0, "images_per_second": 10.0, "params": 100, "overhead_seconds": 0.0}
    nothing = _epoch_line({**row, "events": [{"removed": 0}] * 8}, 3)
    assert "8 pruning steps, nothing removed" in nothing and "pruned" not in nothing
    assert "pruned 2 steps" in _epoch_line({**row, "events": [{"removed": 4}, {"removed": 0}]}, 3)


def test_the_dense_equivalent_is_steady_loop_time_and_an_unpruned_run_has_no_speedup():
    from earlyprune.graph.metrics import ModelStats
    from earlyprune.training.summary import build_summary, format_summary

    def row(epoch, phase, seconds, overhead=0.0):
        return {"epoch": epoch, "phase": phase, "seconds": seconds, "pruner_seconds": 0.0,
                "overhead_seconds": overhead, "images_per_second": 1.0, "test_accuracy": 0.5}
    dense, small = ModelStats(100, 1000, 90, 10), ModelStats(40, 400, 36, 5)
    # epoch 0 carries 134 s of one-time measurements (issue 21's unpruned run that "sped up" 2.80x)
    rows = [row(0, "dense", 2.0, overhead=134.0), row(1, "dense", 2.0), row(2, "pruning", 1.5), row(3, "sparse", 1.0)]
    pruned = build_summary(rows, epochs=4, prune_epoch=2, dense=dense, final=small, peak_memory={},
                           model_bytes=None)
    assert pruned["dense_epoch_seconds"] == 2.0 and pruned["dense_equivalent_seconds"] == 8.0
    assert pruned["one_time_seconds"] == 134.0
    assert pruned["speedup"] == pytest.approx(8.0 / (136.0 + 2.0 + 1.5 + 1.0))
    unpruned = build_summary([row(0, "dense", 2.0, overhead=134.0)] + [row(i, "dense", 2.0) for i in (1, 2, 3)],
                             epochs=4, prune_epoch=None, dense=dense, final=dense, peak_memory={},
                             model_bytes=None)
    assert unpruned["speedup"] is None and unpruned["dense_equivalent_seconds"] == 8.0
    text = format_summary({**unpruned, "node_sparsity": 0.0, "weight_sparsity": 0.0})
    assert "speedup n/a: nothing pruned" in text and "one-time costs" in text


def test_threads_beyond_the_cpus_are_refused_before_any_thread_exists(tmp_path, capsys, monkeypatch):
    import os
    monkeypatch.delenv("EARLYPRUNE_ALLOW_THREADS", raising=False)
    usable = len(os.sched_getaffinity(0))
    argv = list(SMALL)
    argv[argv.index("--threads") + 1] = str(usable + 1)
    assert main(["train", *argv, "--out-dir", str(tmp_path), "--name", "t"]) == 2
    assert f"--threads {usable + 1} is more than the {usable} CPU(s)" in capsys.readouterr().err


def test_a_batch_larger_than_the_data_is_one_batch_of_all_of_it(tmp_path, capsys):
    argv = list(SMALL)
    argv[argv.index("--batch-size") + 1] = "100000"
    argv[argv.index("none")] = "log"
    assert main(["train", *argv, "--out-dir", str(tmp_path), "--name", "b"]) == 0
    assert "--batch-size 100000 is larger than the 96 training images: batches of 96" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "config.json").read_text())["batch_size"] == 96
