"""Speed settings chosen by measurement, the per-step gain after pruning, --compile and --time-budget — on a fake
clock (no timed assertions), plus what a real run records."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from earlyprune.core import timing
from earlyprune.cli import main
from earlyprune.training import speed
from earlyprune.training.speed import budget_fraction, budget_ratio, choose_settings, compile_decision, measure_gain, paired_steps


class FakeClock:
    """Replaces the clocks of earlyprune.core.timing: time advances only when the code under test says so."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def process_time(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)
    return fake


def test_paired_steps_reports_medians_and_the_ratio_dense_over_pruned(clock):
    t_a, t_b, ratio = paired_steps(lambda: clock.advance(2.0), lambda: clock.advance(0.5), torch.device("cpu"))
    assert (t_a, t_b, ratio) == (2.0, 0.5, 4.0)


def test_gain_is_dense_time_over_pruned_time_with_prediction_and_ideal(clock, monkeypatch):
    seconds = {}
    monkeypatch.setattr(speed, "step_seconds", lambda model, *a: (lambda: clock.advance(seconds[model.tag])))
    dense, pruned = nn.Linear(4, 4), nn.Linear(4, 2)
    dense.tag, pruned.tag = "dense", "pruned"
    seconds.update(dense=3.0, pruned=1.5)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    gain = measure_gain(dense, pruned, x, y, F.cross_entropy, None, dense_macs=100.0, pruned_macs=25.0,
                        predicted=(1.0, 0.5), target="latency", ratio=0.5)
    assert gain["measured_speedup"] == 2.0 and gain["macs_ideal_speedup"] == 4.0
    assert gain["fraction_of_ideal"] == 0.5 and gain["predicted_speedup"] == 2.0
    assert gain["asked_speedup"] == 2.0 and gain["fraction_of_asked"] == 1.0
    assert gain["prediction_error"] == pytest.approx(0.0) and gain["reasons"] == []
    seconds.update(pruned=3.0)            # not faster: say why
    slow = measure_gain(dense, pruned, x, y, F.cross_entropy, None, dense_macs=100.0, pruned_macs=90.0,
                        target="channels", round_to=1, widths=[45, 13, 7])
    assert slow["measured_speedup"] == 1.0
    assert any("low-cost channels" in r and "target='latency'" in r for r in slow["reasons"])
    assert any("multiples of 8" in r for r in slow["reasons"])


def test_choose_settings_takes_a_faster_mode_only_beyond_the_margin(clock, monkeypatch):
    per_mode = {}

    def fake_train_step(model, optimizer, inputs, targets, *, loss_fn, autocast):
        layout = "-cl" if inputs.is_contiguous(memory_format=torch.channels_last) and not inputs.is_contiguous() else ""
        name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast] + layout
        return lambda: clock.advance(per_mode[name])
    monkeypatch.setattr(timing, "train_step", fake_train_step)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 2, (4,))
    per_mode.update({"fp32": 1.0, "fp32-cl": 0.8, "bf16": 0.5, "bf16-cl": 0.4})
    chosen = choose_settings(model, x, y, F.cross_entropy, torch.device("cpu"), "auto", "auto")
    assert (chosen.precision, chosen.channels_last) == ("bf16", True)
    assert chosen.speedup == pytest.approx({"fp32": 1.0, "fp32-cl": 1.25, "bf16": 2.0, "bf16-cl": 2.5})
    per_mode.update({"bf16": 10.0, "bf16-cl": 12.0, "fp32-cl": 0.97})   # bf16 slow (AVX2 CPU), cl within noise
    chosen = choose_settings(model, x, y, F.cross_entropy, torch.device("cpu"), "auto", "auto")
    assert (chosen.precision, chosen.channels_last) == ("fp32", False)
    fixed = choose_settings(model, x, y, F.cross_entropy, torch.device("cpu"), "fp32", "off")
    assert (fixed.precision, fixed.channels_last, fixed.measured) == ("fp32", False, {})


def test_compile_off_and_too_short_runs_stay_eager(clock, monkeypatch):
    model = nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    compiled, decision = compile_decision("off", model, x, y, F.cross_entropy, None, remaining_steps=100)
    assert compiled is None and not decision.compiled
    monkeypatch.setattr(speed, "step_seconds", lambda *a: (lambda: clock.advance(0.01)))
    compiled, decision = compile_decision("auto", model, x, y, F.cross_entropy, None, remaining_steps=1000)
    assert compiled is None and "too short" in decision.reason      # 10 s of training left


