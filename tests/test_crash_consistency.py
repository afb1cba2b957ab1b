"""Crash consistency: `earlyprune train` killed with SIGKILL at chosen points, then resumed, ends bit-identical
(weights, optimizer state, metrics) to an uninterrupted run; resumes that would change the results are refused.

The kills use the testing hook of earlyprune.training.faults (EARLYPRUNE_KILL_AT=POINT[:N]). Three scenarios run
in the default suite; the whole sweep with `-m slow`.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from earlyprune.cli import main
from earlyprune.training import faults
from earlyprune.training.checkpoint import CheckpointError, load_checkpoint
from earlyprune.models import create_model

from measured import untimed

# 3 batches per epoch; epoch 1 prunes in 2 steps (after its batches 2 and 3); round_to 1, fixed precision and
# layout, channel target: no timing decides (the reference run and the killed one would each measure their own)
RUN = ["--model", "small_cnn", "--model-arg", "width=8", "--dataset", "synthetic:96", "--epochs", "4",
       "--batch-size", "32", "--steps", "2", "--policy", "epoch:1", "--round-to", "1", "--warmup-epochs", "1",
       "--threads", "1", "--progress", "none", "--precision", "fp32", "--channels-last", "off", "--target",
       "channels"]
KILLED = -signal.SIGKILL

# each scenario: the kill point of each successive invocation (the first trains, the others --resume), then one
# last --resume that runs to the end
SCENARIOS = {
    "before-first-epoch": ["run.created"],
    "dense-epoch-before-first-checkpoint": ["train.batch:2"],
    "metrics-written-first-checkpoint-not": ["epoch.metrics:1"],
    "first-checkpoint-model-file-only": ["checkpoint.model:1"],
    "first-checkpoint-files-before-rename": ["checkpoint.files:1"],
    "first-checkpoint-renamed-no-pointer": ["checkpoint.renamed:1"],
    "first-checkpoint-pointer-temp-only": ["checkpoint.pointer-written:1"],
    "first-checkpoint-pointer-replaced": ["checkpoint.pointer:1"],
    "pruning-epoch-before-first-step": ["train.batch:4"],
    "between-pruning-steps": ["prune.step:1"],
    "after-last-pruning-step": ["prune.step:2"],
    "metrics-written-checkpoint-not": ["epoch.metrics:2"],
    "checkpoint-model-file-only": ["checkpoint.model:2"],
    "checkpoint-files-before-rename": ["checkpoint.files:2"],
    "checkpoint-renamed-pointer-old": ["checkpoint.renamed:2"],
    "checkpoint-pointer-temp-only": ["checkpoint.pointer-written:2"],
    "checkpoint-pointer-replaced-old-kept": ["checkpoint.pointer:2"],
    "sparse-epoch": ["train.batch:8"],
    "last-checkpoint-pointer-replaced": ["checkpoint.pointer:4"],
    "final-model-written-summary-not": ["finish.model"],
    "killed-again-while-resuming": ["prune.step:1", "resume.restored"],
    "killed-twice-between-pruning-steps": ["prune.step:1", "prune.step:1"],
    "killed-in-every-first-checkpoint-step": ["checkpoint.files:1", "checkpoint.renamed:1",
                                              "checkpoint.pointer-written:1", "train.batch:1"],
    "killed-before-first-epoch-then-in-it": ["run.created", "train.batch:1", "checkpoint.model:1"],
}
FAST = ("first-checkpoint-renamed-no-pointer", "between-pruning-steps", "checkpoint-pointer-temp-only")


def _cli(args, kill=None):
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if kill is not None:
        env[faults.ENV] = kill
    return subprocess.run([sys.executable, "-c", "import sys; from earlyprune.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "train", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def _result(run):
    """What must be identical: final weights, the last checkpoint's optimizer / pruner / RNG tensors, every
    metric (timings left out) and the summary's results."""
    pointer = json.loads((run / "checkpoint.json").read_text())
    summary = untimed(json.loads((run / "summary.json").read_text()))
    return {"model": load_file(run / "model.safetensors"),
            "state": load_file(run / pointer["path"] / "state.safetensors"),
            "metrics": [untimed(json.loads(x)) for x in (run / "metrics.jsonl").read_text().splitlines()],
            "summary": {k: summary[k] for k in ("final_test_accuracy", "best_test_accuracy", "prune_epoch", "params",
                                                "macs", "node_sparsity", "weight_sparsity", "epochs",
                                                "resume_changes")},
            "pointer": pointer}


