"""Checkpoint and resume: 4 epochs straight == 2 epochs, then --resume for 2, bit for bit (CPU)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from earlyprune.cli import main
from earlyprune.training import statecodec
from earlyprune.training.checkpoint import load_checkpoint
from earlyprune.models import create_model

from measured import untimed


def _base(out, *extra):
    return ["train", "--model", "small_cnn", "--model-arg", "width=8", "--dataset", "synthetic:96", "--epochs", "4",
            "--batch-size", "32", "--steps", "2", "--out-dir", str(out), "--progress", "none", "--warmup-epochs", "1",
            "--precision", "fp32", *(() if "--channels-last" in extra else ("--channels-last", "off")),
            "--target", "channels", "--round-to", "1", *extra]   # nothing measured: both runs decide alike


def _metrics(run):
    return [untimed(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [
    ("--policy", "epoch:1"),  # checkpoint after the pruning epoch: the pruned model is rebuilt from its structure
    ("--policy", "epoch:2", "--channels-last", "--optimizer", "adamw", "--lr", "0.01", "--augment", "standard"),
], ids=["resume-after-pruning", "resume-right-before-pruning"])
def test_resume_gives_the_uninterrupted_result(tmp_path, extra, capsys):
    assert main(_base(tmp_path, *extra, "--name", "straight")) == 0
    assert main(_base(tmp_path, *extra, "--name", "split", "--stop-after", "2")) == 0
    assert "incomplete: continue with --resume" in capsys.readouterr().out
    assert json.loads((tmp_path / "split" / "checkpoint.json").read_text())["epoch"] == 2
    assert main(["train", "--resume", str(tmp_path / "split"), "--progress", "none"]) == 0

    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = _metrics(tmp_path / "straight"), _metrics(tmp_path / "split")
    assert len(ma) == 4 and ma == mb
    assert [r["phase"] for r in ma] == (["dense", "pruning", "sparse", "sparse"] if "epoch:1" in extra
                                        else ["dense", "dense", "pruning", "sparse"])
    sa = untimed(json.loads((tmp_path / "straight" / "summary.json").read_text()))
    sb = untimed(json.loads((tmp_path / "split" / "summary.json").read_text()))
    for key in ("final_test_accuracy", "best_test_accuracy", "prune_epoch", "params", "macs", "node_sparsity"):
        assert sa[key] == sb[key]


def test_resume_drops_metrics_of_an_epoch_without_checkpoint_and_ignores_leftover_temp_files(tmp_path):
    assert main(_base(tmp_path, "--policy", "epoch:1", "--name", "r", "--stop-after", "2")) == 0
    run = tmp_path / "r"
    with open(run / "metrics.jsonl", "a") as f:  # a run killed after logging epoch 3 but before its checkpoint
        f.write(json.dumps({"epoch": 2, "phase": "sparse"}) + "\n")
    (run / "checkpoints" / ".tmp-after-epoch-0002").mkdir()  # killed while writing the checkpoint
    (run / "checkpoints" / ".tmp-after-epoch-0002" / "model.safetensors").write_bytes(b"partial")
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["after-epoch-0003"]  # epochs 0–3 done


def test_checkpoint_holds_the_pruned_shape_and_no_pickle(tmp_path):
    assert main(_base(tmp_path, "--policy", "epoch:1", "--name", "r", "--epochs", "2")) == 0
    ckpt = tmp_path / "r" / "checkpoints" / "after-epoch-0001"
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "state.json", "state.safetensors"]
    fresh = create_model("small_cnn", width=8, in_channels=3)
    dense_params = sum(p.numel() for p in fresh.parameters())
    epochs, model, state = load_checkpoint(tmp_path / "r", fresh)
    assert epochs == 2 and sum(p.numel() for p in model.parameters()) < dense_params / 2
    assert state["pruner"]["phase"] == "sparse" and isinstance(state["rng"]["python"], tuple)


def test_damaged_or_foreign_resume_directories_are_refused(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(_base(tmp_path, "--policy", "epoch:1", "--name", "r", "--stop-after", "1")) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "r"), "--model", "resnet20"]) == 2
    err = capsys.readouterr().err.strip()
    assert "would change 1 setting(s)" in err and "model 'small_cnn' -> 'resnet20'" in err and "\n" not in err
    assert "--allow-changed model" in err
    # a run directory with a configuration but no checkpoint (stopped during epoch 0) restarts at epoch 0
    (tmp_path / "norun").mkdir()
    shutil.copy(tmp_path / "r" / "config.json", tmp_path / "norun" / "config.json")
    (tmp_path / "norun" / "metrics.jsonl").write_text('{"epoch": 0, "pha')  # torn by the kill
    assert main(["train", "--resume", str(tmp_path / "norun"), "--progress", "none"]) == 0
    assert [json.loads(x)["epoch"] for x in (tmp_path / "norun" / "metrics.jsonl").read_text().splitlines()] == \
        [0]  # the stored --stop-after 1
    assert json.loads((tmp_path / "norun" / "checkpoint.json").read_text())["epoch"] == 1
    capsys.readouterr()
    state = tmp_path / "r" / "checkpoints" / "after-epoch-0000" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:40])  # truncated
    assert main(["train", "--resume", str(tmp_path / "r")]) == 2
    assert "is damaged" in capsys.readouterr().err


def test_statecodec_round_trips_optimizer_like_state():
    state = {"state": {0: {"momentum_buffer": torch.randn(3, 2), "step": torch.tensor(4.0)}},
             "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0], "nesterov": False,
                               "initial_lr": float("inf"), "foo": None}],
             "rng": (3, tuple(range(5)), None), "__ep__": "a key that looks like a tag"}
    doc, tensors = statecodec.encode(state)
    json.dumps(doc, allow_nan=False)
    back = statecodec.decode(json.loads(json.dumps(doc)), tensors)
    assert back["param_groups"][0]["betas"] == (0.9, 0.999) and back["rng"] == (3, (0, 1, 2, 3, 4), None)
    assert list(back["state"]) == [0] and torch.equal(back["state"][0]["momentum_buffer"],
                                                      state["state"][0]["momentum_buffer"])
    assert back["param_groups"][0]["initial_lr"] == float("inf") and back["__ep__"] == state["__ep__"]
    with pytest.raises(TypeError, match="cannot store object"):
        statecodec.encode({"x": object()})