def test_budget_ratio_fits_the_whole_run_into_the_budget():
    # 10 epochs, 2 dense + 1 pruning epoch → 7 sparse epochs must fit 0.5·10 − 3 = 2 dense epochs
    assert budget_ratio(0.5, 10, 2) == pytest.approx(1 - 2 / 7)
    assert budget_ratio(0.9, 10, 0) == pytest.approx(1 - 8 / 9)     # the pruning epoch counts as dense
    with pytest.raises(ValueError, match="cannot be met"):
        budget_ratio(0.3, 10, 3)


def _train(out, *extra):
    return ["train", "--model", "small_cnn", "--model-arg", "width=8", "--dataset", "synthetic:96", "--epochs", "3",
            "--batch-size", "32", "--steps", "2", "--out-dir", str(out), "--progress", "none", "--threads", "1",
            "--policy", "epoch:1", *extra]


def test_a_run_records_its_speed_settings_and_what_pruning_gained(tmp_path, monkeypatch):
    # measured on request (the default reads the hardware); widths not rounded to 8 so that a width-8 net prunes
    assert main(_train(tmp_path, "--name", "r", "--stop-after", "2", "--target", "channels", "--precision", "measure",
                       "--channels-last", "measure", "--compile", "auto", "--round-to", "1")) == 0  # surely pruned
    run = tmp_path / "r"
    chosen = json.loads((run / "speed.json").read_text())
    assert chosen["precision"] in ("fp32", "bf16") and set(chosen["measured"]) == {"fp32", "fp32-cl", "bf16",
                                                                                    "bf16-cl"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gain = rows[1]["gain"]                                           # after the pruning epoch
    assert gain["measured_speedup"] > 0 and gain["macs_ideal_speedup"] > 1
    assert rows[1]["compile"]["mode"] == "auto" and not rows[1]["compile"]["compiled"]
    assert all("cpu_seconds" in r and "overhead_seconds" in r for r in rows)

    def refuse(*a, **k):
        raise AssertionError("a resumed run must reuse its recorded speed settings")
    monkeypatch.setattr("earlyprune.training.speedup.choose_settings", refuse)
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["speed_settings"] == chosen and summary["gain"]["measured_speedup"] == gain["measured_speedup"]
    assert summary["train_cpu_seconds"] > 0 and summary["max_group_ratio"] == 0.8


@pytest.fixture
def budget_costs(monkeypatch):
    """What the epochs before the trigger cost (in dense epochs) and what timing the gain will, fixed: on the tiny
    test runs the measurements take many epochs' time, which no budget survives. Records the rows it was given."""
    from earlyprune.training import budget
    seen = {}

    def spent(rows, cpu):
        seen["rows"] = [dict(r) for r in rows]
        return seen.get("spent", len(rows))

    monkeypatch.setattr(budget, "dense_epochs_spent", spent)
    monkeypatch.setattr(budget, "_gain_epochs", lambda run, ratio: seen.get("gain", 0.0))
    return seen


def test_budget_ratio_counts_what_the_run_measured_and_will_measure():
    # 1 dense epoch that cost 1.5 (a predictor measured), the pruning epoch, 0.2 for the gain: 4 sparse epochs
    # share 0.8·6 − 1.5 − 1 − 0.2 = 2.1 dense epochs
    assert budget_ratio(0.8, 6, 1, spent=1.5, extra=0.2) == pytest.approx(1 - 2.1 / 4)
    assert budget_fraction(6, 1, 1 - 2.1 / 4, spent=1.5, extra=0.2) == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"with what the run measured so far, 4.0 dense epochs' time"):
        budget_ratio(0.5, 6, 1, spent=2.5, extra=0.5)