def _same(a, b):
    tensors = all(a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k])
                  for k in ("model", "state"))
    return tensors and all(a[k] == b[k] for k in ("metrics", "summary", "pointer"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in this process (same code, machine and thread count as the killed ones)."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["train", *RUN, "--out-dir", str(out), "--name", "straight"]) == 0
    result = _result(out / "straight")
    assert [r["phase"] for r in result["metrics"]] == ["dense", "pruning", "sparse", "sparse"]
    assert len(result["metrics"][1]["events"]) == 2  # two pruning steps inside epoch 1
    return result


def _scenario(name, tmp_path, reference):
    run = tmp_path / "k"
    for i, kill in enumerate(SCENARIOS[name]):
        args = [*RUN, "--out-dir", str(tmp_path), "--name", "k"] if i == 0 else ["--resume", str(run)]
        proc = _cli(args, kill)
        assert proc.returncode == KILLED, f"{kill} was not reached: rc {proc.returncode}\n{proc.stderr[-2000:]}"
        if i == 0 and name == FAST[0]:  # the way out is said in one line: `train` of that name names --resume
            again = _cli([*RUN, "--out-dir", str(tmp_path), "--name", "k"])
            assert again.returncode == 2 and f"earlyprune train --resume {run}" in again.stderr
            assert again.stderr.count("\n") == 1
    proc = _cli(["--resume", str(run)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _same(_result(run), reference), f"{name}: the resumed run differs from the uninterrupted one"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["after-epoch-0003"]  # leftovers cleaned up
    assert not list(tmp_path.glob(".k.new-*"))


@pytest.mark.parametrize("name", FAST)
def test_killed_run_resumes_bit_identical(name, tmp_path, reference):
    _scenario(name, tmp_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SCENARIOS if n not in FAST])
def test_killed_run_resumes_bit_identical_full_sweep(name, tmp_path, reference):
    _scenario(name, tmp_path, reference)


def test_every_kill_point_is_exercised_and_named():
    used = {kill.partition(":")[0] for kills in SCENARIOS.values() for kill in kills}
    assert used == set(faults.POINTS)


def test_kill_hook_refuses_unknown_points(monkeypatch):
    monkeypatch.setenv(faults.ENV, "checkpoint.nowhere")
    with pytest.raises(ValueError, match="names no kill point"):
        faults.point("train.batch")
    monkeypatch.setenv(faults.ENV, "train.batch:x")
    with pytest.raises(ValueError, match="whole number"):
        faults.point("train.batch")
    monkeypatch.delenv(faults.ENV)
    faults.point("train.batch")  # unset: nothing happens


# -- what a resume may change ---------------------------------------------------------------------------------
TINY = ["train", "--model", "small_cnn", "--model-arg", "width=4", "--dataset", "synthetic:32", "--image-size", "8",
        "--epochs", "2", "--batch-size", "16", "--steps", "2", "--policy", "epoch:1", "--round-to", "1",
        "--channels-last", "off",
        "--progress", "none", "--precision", "fp32"]   # a stated precision: a resume's change of it is visible


def test_resume_refuses_changed_results_with_the_whole_list(tmp_path, capsys):
    assert main([*TINY, "--out-dir", str(tmp_path), "--name", "r", "--stop-after", "1", "--threads", "1"]) == 0
    run = tmp_path / "r"
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--threads", "2", "--batch-size", "8", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "would change 3 setting(s)" in err and "threads 1 -> 2" in err and "batch_size 16 -> 8" in err
    assert "precision 'fp32' -> 'bf16'" in err and "--allow-changed batch_size,precision,threads" in err
    assert err.count("\n") == 1
    # the data are compared by content: the same name over other images is a change too
    env = json.loads((run / "environment.json").read_text())
    assert env["environment"]["threads"] == 1 and env["environment"]["device"].startswith("cpu (")
    env["environment"]["data"] = "0" * 16
    (run / "environment.json").write_text(json.dumps(env))
    assert main(["train", "--resume", str(run), "--threads", "1"]) == 2
    assert "data '0000000000000000' ->" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--allow-changed", "nonsense"]) == 2
    assert "--allow-changed names nonsense" in capsys.readouterr().err
    assert main([*TINY, "--out-dir", str(tmp_path), "--name", "x", "--allow-changed", "threads"]) == 2
    assert "applies to --resume only" in capsys.readouterr().err


def test_allowed_changes_are_recorded_in_the_summary(tmp_path, capsys):
    assert main([*TINY, "--out-dir", str(tmp_path), "--name", "r", "--stop-after", "1", "--threads", "1"]) == 0
    run = tmp_path / "r"
    assert main(["train", "--resume", str(run), "--threads", "2", "--lr", "0.05",
                 "--allow-changed", "threads,--lr"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["environment"]["threads"] == 2
    assert summary["resume_changes"] == [{"epoch": 1, "setting": "lr", "stored": 0.1, "now": 0.05},
                                         {"epoch": 1, "setting": "threads", "stored": 1, "now": 2}]
    assert json.loads((run / "config.json").read_text())["lr"] == 0.05
    # the changed settings are now the stored ones: resuming with them again needs no flag
    assert main(["train", "--resume", str(run), "--threads", "2"]) == 0
    torch.set_num_threads(1)  # the in-process runs set it


def test_threads_are_compared_by_effect(tmp_path):
    """--threads unset resolves to torch's count: naming that same count on resume is no change."""
    assert main([*TINY, "--out-dir", str(tmp_path), "--name", "r", "--stop-after", "1"]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--threads", str(torch.get_num_threads())]) == 0


def test_a_pointer_may_only_name_a_checkpoint_inside_its_run(tmp_path, capsys):
    assert main([*TINY, "--out-dir", str(tmp_path), "--name", "r", "--stop-after", "1"]) == 0
    run = tmp_path / "r"
    pointer = json.loads((run / "checkpoint.json").read_text())
    fresh = lambda: create_model("small_cnn", width=4, in_channels=3)  # noqa: E731
    for path in ("../other/checkpoints/after-epoch-0000", "/tmp/after-epoch-0000", "checkpoints/after-epoch-0001",
                 "checkpoints/epoch-0002", "state.json"):
        (run / "checkpoint.json").write_text(json.dumps({**pointer, "path": path}))
        with pytest.raises(CheckpointError, match="may only name"):
            load_checkpoint(run, fresh())
    outside = tmp_path / "elsewhere"
    (run / "checkpoints" / "after-epoch-0000").rename(outside)
    (run / "checkpoints" / "after-epoch-0000").symlink_to(outside, target_is_directory=True)
    (run / "checkpoint.json").write_text(json.dumps(pointer))
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert "leads outside" in capsys.readouterr().err
