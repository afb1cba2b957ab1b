"""`earlyprune train / models / info` end to end, and every bad input → one line, exit status 2."""

import json

import pytest
import torch

import earlyprune as ep
from earlyprune.cli import main
from earlyprune.io import structure_json
from earlyprune.models import create_model

# a count target: the default time target decides by timing, and may keep an 8-wide net whole on a busy machine
FAST = ["--model", "small_cnn", "--model-arg", "width=8", "--batch-size", "32", "--steps", "2", "--progress", "log",
        "--channels-last", "off",   # its floor of 8 channels on AVX2 CPUs would keep a width-8 net whole
        "--target", "channels"]


def test_train_on_synthetic_writes_a_complete_run_directory(tmp_path, capsys):
    argv = ["train", *FAST, "--round-to", "auto", "--dataset", "synthetic:96", "--epochs", "3", "--policy", "epoch:1",
            "--out-dir", str(tmp_path), "--name", "syn", "--label-smoothing", "0.1", "--schedule", "step", "--nesterov"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "epoch 1 (2/3) pruning" in out and "speedup" in out  # numbered from 0, then how many done
    run = tmp_path / "syn"
    assert {"config.json", "metrics.jsonl", "summary.json", "model.safetensors", "structure.json",
            "checkpoint.json", "checkpoints"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["milestones"] == [1, 2] and config["policy"] == "epoch:1" and config["label_smoothing"] == 0.1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["dense", "pruning", "sparse"]
    assert rows[1]["events"] and rows[0]["pruner"]["trigger"] is True and rows[2]["params"] < rows[0]["params"]
    for key in ("train_loss", "train_accuracy", "test_accuracy", "lr", "seconds", "images_per_second", "macs"):
        assert key in rows[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["prune_epoch"] == 1 and summary["model_bytes"] > 0
    assert 0 < summary["macs"]["reduction"] < 1 and summary["node_sparsity"] > 0.3 and summary["speedup"] > 0
    assert summary["peak_memory"]["bytes"] > 0 and summary["dense_equivalent_seconds"] > 0
    # --round-to auto: measured at the first pruning step, recorded, used by every step
    assert config["round_to"] == "auto" and summary["round_to"]["value"] >= 1 and summary["round_to"]["seconds"]
    assert {e["round_to"] for e in rows[1]["events"]} == {summary["round_to"]["value"]}

    model = ep.load(run / "model.safetensors", create_model("small_cnn", width=8, in_channels=3))
    assert sum(p.numel() for p in model.parameters()) == summary["params"]["final"]
    assert json.loads((run / "structure.json").read_text()) == structure_json(model)
    model.eval()(torch.randn(2, 3, 32, 32))

    assert main(["info", str(run)]) == 0
    info = capsys.readouterr().out
    assert "pruning                     during epoch 1 (2 steps," in info and "parameters" in info
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prune_epoch"] == 1


def test_train_on_digits_with_a_yaml_config_and_flag_precedence(tmp_path, capsys):
    pytest.importorskip("sklearn")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: small_cnn\nmodel_args: {width: 8}\ndataset: digits\nepochs: 2\nbatch-size: 64\n"
                   "policy: epoch:1\nsteps: 2\noptimizer: adam\nlr: 0.01\nprogress: none\n")
    assert main(["train", "--config", str(cfg), "--epochs", "3", "--out-dir", str(tmp_path), "--name", "d",
                 "--precision", "bf16", "--train-subset", "1000"]) == 0
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["epochs"] == 3 and config["batch_size"] == 64 and config["optimizer"] == "adam"
    assert config["precision"] == "bf16" and config["model_args"] == {"width": 8}
    rows = (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and json.loads(rows[0])["images"] == 1000
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["best_test_accuracy"] > 0.5  # digits learn fast


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet20", "resnet56", "resnet110", "resnet18", "resnet50", "vgg16", "vgg19", "mobilenet_v1",
                 "tv:<name>", "timm:<name>"):
        assert name in out


@pytest.mark.parametrize("command", [["train"], ["models"], ["info"], ["demo"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0 and "usage: earlyprune" in capsys.readouterr().out


def _error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("earlyprune") and "\n" not in err, err
    return err


@pytest.mark.parametrize("extra,message", [
    (["--model", "resnet999"], "unknown model 'resnet999'; available:"),
    (["--model", "small_cnn", "--model-arg", "depth=3"], "does not accept these arguments"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'; choose one of"),
    (["--dataset", "cifar10", "--no-download"], "cifar10 not found: expected"),
    (["--dataset", "folder:/nonexistent/x.zip"], "does not exist"),
    (["--policy", "sometimes"], "unknown policy 'sometimes'"),
    (["--criterion", "vibes"], "unknown criterion 'vibes'"),
    (["--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["--schedule", "pat", "--warmup-epochs", "5", "--epochs", "2"], "--warmup-epochs (5) must be below --epochs"),
    (["--pruner-arg", "ratio=0.3"], "duplicates a flag of its own"),
])
def test_bad_train_inputs_are_one_line_errors(tmp_path, extra, message, capsys):
    argv = ["train", "--dataset", "synthetic:64", "--epochs", "2", "--model", "small_cnn", "--progress", "none",
            "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path), "--name", "x", *extra]
    assert message in _error(argv, capsys)


@pytest.mark.parametrize("argv,message", [
    (["train", "--ratio", "1.5"], "ratio must be in (0, 1)"),
    (["train", "--ratio", "0"], "ratio must be in (0, 1)"),
    (["train", "--epochs", "0"], "whole number ≥ 1"),
    (["train", "--optimizer", "lion"], "invalid choice: 'lion'"),
    (["train", "--round-to", "fast"], "whole number ≥ 1 or auto"),
    (["train", "--round-to", "0"], "whole number ≥ 1 or auto"),
])
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_bad_config_files_and_run_dirs(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("epochz: 3\n")
    assert "unknown option(s) epochz" in _error(["train", "--config", str(tmp_path / "c.yaml")], capsys)
    (tmp_path / "c.json").write_text("{not json")
    assert "is not valid JSON" in _error(["train", "--config", str(tmp_path / "c.json")], capsys)
    (tmp_path / "r.yaml").write_text("ratio: 1.2\n")
    assert "--ratio must be in (0, 1)" in _error(["train", "--config", str(tmp_path / "r.yaml")], capsys)
    assert "not a directory" in _error(["info", str(tmp_path / "none")], capsys)
    assert "has no config.json" in _error(["info", str(tmp_path)], capsys)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    err = _error(["train", "--dataset", "synthetic", "--out-dir", str(tmp_path), "--name", "taken"], capsys)
    assert "already holds files but no run" in err and "move the files away" in err


def test_external_models_name_the_missing_package():
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        with pytest.raises(ValueError, match="needs the timm package, which is not installed: pip install timm"):
            create_model("timm:resnet18")
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ValueError, match="needs the torchvision package"):
            create_model("tv:resnet18")
    else:
        assert create_model("tv:resnet18", num_classes=7).fc.out_features == 7
    with pytest.raises(ValueError, match="tv:<name> or timm:<name>"):
        create_model("hub:x")


def test_the_random_criterion_follows_the_run_seed(tmp_path):
    from earlyprune.training import TrainConfig, train

    def structure(seed, criterion="random"):
        cfg = TrainConfig(model="small_cnn", model_args={"width": 8}, dataset="synthetic:64", epochs=1,
                          batch_size=32, policy="init", criterion=criterion, seed=seed, progress="none",
                          round_to=1, target="channels", channels_last="off")
        return train(cfg, write=False).pruner.structure()

    assert structure(1) != structure(2)                      # --seed changes the random ranking …
    assert structure(1, "random:5") == structure(2, "random:5")  # … unless the criterion names its own seed


def test_models_with_auxiliary_classifiers_train_and_prune(tmp_path):
    """A training-mode output (logits, aux) — GoogLeNet's shape — trains with the auxiliary loss weighted 0.3,
    and its auxiliary head follows pruning (the graph is traced in training mode)."""
    import torch
    from torch import nn

    from earlyprune.models import DESCRIPTIONS, MODELS, register_model
    from earlyprune.training import TrainConfig, train
    from earlyprune.training.trainer import training_loss

    class Aux(nn.Module):
        def __init__(self, num_classes=10, in_channels=3):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.head, self.aux = nn.Linear(8, num_classes), nn.Linear(8, num_classes)

        def forward(self, x):
            h = self.body(x).mean((2, 3))
            return (self.head(h), self.aux(h)) if self.training else self.head(h)

    logits, aux = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    ce = nn.functional.cross_entropy
    assert torch.allclose(training_loss((logits, aux), y, ce)[1], ce(logits, y) + 0.3 * ce(aux, y))
    register_model("aux_test_net")(Aux)
    try:
        result = train(TrainConfig(model="aux_test_net", dataset="synthetic:32", image_size=8, epochs=2,
                                   batch_size=16, steps=2, policy="epoch:1", round_to=1, progress="none",
                                   channels_last="off",
                                   target="channels",   # a time target may keep an 8-channel net whole
                                   out_dir=str(tmp_path), name="aux"))
    finally:
        MODELS.pop("aux_test_net"), DESCRIPTIONS.pop("aux_test_net")
    assert result.model.aux.in_features == result.model.head.in_features < 8


def test_eval_every_test_subset_and_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = ["train", *FAST, "--dataset", "synthetic:96", "--epochs", "5", "--policy", "epoch:3", "--eval-every", "2",
            "--test-subset", "10", "--log", "tensorboard", "--out-dir", str(tmp_path), "--name", "ev",
            "--round-to", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "96 train / 10 test images" in out and "test acc    n/a" in out
    rows = [json.loads(line) for line in (tmp_path / "ev" / "metrics.jsonl").read_text().splitlines()]
    # every 2nd epoch (1, 3), the last dense one (2: the policy fired at its end) and the last (4); not epoch 0
    assert [r["epoch"] for r in rows if r["test_accuracy"] is not None] == [1, 2, 3, 4]
    assert rows[0]["eval_seconds"] == 0.0 and rows[0]["batches"] == 3
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["final_test_accuracy"] == rows[4]["test_accuracy"]
    assert summary["dense_test_accuracy"] == rows[2]["test_accuracy"] and summary["best_epoch"] in (1, 2, 3, 4)
    events = EventAccumulator(str(tmp_path / "ev" / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("test/accuracy")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3, 4]
    assert [e.value for e in events.Scalars("pruning/phase")] == [0, 0, 0, 1, 2]
    assert max(e.value for e in events.Scalars("pruning/channels_removed")) > 0
    # flags that only change what is shown may change on --resume; an unknown logger is refused up front
    assert main(["train", *FAST, "--dataset", "synthetic:96", "--log", "nothing", "--out-dir", str(tmp_path)]) == 2
    assert "unknown logger 'nothing'; available:" in capsys.readouterr().err