def test_time_budget_sets_the_ratio_when_the_policy_triggers(tmp_path, budget_costs, capsys):
    budget_costs.update(spent=1.5, gain=0.2)
    assert main(_train(tmp_path, "--name", "b", "--epochs", "6", "--time-budget", "0.8", "--precision", "fp32",
                       "--channels-last", "off", "--target", "channels", "--round-to", "1")) == 0
    assert "no choice" not in capsys.readouterr().err     # 0.475 of the channels, far from the limits' 0.8
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    # epoch:1 → 1 dense epoch (costing 1.5) + the pruning epoch + 0.2 of gain timing; 4 sparse epochs share 2.1
    assert summary["time_budget"]["ratio"] == pytest.approx(1 - 2.1 / 4)
    assert summary["ratio"] == pytest.approx(1 - 2.1 / 4)
    assert summary["time_budget"]["expected"] == pytest.approx(0.8) and summary["time_budget"]["met"] is True
    assert summary["time_budget"]["spent_before"] == 1.5 and summary["time_budget"]["gain_timing"] == 0.2
    # the cost was counted on the epoch that triggered, pruner time included
    assert [r["epoch"] for r in budget_costs["rows"]] == [0] and "pruner_cpu_seconds" in budget_costs["rows"][0]


def test_the_gain_timing_is_estimated_from_the_steps_it_will_take(tmp_path):
    from types import SimpleNamespace
    from earlyprune.training import budget
    from earlyprune.training.speed import GAIN_ROUNDS
    run = SimpleNamespace(cfg=SimpleNamespace(granularity="channels"), lottery=None, train_loader=[None] * 20)
    # a warm-up and GAIN_ROUNDS steps of the dense copy (1) and of the pruned model (1 − ratio), in epochs of 20 steps
    assert budget._gain_epochs(run, 0.75) == pytest.approx((GAIN_ROUNDS + 1) * 1.25 / 20)
    run.cfg.granularity = "weights"   # masked weights: nothing is timed
    assert budget._gain_epochs(run, 0.75) == 0.0


def test_budget_fraction_is_the_inverse_of_budget_ratio():
    assert budget_fraction(10, 2, 0.6) == pytest.approx((3 + 7 * 0.4) / 10)
    for budget, epochs, dense in [(0.5, 10, 2), (0.3, 20, 1), (0.8, 6, 1)]:
        assert budget_fraction(epochs, dense, budget_ratio(budget, epochs, dense)) == pytest.approx(budget)
    assert budget_fraction(3, 2, 0.9) == 1.0          # every epoch dense or pruning


def test_budget_spent_compares_all_training_time_with_the_runs_own_dense_epochs():
    from earlyprune.training.summary import budget_spent
    rows = [{"phase": "dense", "seconds": 20.0, "cpu_seconds": 9.0, "pruner_seconds": 5.0, "pruner_cpu_seconds": 3.0},
            {"phase": "dense", "seconds": 10.0, "cpu_seconds": 4.0},
            {"phase": "pruning", "seconds": 8.0, "cpu_seconds": 4.0, "overhead_seconds": 2.0,
             "overhead_cpu_seconds": 1.0},
            {"phase": "sparse", "seconds": 4.0, "cpu_seconds": 2.0},
            {"phase": "sparse", "seconds": 4.0, "cpu_seconds": 2.0}]
    # epoch 0 (warm-up, predictor) is left out of the reference: a dense epoch costs 4 s of CPU / 10 s of wall
    assert budget_spent(rows, cpu=True) == pytest.approx((12 + 4 + 5 + 2 + 2) / (5 * 4.0))
    assert budget_spent(rows, cpu=False) == pytest.approx((25 + 10 + 10 + 4 + 4) / (5 * 10.0))
    assert budget_spent([dict(r, phase="sparse") for r in rows], cpu=True) is None   # pruned from the start
    old = [{k: v for k, v in r.items() if "cpu" not in k} for r in rows]          # rows without CPU times
    assert budget_spent(old, cpu=True) == budget_spent(old, cpu=False)


def test_the_time_budget_is_reported_with_what_the_run_spent_also_after_a_resume(tmp_path, budget_costs):
    from earlyprune.training.summary import run_fraction
    assert main(_train(tmp_path, "--name", "tb", "--epochs", "4", "--time-budget", "0.8", "--precision", "fp32",
                       "--channels-last", "off", "--target", "channels", "--stop-after", "3")) == 0
    run = tmp_path / "tb"
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 0   # resumed after the pruning epoch
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    budget = summary["time_budget"]
    assert budget["ratio"] == pytest.approx(1 - 1.2 / 2) and budget["met"] is True   # 0.8·4 − 2 over 2 epochs
    assert budget["expected"] == pytest.approx(0.8)
    assert [bool(r.get("time_budget")) for r in rows] == [True, False, False, False]   # fitted when epoch 0 fired
    # one definition, one number: what the budget says the run spent is the inverse of the summary's speedup
    assert budget["spent"] == pytest.approx(run_fraction(rows)) and budget["spent"] > 0
    assert budget["spent"] == pytest.approx(1 / summary["speedup"])


