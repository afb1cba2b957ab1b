"""`earlyprune train` with weight masks, both granularities, and Lottery Ticket Rewinding: exact resumes (the
masked model's optimizer state lines up after a restart), the sparsity reached, and the disk record."""

import json

import pytest
import torch
from safetensors.torch import load_file

from earlyprune.cli import main
from earlyprune.io import load
from earlyprune.models import create_model
from earlyprune.unstructured import MaskedWeights

from measured import untimed


def _base(out, *extra):
    # two runs compared step for step: nothing chosen by measuring the machine (precision, layout, time target)
    return ["train", "--model", "small_cnn", "--model-arg", "width=8", "--dataset", "synthetic:96", "--epochs", "4",
            "--batch-size", "32", "--steps", "2", "--out-dir", str(out), "--progress", "none", "--warmup-epochs", "1",
            "--precision", "fp32", "--channels-last", "off", "--target", "channels", "--round-to", "1", *extra]


def _metrics(run):
    return [untimed(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same_run(tmp_path, *extra, stop=2):
    assert main(_base(tmp_path, *extra, "--name", "straight")) == 0
    assert main(_base(tmp_path, *extra, "--name", "split", "--stop-after", str(stop))) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--progress", "none"]) == 0
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = _metrics(tmp_path / "straight"), _metrics(tmp_path / "split")
    assert ma == mb
    return ma, json.loads((tmp_path / "straight" / "summary.json").read_text())


@pytest.mark.parametrize("extra", [
    ("--granularity", "weights", "--ratio", "0.9", "--policy", "epoch:1", "--criterion", "crop",
     "--optimizer", "adamw", "--lr", "0.01"),
    ("--granularity", "both", "--ratio", "0.3", "--weight-ratio", "0.9", "--policy", "epoch:1", "--round-to", "1"),
], ids=["weights", "both"])
def test_masked_runs_resume_exactly_and_report_disk(tmp_path, extra):
    rows, summary = _same_run(tmp_path, *extra)
    assert [r["phase"] for r in rows] == ["dense", "pruning", "sparse", "sparse"]
    assert rows[-1]["weight_sparsity"] > 0.85 and summary["granularity"] == extra[1]
    # masks save no time (no whole-run speedup from noisy epoch times); the channels "both" removes do
    assert (summary["speedup"] is None) == (extra[1] == "weights")
    disk = summary["disk"]
    assert disk["csr_bytes"] < 0.3 * disk["dense_bytes"] and disk["file_bytes"] == summary["model_bytes"]
    model = load(tmp_path / "straight" / "model.safetensors", create_model("small_cnn", width=8, in_channels=3))
    weights = MaskedWeights(model)
    assert weights.attached and all(torch.count_nonzero(t.value.detach()[~t.mask]) == 0 for t in weights)
    structure = json.loads((tmp_path / "straight" / "structure.json").read_text())
    assert structure["masks"] and (structure["history"] if extra[1] == "both" else not structure["history"])


def test_a_weight_level_run_reports_no_speedup(tmp_path, capsys):
    """Issue 21: a 3-epoch --granularity weights run printed "speedup 1.26x" from epoch times that differ by noise:
    masks on dense kernels remove nothing, so the summary says so instead of a speedup."""
    args = _base(tmp_path, "--granularity", "weights", "--ratio", "0.9", "--policy", "epoch:1", "--name", "w")
    assert main([*args[:args.index("--epochs") + 1], "3", *args[args.index("--epochs") + 2:]]) == 0
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["speedup"] is None and summary["epochs"] == 3
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("training time"))
    assert "weights masked, not removed: no speedup" in line and "x)" not in line, line


def test_the_summary_keeps_the_channel_speedup_of_granularity_both():
    from earlyprune.training.summary import format_summary

    summary = {"epochs": 3, "epochs_planned": 3, "complete": True, "prune_epoch": 1, "pruned": True,
               "final_test_accuracy": 0.5, "best_test_accuracy": 0.5, "best_epoch": 2, "dense_test_accuracy": 0.4,
               "params": {"dense": 100, "final": 50, "reduction": 0.5},
               "macs": {"dense": 100, "final": 50, "reduction": 0.5}, "node_sparsity": 0.5,
               "weight_sparsity": 0.9, "dense_epoch_seconds": 2.0, "sparse_epoch_seconds": 1.0,
               "train_seconds": 4.0, "dense_equivalent_seconds": 6.0, "speedup": 1.5, "granularity": "both"}
    assert "speedup 1.50x" in format_summary(summary)
    text = format_summary({**summary, "granularity": "weights", "speedup": None})
    assert "weights masked, not removed: no speedup" in text and "1.50x" not in text


def test_lottery_ticket_rewinding_trains_its_rounds_and_resumes_exactly(tmp_path):
    extra = ("--lottery-rounds", "2", "--lottery-rewind", "1", "--ratio", "0.75", "--epochs", "3")
    rows, summary = _same_run(tmp_path, *extra, stop=4)            # stopped inside round 1
    assert len(rows) == 3 + 2 * 2 and summary["complete"] and summary["epochs"] == 7
    assert [(r["lottery_round"], r["round_epoch"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2),
                                                                      (2, 1), (2, 2)]
    assert rows[2]["weight_sparsity"] == 0 and rows[3]["weight_sparsity"] > 0.4 and rows[-1]["weight_sparsity"] > 0.7
    assert [h["round"] for h in summary["lottery"]["history"]] == [1, 2]
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["policy"] == "never" and config["granularity"] == "weights"


def test_bad_flag_combinations(tmp_path, capsys):
    assert main(_base(tmp_path, "--granularity", "both")) == 2
    assert "--weight-ratio" in capsys.readouterr().err
    assert main(_base(tmp_path, "--lottery-rounds", "2", "--policy", "epi")) == 2
    assert "--policy never" in capsys.readouterr().err
    assert main(_base(tmp_path, "--lottery-rounds", "2", "--lottery-rewind", "4")) == 2
    assert "--lottery-rewind" in capsys.readouterr().err
    assert main(_base(tmp_path, "--granularity", "weights", "--target", "flops")) == 2
    assert "target" in capsys.readouterr().err


def test_compare_runs_lottery_ticket_rewinding_beside_weight_policies(tmp_path):
    from earlyprune.experiments import compare
    from earlyprune.reports import load_comparison
    from earlyprune.training import TrainConfig

    base = TrainConfig(model="small_cnn", model_args={"width": 4}, dataset="synthetic:32", image_size=8, epochs=2,
                       batch_size=16, eval_batch_size=64, steps=1, progress="none", out_dir=str(tmp_path),
                       name="c", granularity="weights", criterion="magnitude", round_to=1, channels_last="off")
    plan = compare(base, policies=["ltr:rounds=1", "before"], ratios=[0.8], oracle_epochs=[0], plots=False,
                   log=lambda *_: None)
    ltr = next(s for s in plan.specs if s.config.lottery_rounds == 1)
    assert ltr.config.granularity == "weights" and ltr.config.policy == "never"
    comparison = load_comparison(plan.root)
    cell = comparison.find("policy", "ltr:rounds=1", "magnitude", 0.8)
    run = cell.complete_runs[0]
    assert len(run.rows) == 2 + 1 * 1 and run.summary["weight_sparsity"] > 0.7
    assert "ltr:rounds=1" in (plan.root / "compare.md").read_text()
    with pytest.raises(ValueError, match="ltr"):
        compare(base, policies=["ltr:rounds=x"], ratios=[0.8], oracle_epochs=[0], dry_run=True, log=lambda *_: None)
