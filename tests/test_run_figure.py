"""Each run's picture (run.png) says what the summary says: the ratio the run pruned to, what was removed or
masked, and the run's speed by the summary's one definition — for every kind of run."""

from pathlib import Path

import pytest

from earlyprune.reports.run_figure import _ratio_text, draw_run, headline, speed_note
from earlyprune.reports.runs import Run

ROWS = [{"epoch": e, "phase": p, "seconds": 1.0 if p == "dense" else 0.5, "train_loss": 1.0, "test_accuracy": 0.5,
         "events": []} for e, p in enumerate(["dense", "pruning", "sparse", "sparse"])]


def _run(summary: dict, **config) -> Run:
    cfg = {"model": "small_cnn", "dataset": "synthetic:64", "criterion": "magnitude", "policy": "epoch:1",
           "ratio": 0.5, "epochs": 4, "target": "channels", "granularity": "channels", **config}
    return Run(Path("/tmp/x"), cfg, ROWS, {"complete": True, "pruned": True, "prune_epoch": 1,
                                            "granularity": cfg["granularity"], **summary})


def test_a_time_budget_run_shows_the_ratio_the_budget_chose():
    run = _run({"ratio": 0.7678571428571428, "time_budget": {"budget": 0.6, "ratio": 0.7678571428571428}})
    assert _ratio_text(run) == "0.768 of channels (chosen by --time-budget 0.6)"
    assert _ratio_text(_run({"ratio": 0.5})) == "0.5 of channels"


def test_the_speed_is_the_summarys_one_number_and_masking_claims_none():
    run = _run({"speedup": 1.39, "gain": {"measured_speedup": 3.27, "macs_ideal_speedup": 13.33}})
    assert speed_note(run) == "run 1.39× as fast as its dense-equivalent, per step 3.27× measured (MACs-ideal 13.33×)"
    slow = _run({"speedup": 0.5})
    assert speed_note(slow).startswith("run 2.00× slower than its dense-equivalent")
    masked = _run({"speedup": 1.26, "weight_sparsity": 0.5, "params": {"reduction": 0.0}}, granularity="weights")
    assert speed_note(masked).startswith("weights masked, not removed: no time saved")
    assert headline(masked) == "pruned during epoch 1, 50% of the weights zeroed by masks"
    assert speed_note(_run({})) == ""                     # nothing measured: nothing claimed


def test_a_run_that_did_not_prune_says_so_in_the_headline():
    run = _run({"pruned": False, "pruning": {"pruned": False, "code": "never", "reason": "policy 'never'"}})
    run.summary["pruned"] = False
    assert headline(run).startswith("NOT PRUNED")


@pytest.mark.parametrize("granularity", ["channels", "weights"])
def test_every_kind_of_run_draws(tmp_path, granularity):
    pytest.importorskip("matplotlib")
    run = _run({"speedup": 1.2, "weight_sparsity": 0.5, "params": {"reduction": 0.3}}, granularity=granularity)
    assert draw_run(run, tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"