def test_a_budget_that_cannot_be_met_prunes_as_far_as_allowed_and_warns(tmp_path, capsys):
    assert main(_train(tmp_path, "--name", "late", "--epochs", "3", "--time-budget", "0.3", "--precision", "fp32",
                       "--channels-last", "off")) == 0
    err = capsys.readouterr().err   # the warning, as one line in the errors' shape
    assert "earlyprune train: warning: a time budget of 30% cannot be met" in err
    summary = json.loads((tmp_path / "late" / "summary.json").read_text())
    # 0.95 of the step time, or less where the measured predictor says the group limit stops short of it
    assert summary["time_budget"]["met"] is False and 0 < summary["ratio"] <= 0.95
    assert summary["time_budget"]["expected"] > 0.3


def test_a_run_warning_is_printed_once_with_a_progress_log(tmp_path, capsys):
    """Issue 21: with --progress log a run's warning came twice, in the log and as the CLI's warning line."""
    assert main(_train(tmp_path, "--name", "late", "--epochs", "3", "--time-budget", "0.3", "--precision", "fp32",
                       "--channels-last", "off", "--progress", "log")) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("a time budget of 30% cannot be met") == 1


def test_a_budget_beyond_the_group_limit_of_a_count_target_is_clipped_before_the_pruning_epoch(tmp_path, capsys):
    # 0.95 of the channels is beyond max_group_ratio=0.8: it used to be refused at the first pruning step, after the
    # dense epochs had been trained
    assert main(_train(tmp_path, "--name", "count", "--epochs", "3", "--time-budget", "0.3", "--precision", "fp32",
                       "--channels-last", "off", "--target", "channels", "--round-to", "1")) == 0
    err = capsys.readouterr().err
    assert "allow at most" in err
    assert "leaves the selection no choice" in err and "100% of the most the limits allow" in err   # at the floors
    summary = json.loads((tmp_path / "count" / "summary.json").read_text())
    assert summary["time_budget"]["met"] is False and 0.5 < summary["ratio"] < 0.95
    assert summary["pruned"] is True


def test_retarget_refuses_a_count_target_the_limits_cannot_reach_or_clips_it():
    from earlyprune import EarlyPruner
    from earlyprune.core.errors import InfeasibleTargetError
    from earlyprune.planning.selection import reachable

    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.Flatten(),
                          nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    pruner = EarlyPruner(model, torch.randn(2, 3, 8, 8), ratio=0.5, policy="epoch:1", max_group_ratio=0.5,
                         optimizer=None)
    most = reachable(pruner.groups, min_channels=1, round_to=1, max_group_ratio=0.5)
    assert 0 < most < 0.9
    with pytest.raises(InfeasibleTargetError, match="at most"):
        pruner.retarget(0.9)
    assert pruner.ratio == 0.5                      # unchanged by the refusal
    assert pruner.retarget(0.9, clip=True) == pytest.approx(most) == pruner.ratio
    assert pruner.retarget(0.3) == 0.3


def test_a_phase_that_measures_says_so_before_it_starts(tmp_path, capsys, monkeypatch):
    """Measuring the speed settings or the layer times takes seconds to minutes the first time: the log says what
    is being measured before it starts, not only the result after (issue 21)."""
    from earlyprune.planning.rounding import AutoRoundTo

    seen = []

    def choose(self, *args, **kwargs):   # the measurement itself: record what the log said before it
        seen.append(capsys.readouterr().out)
        raise SystemExit(0)

    monkeypatch.setattr(AutoRoundTo, "choose", choose)
    args = _train(tmp_path, "--name", "m", "--round-to", "auto", "--channels-last", "off")
    args[args.index("--progress") + 1] = "log"
    with pytest.raises(SystemExit):
        main(args)
    assert ("--round-to auto: layer times are measured on this device when pruning starts (seconds to minutes the "
            "first time; cached for later runs)") in seen[0]
