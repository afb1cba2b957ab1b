"""`earlyprune train` under torchrun: 2 gloo processes on the CPU prune mid-run to the same structure and weights
on both ranks, equal (within a stated tolerance) to one process with the same global batch; only rank 0 writes;
--resume under torchrun continues, and another world size is refused with the reason."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from earlyprune.cli import main
from earlyprune.training import trainer as trainer_module

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# no BatchNorm: the result then does not depend on how a global batch is split over the ranks
RUN = ["train", "--model", "small_cnn", "--model-arg", "batchnorm=false", "--model-arg", "width=8",
       "--dataset", "synthetic:256", "--epochs", "3", "--policy", "epoch:1", "--steps", "2", "--round-to", "1",
       "--augment", "standard", "--seed", "0", "--threads", "1", "--progress", "none", "--lr", "0.05",
       "--target", "channels", "--precision", "fp32", "--channels-last", "off", "--compile", "off"]
PER_RANK, WORLD = 16, 2
#: float32 sums over 16 + 16 images (two ranks, then DDP's all-reduce) vs over 32 (one process) differ in the last
#: bits; over 3 epochs of 8 steps that stays far below this
ATOL = 1e-4


def _torchrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "earlyprune", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun")
    first = _torchrun(*RUN, "--batch-size", str(PER_RANK), "--out-dir", str(out), "--name", "ddp", "--stop-after",
                      "2", cwd=out)                                   # stops after the pruning epoch …
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun("train", "--resume", str(out / "ddp"), "--progress", "none", cwd=out)   # … and resumes
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert main([*RUN, "--batch-size", str(PER_RANK * WORLD), "--out-dir", str(out), "--name", "single"]) == 0
    return out


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def test_both_ranks_end_identical_and_pruned(runs):
    summary = _summary(runs / "ddp")
    assert summary["world_size"] == WORLD and summary["global_batch_size"] == PER_RANK * WORLD
    ranks = summary["ranks"]
    assert ranks["agree"] and len(ranks["digests"]) == WORLD and len(set(ranks["digests"])) == 1
    assert summary["complete"] and summary["prune_epoch"] == 1
    rows = [json.loads(line) for line in (runs / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]                    # one writer: no duplicated lines
    assert [r["phase"] for r in rows] == ["dense", "pruning", "sparse"]
    assert all(r["images"] == 256 for r in rows)                      # counts summed over the ranks


def test_two_ranks_equal_one_process_with_the_global_batch(runs):
    ddp, single = load_file(str(runs / "ddp" / "model.safetensors")), load_file(str(runs / "single" / "model.safetensors"))
    assert {k: v.shape for k, v in ddp.items()} == {k: v.shape for k, v in single.items()}   # same structure
    convs = [v.shape[0] for k, v in ddp.items() if k.startswith("features") and k.endswith("weight")]
    assert sum(convs) == (8 + 16 + 32) // 2                             # half of the channels pruned
    for name in ddp:
        torch.testing.assert_close(ddp[name], single[name], rtol=0, atol=ATOL, msg=name)
    a = [json.loads(line) for line in (runs / "ddp" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (runs / "single" / "metrics.jsonl").read_text().splitlines()]
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=ATOL)
        assert ra["test_accuracy"] == pytest.approx(rb["test_accuracy"], abs=1 / 256 + 1e-9)  # ≤ one image apart


def test_resume_with_another_world_size_is_refused(runs, tmp_path, capsys):
    import shutil

    shutil.copytree(runs / "ddp", tmp_path / "ddp")
    summary = tmp_path / "ddp" / "summary.json"
    summary.unlink()
    code = main(["train", "--resume", str(tmp_path / "ddp"), "--progress", "none"])
    assert code == 2
    assert "trained by 2 process(es) and is resumed by 1" in capsys.readouterr().err


def test_ranks_that_disagree_fail_the_run_after_the_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module.DataParallel, "agreement",
                        lambda self, model: {"world_size": 2, "digests": ["a", "b"], "agree": False})
    with pytest.raises(RuntimeError, match="ranks ended with different models"):
        main([*RUN, "--epochs", "1", "--policy", "never", "--batch-size", "32", "--out-dir", str(tmp_path),
              "--name", "x"])
    assert _summary(tmp_path / "x")["ranks"]["agree"] is False


def test_rank_zero_alone_prints_the_summary_and_the_time_budget_warnings(tmp_path):
    """Issue 21: under torchrun the summary came twice (each rank its own timings) and so did every --time-budget
    warning. Rank 0 alone says them, once — not also in its progress log (the default, "log" when the output is
    not a terminal); the other ranks stay silent."""
    budget = ["train", "--model", "small_cnn", "--model-arg", "batchnorm=false", "--model-arg", "width=8",
              "--dataset", "synthetic:128", "--epochs", "3", "--policy", "epoch:1", "--steps", "1", "--seed", "0",
              "--threads", "1", "--precision", "fp32", "--channels-last", "off",
              "--compile", "off", "--batch-size", "16", "--time-budget", "0.1", "--out-dir", str(tmp_path),
              "--name", "budget"]
    done = _torchrun(*budget, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    warnings = [line.split("warning: ", 1)[1] for line in lines if "warning: " in line]
    budget_warnings = [w for w in warnings if "time budget" in w]
    assert budget_warnings, "the run should warn that a 10% budget cannot be met:\n" + "\n".join(lines)
    heads = [w[:30] for w in warnings]   # a rank's copy may differ in its numbers, not in its opening words
    assert all(heads.count(h) == 1 for h in heads), "\n".join(warnings)
    for mark in ("epochs ", "training time ", "seconds per epoch ", "figure "):   # one summary block
        assert sum(line.startswith(mark) for line in lines) == 1, (mark, "\n".join(lines))
    assert sum(str(tmp_path / "budget") == line.strip() for line in lines) == 1
