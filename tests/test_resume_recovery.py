"""A resume never discards a valid checkpoint (issue 21): a lost pointer is rebuilt from the newest checkpoint
that verifies; a pointer replaced by a directory, or checkpoints that are all damaged, are refused, nothing
removed."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from earlyprune.cli import main

RUN = ["--model", "small_cnn", "--model-arg", "width=8", "--dataset", "synthetic:64", "--image-size", "8",
       "--epochs", "3", "--batch-size", "16", "--steps", "2", "--policy", "epoch:1", "--round-to", "1",
       "--channels-last", "off", "--precision", "fp32", "--threads", "1", "--progress", "log"]


def _train(out, name, *extra):
    return main(["train", *RUN, "--out-dir", str(out), "--name", name, *extra])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    assert _train(out, "s") == 0
    return load_file(out / "s" / "model.safetensors")


def _stopped(tmp_path):
    assert _train(tmp_path, "r", "--stop-after", "2") == 0
    run = tmp_path / "r"
    assert (run / "checkpoints" / "after-epoch-0001").is_dir()
    return run


def test_a_deleted_pointer_continues_from_the_newest_checkpoint(tmp_path, straight, capsys):
    run = _stopped(tmp_path)
    (run / "checkpoint.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--progress", "log"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint.json was missing: continuing from checkpoints/after-epoch-0001" in out
    assert "continuing with epoch 2" in out
    model = load_file(run / "model.safetensors")
    assert model.keys() == straight.keys() and all(torch.equal(model[k], straight[k]) for k in model)


def test_a_pointer_replaced_by_a_directory_is_refused_and_nothing_removed(tmp_path, capsys):
    run = _stopped(tmp_path)
    (run / "checkpoint.json").unlink()
    (run / "checkpoint.json").mkdir()
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert (run / "checkpoints" / "after-epoch-0001" / "state.json").is_file()
    shutil.rmtree(run / "checkpoint.json")    # the recovery the message names
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 0
    assert json.loads((run / "summary.json").read_text())["complete"]


def test_damaged_checkpoints_without_a_pointer_are_refused(tmp_path, capsys):
    run = _stopped(tmp_path)
    (run / "checkpoint.json").unlink()
    state = run / "checkpoints" / "after-epoch-0001" / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF
    state.write_bytes(bytes(data))
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 2
    assert "none of its checkpoints verifies" in capsys.readouterr().err
    assert state.exists()


def test_a_model_file_resealed_with_another_dtype_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file
    from torch import nn

    import earlyprune as ep
    from earlyprune.io import sealed

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    path = ep.save(net(), tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k != sealed.CHECKSUM_KEY}
    tensors = load_file(path)
    tensors["0.weight"] = tensors["0.weight"].view(torch.int32)      # the same bytes, read as integers
    save_file(tensors, str(path), metadata=metadata)
    sealed.seal(path)                                                # re-sealed: the checksum matches
    with pytest.raises(ep.StructureMismatchError, match="'0.weight' is stored as I32 .*float32"):
        ep.load(path, net())


def test_a_checkpoint_whose_checksum_was_stripped_is_refused_like_a_model_file(tmp_path, capsys):
    run = _stopped(tmp_path)
    state = run / "checkpoints" / "after-epoch-0001" / "state.json"
    doc = json.loads(state.read_text())
    del doc["sha256"]            # stripped by hand: an edit of the state could no longer be detected
    state.write_text(json.dumps(doc))
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 2
    assert "has no checksum" in capsys.readouterr().err


def test_a_deleted_environment_record_is_refused_unless_its_settings_are_accepted(tmp_path, capsys):
    run = _stopped(tmp_path)
    (run / "environment.json").unlink()
    assert main(["train", "--resume", str(run), "--progress", "none"]) == 2
    assert "environment.json is missing" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--progress", "none", "--allow-changed",
                 "threads,device,torch,data"]) == 0
    assert (run / "environment.json").is_file()
    assert json.loads((run / "summary.json").read_text())["complete"]


def test_a_run_directory_that_another_process_trains_is_refused_and_left_alone(tmp_path, capsys):
    """Two processes training one run directory would overwrite each other's checkpoints: the second is refused
    with the first's pid; once the first has ended (however it ended), the resume works."""
    import subprocess
    import sys

    run = _stopped(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from earlyprune.training.rundir import claim; claim(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(120)", str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"is being trained by another process (pid {holder.pid})" in err
        after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
        assert after == before                        # nothing in it touched
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "--resume", str(run)]) == 0   # a killed holder leaves no stale lock
