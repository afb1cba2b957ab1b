"""The bad-input catalogue: inputs a user may give by mistake, the error each must get, and the value its message
must name — through the Python API, the command line, config files, data files, saved models and checkpoints.

``tests/test_bad_inputs.py`` runs every case. ``python tests/bad_inputs.py`` writes ``docs/errors.md`` from the
same list (input → message), and a test checks that the page is current, so the page cannot drift from what
earlyprune says.

A case is a function of a scratch directory that must fail: with the exception type ``error`` (API, data, saved
files), or, for the command line, with exit status 2 and one ``earlyprune …: error:`` line. Either way the message
must contain ``names`` — the offending value, as the user wrote it.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

import earlyprune as ep  # noqa: E402
from earlyprune.io import sealed  # noqa: E402
from earlyprune.cli import main  # noqa: E402
from earlyprune.core.errors import DamagedFileError, UnknownNameError  # noqa: E402
from earlyprune.training.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from earlyprune.training.data import DataError, load_dataset  # noqa: E402
from nets import MLP, ResidualNet, cbr  # noqa: E402

KINDS = ("API", "CLI", "config", "data", "saved file", "checkpoint")
EXIT_2 = "exit status 2"


@dataclass(frozen=True)
class Case:
    kind: str                                  #: one of KINDS
    given: str                                 #: the input, as a user writes it
    run: Callable[[Path], Any]                 #: must fail, given a scratch directory
    error: type[BaseException] | str          #: the exception type, or EXIT_2 for the command line
    names: str                                 #: what the message must contain


CASES: list[Case] = []


def case(kind: str, given: str, error: type[BaseException] | str, names: str) -> Callable:
    assert kind in KINDS

    def register(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        CASES.append(Case(kind, given, fn, error, names))
        return fn
    return register


# -- helpers ---------------------------------------------------------------------------------------------------
X = torch.randn(2, 3, 8, 8)


def _pruner(model: nn.Module | None = None, inputs: Any = None, ratio: Any = 0.5, **kw: Any) -> ep.EarlyPruner:
    model = model if model is not None else ResidualNet()
    kw.setdefault("optimizer", None)
    return ep.EarlyPruner(model, X if inputs is None else inputs, ratio, **kw)


class HardCodedWidth(nn.Module):
    """A forward that reshapes with a width written in its code."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.mid, self.head = cbr(3, 8), cbr(8, 16), cbr(16, 12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.mid(self.stem(x))
        x = x.reshape(x.shape[0], 16, 8, 8)  # 16: mid's width, fixed
        return self.fc(self.head(x).mean((2, 3)))


def _train(tmp: Path, *args: str) -> int:
    return main(["train", "--model", "small_cnn", "--model-arg", "width=4", "--dataset", "synthetic:32",
                 "--image-size", "8", "--batch-size", "16", "--epochs", "2", "--policy", "epoch:1", "--steps", "1",
                 "--round-to", "1", "--channels-last", "off", "--progress", "none", "--out-dir", str(tmp), "--name", "run",
                 "--data-dir", str(tmp / "data"), *args])


def _config(tmp: Path, text: str, name: str = "run.yaml") -> int:
    (tmp / name).write_text(text)
    return main(["train", "--config", str(tmp / name), "--out-dir", str(tmp), "--progress", "none", "--model",
                 "small_cnn", "--dataset", "synthetic:32", "--image-size", "8", "--no-download"])


_SAVED: dict[str, bytes] = {}


def _saved(tmp: Path) -> Path:
    """A pruned ResidualNet saved by earlyprune.save (made once, copied per case)."""
    if "model" not in _SAVED:
        torch.manual_seed(0)
        model = ResidualNet()
        ep.prune(model, X, 0.5, steps=2)
        ep.save(model, tmp / "made.safetensors")
        _SAVED["model"] = (tmp / "made.safetensors").read_bytes()
    path = tmp / "model.safetensors"
    path.write_bytes(_SAVED["model"])
    return path


def _rewrite(path: Path, edit: Callable[[dict], Any], reseal: bool = True, raw: str | None = None) -> Path:
    """Rewrite the structure record of a saved file (resealed: the checksum then matches the edited header)."""
    header = sealed.read_header(path)
    metadata = {k: v for k, v in header.metadata.items() if k != sealed.CHECKSUM_KEY}
    doc = json.loads(metadata["earlyprune.structure"])
    edit(doc)
    metadata["earlyprune.structure"] = raw if raw is not None else json.dumps(doc)
    if not reseal:
        metadata[sealed.CHECKSUM_KEY] = header.metadata[sealed.CHECKSUM_KEY]
    save_file(load_file(str(path)), str(path), metadata=metadata)
    if reseal:
        sealed.seal(path)
    return path


def _load(path: Path, model: nn.Module | None = None) -> nn.Module:
    return ep.load(path, model if model is not None else ResidualNet())


_RUN: dict[str, Path] = {}


def _checkpointed(tmp: Path) -> Path:
    """A run directory stopped after one epoch (made once, copied per case)."""
    if "run" not in _RUN:
        base = Path(tmp.parent / "_template_run")
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        assert _train(base, "--stop-after", "1") == 0
        _RUN["run"] = base / "run"
    shutil.copytree(_RUN["run"], tmp / "run")
    return tmp / "run"


def _state(run: Path) -> Path:
    return run / "checkpoints" / "after-epoch-0000"


def _reseal_state(directory: Path, tensors: dict[str, torch.Tensor], doc: dict | None = None) -> None:
    """Write a checkpoint's state files with valid checksums (so only the content is wrong)."""
    from earlyprune.training.checkpoint import _with_checksum

    save_file(tensors, str(directory / "state.safetensors"))
    sealed.seal(directory / "state.safetensors")
    if doc is not None:
        doc = {k: v for k, v in doc.items() if k != "sha256"}
        (directory / "state.json").write_text(json.dumps(_with_checksum(doc)))


def _resume(run: Path) -> int:
    return main(["train", "--resume", str(run), "--progress", "none"])


def _flip(path: Path, offset_from_end: int = 5) -> Path:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _image_folder(tmp: Path, classes: tuple[str, ...] = ("cats", "dogs"), test: bool = True,
                  sizes: tuple[int, ...] = (8,)) -> Path:
    from PIL import Image

    root = tmp / "images"
    for split in ("train", "test") if test else ("train",):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                size = sizes[i % len(sizes)]
                Image.new("RGB", (size, size), (40 * i, 80, 120)).save(root / split / c / f"{i}.png")
    return root


def _folder(path: Path, **kw: Any) -> Any:
    return load_dataset(f"folder:{path}", cache="none", log=lambda _m: None, **kw)


# -- API ---------------------------------------------------------------------------------------------------------
case("API", "EarlyPruner(model, x, ratio=1.5)", ep.InvalidParameterError, "got 1.5")(
    lambda tmp: _pruner(ratio=1.5))
case("API", "EarlyPruner(model, x, ratio=float('nan'))", ep.InvalidParameterError, "got nan")(
    lambda tmp: _pruner(ratio=float("nan")))
case("API", "EarlyPruner(..., steps=0)", ep.InvalidParameterError, "got 0")(lambda tmp: _pruner(steps=0))
case("API", "EarlyPruner(..., steps=100000)", ep.InvalidParameterError, "got 100000")(
    lambda tmp: _pruner(steps=100_000))
case("API", "EarlyPruner(..., steps=16, steps_per_epoch=4)", ep.InvalidParameterError, "steps_per_epoch=4")(
    lambda tmp: _pruner(steps=16, steps_per_epoch=4))
case("API", "EarlyPruner(..., min_channels=1000)", ep.InfeasibleTargetError, "min_channels=1000")(
    lambda tmp: _pruner(min_channels=1000))
case("API", "EarlyPruner(..., round_to=10**9)", ep.InfeasibleTargetError, "round_to=1000000000")(
    lambda tmp: _pruner(round_to=10**9))
case("API", "EarlyPruner(..., target='energy')", ep.InvalidParameterError, "got 'energy'")(
    lambda tmp: _pruner(target="energy"))
case("API", "EarlyPruner(..., optimizer=SGD(other_model.parameters()))", ep.InvalidParameterError,
     "holds none of the model's")(
    lambda tmp: _pruner(optimizer=torch.optim.SGD(ResidualNet().parameters(), 0.1)))
case("API", "EarlyPruner(..., optimizer=SGD(model.fc.parameters()))", ep.InvalidParameterError, "stem.0.weight")(
    lambda tmp: (lambda m: _pruner(m, optimizer=torch.optim.SGD(m.fc.parameters(), 0.1)))(ResidualNet()))
case("API", "EarlyPruner(..., optimizer='sgd')", ep.InvalidParameterError, "got 'sgd'")(
    lambda tmp: _pruner(optimizer="sgd"))
case("API", "EarlyPruner(..., criterion='vibes')", ep.InvalidParameterError, "'vibes'")(
    lambda tmp: _pruner(criterion="vibes"))
case("API", "EarlyPruner(..., criterion=3)", ep.InvalidParameterError, "got 3")(lambda tmp: _pruner(criterion=3))
case("API", "EarlyPruner(..., granularity='blocks')", ep.InvalidParameterError, "got 'blocks'")(
    lambda tmp: _pruner(granularity="blocks"))
case("API", "EarlyPruner(..., granularity='both')", ep.InvalidParameterError, "weight_ratio")(
    lambda tmp: _pruner(granularity="both"))
case("API", "EarlyPruner(..., granularity='weights', target='flops')", ep.InvalidParameterError,
     "target= shapes channel pruning")(lambda tmp: _pruner(granularity="weights", target="flops"))
case("API", "EarlyPruner(..., granularity='weights', criterion='taylor')", ep.InvalidParameterError,
     "no weight-level form")(lambda tmp: _pruner(granularity="weights", criterion="taylor"))
case("API", "EarlyPruner(..., criterion='crop-u')", ep.InvalidParameterError, "granularity='weights'")(
    lambda tmp: _pruner(criterion="crop-u"))
case("API", "EarlyPruner(..., policy='epoch:-1')", ep.InvalidParameterError, "'epoch:-1'")(
    lambda tmp: _pruner(policy="epoch:-1"))
case("API", "EarlyPruner(model, 'x', 0.5)", ep.InvalidParameterError, "got 'x'")(lambda tmp: _pruner(inputs="x"))
case("API", "EarlyPruner(model, torch.full((2, 3, 8, 8), nan), 0.5)", ep.InvalidParameterError, "nan")(
    lambda tmp: _pruner(inputs=torch.full((2, 3, 8, 8), float("nan"))))
case("API", "EarlyPruner(model, torch.zeros(0, 3, 8, 8), 0.5)", ep.InvalidParameterError, "non-empty batch")(
    lambda tmp: _pruner(inputs=torch.zeros(0, 3, 8, 8)))
case("API", "EarlyPruner(..., ignored_layers=[nn.Linear(2, 2)])", ep.InvalidParameterError,
     "Linear(in_features=2, out_features=2")(lambda tmp: _pruner(ignored_layers=[nn.Linear(2, 2)]))
case("API", "EarlyPruner(..., ignored_layers=5)", ep.InvalidParameterError, "got 5")(
    lambda tmp: _pruner(ignored_layers=5))
case("API", "EarlyPruner(model whose forward reshapes to a fixed width, ...)", ep.UnprunableGroupsError,
     "ignored_layers=[model.mid[0]]")(lambda tmp: _pruner(HardCodedWidth()))
case("API", "EarlyPruner(..., loss_fn='ce')", ep.InvalidParameterError, "got 'ce'")(lambda tmp: _pruner(loss_fn="ce"))
case("API", "EarlyPruner(..., record_signals='yes')", ep.InvalidParameterError, "got 'yes'")(
    lambda tmp: _pruner(record_signals="yes"))
case("API", "EarlyPruner(..., compute_aware=-1)", ep.InvalidParameterError, "got -1")(
    lambda tmp: _pruner(compute_aware=-1))
case("API", "EarlyPruner(..., max_group_ratio=0)", ep.InvalidParameterError, "got 0")(
    lambda tmp: _pruner(max_group_ratio=0))
case("API", "EarlyPruner(..., ratio=0.9, max_group_ratio=0.5)", ep.InfeasibleTargetError, "max_group_ratio=0.5")(
    lambda tmp: _pruner(ratio=0.9, max_group_ratio=0.5))
case("API", "EarlyPruner(..., target='latency', step_time='fast')", ep.InvalidParameterError, "got 'fast'")(
    lambda tmp: _pruner(target="latency", step_time="fast"))
case("API", "StepTime(clock='gpu')", ep.InvalidParameterError, "got 'gpu'")(lambda tmp: ep.StepTime(clock="gpu"))
case("API", "select(groups, scores, 0.5, target='latency') (no predictor=)", ep.InvalidParameterError, "predictor=")(
    lambda tmp: (lambda g: ep.select(g, {n.name: torch.rand(n.width) for n in g}, 0.5, target="latency"))(
        ep.ChannelGroups(MLP(), torch.randn(2, 20))))
case("API", "EarlyPruner('resnet', x, 0.5)", ep.InvalidParameterError, "got 'resnet'")(
    lambda tmp: ep.EarlyPruner("resnet", X, 0.5, optimizer=None))
case("API", "EarlyPruner(model, x, 0.5) (no optimizer=)", ep.InvalidParameterError, "optimizer=")(
    lambda tmp: ep.EarlyPruner(ResidualNet(), X, 0.5))
case("API", "select(groups, {'net.2': scores}, 0.5) (a group's scores missing)", ep.InvalidParameterError, "'net.0'")(
    lambda tmp: (lambda g: ep.select(g, {"net.2": torch.rand(g["net.2"].width)}, 0.5))(
        ep.ChannelGroups(MLP(), torch.randn(2, 20))))
case("API", "prune(..., rescale=True, reinit=True)", ep.InvalidParameterError, "reinit")(
    lambda tmp: ep.prune(ResidualNet(), X, 0.5, rescale=True, reinit=True))
case("API", "prune(..., criterion='snip') (no batches=)", ep.InvalidParameterError, "'snip'")(
    lambda tmp: ep.prune(ResidualNet(), X, 0.5, criterion="snip"))
case("API", "prune(model, x, ratio=0)", ep.InvalidParameterError, "got 0")(lambda tmp: ep.prune(ResidualNet(), X, 0))
case("API", "prune(..., round_to='fast')", ep.InvalidParameterError, "got 'fast'")(
    lambda tmp: ep.prune(ResidualNet(), X, 0.5, round_to="fast"))
case("API", "prune(..., target='flops', min_channels=1000)", ep.InfeasibleTargetError, "min_channels=1000")(
    lambda tmp: ep.prune(ResidualNet(), X, 0.5, target="flops", min_channels=1000))
case("API", "prune(MLP(), x, 0.99, target='params')", ep.InfeasibleTargetError, "99.0% of the parameters")(
    lambda tmp: ep.prune(MLP(), torch.randn(2, 20), 0.99, target="params"))
case("API", "prune(..., reinit='yes')", ep.InvalidParameterError, "got 'yes'")(
    lambda tmp: ep.prune(ResidualNet(), X, 0.5, reinit="yes"))
case("API", "save(model, 5)", ep.InvalidParameterError, "got 5")(lambda tmp: ep.save(ResidualNet(), 5))
case("API", "save(model, path, metadata={'note': 1})", ep.InvalidParameterError, "'note'")(
    lambda tmp: ep.save(ResidualNet(), tmp / "m.safetensors", metadata={"note": 1}))
case("API", "load(path, 'resnet')", ep.InvalidParameterError, "got 'resnet'")(
    lambda tmp: ep.load(_saved(tmp), "resnet"))
case("API", "measure(model, 'x')", ep.InvalidParameterError, "got 'x'")(lambda tmp: ep.measure(ResidualNet(), "x"))
case("API", "measure(model, x, baseline={'params': 1})", ep.InvalidParameterError, "got {'params': 1}")(
    lambda tmp: ep.measure(ResidualNet(), X, baseline={"params": 1}))
case("API", "ChannelGroups(model, torch.randn(2, 5, 8, 8)) (5 channels for a 3-channel stem)",
     ep.InvalidParameterError, "[2, 5, 8, 8]")(lambda tmp: ep.ChannelGroups(ResidualNet(), torch.randn(2, 5, 8, 8)))
case("API", "select(groups, scores with NaN in group 'net.0', 0.5)", ValueError, "'net.0'")(
    lambda tmp: (lambda g: ep.select(g, {"net.0": torch.full((32,), float("nan")), "net.2": torch.rand(24)},
                                     0.5))(ep.ChannelGroups(MLP(), torch.randn(2, 20))))
case("API", "AutoRoundTo(tolerance=2)", ep.InvalidParameterError, "got 2")(lambda tmp: ep.AutoRoundTo(tolerance=2))
case("API", "POLICIES.build('epi:tau=2')", ep.InvalidParameterError, "got 2")(
    lambda tmp: ep.POLICIES.build("epi:tau=2"))
case("API", "create_model('small_cnn', width=0)", ep.InvalidParameterError, "got 0")(
    lambda tmp: __import__("earlyprune.models", fromlist=["create_model"]).create_model("small_cnn", width=0))
case("API", "ChannelGroups(model, x)['nope']", UnknownNameError, "'nope'")(
    lambda tmp: ep.ChannelGroups(ResidualNet(), X)["nope"])
case("API", "EarlyPruning(module=3) (the Lightning callback)", ep.InvalidParameterError, "got 3")(
    lambda tmp: __import__("earlyprune.integrations.lightning", fromlist=["EarlyPruning"]).EarlyPruning(module=3))
case("API", "EarlyPruningCallback(mlp_ratio=1.5) (the transformers callback)", ep.InvalidParameterError, "got 1.5")(
    lambda tmp: __import__("earlyprune.integrations.transformers",
                           fromlist=["EarlyPruningCallback"]).EarlyPruningCallback(mlp_ratio=1.5))

# -- command line ------------------------------------------------------------------------------------------------
case("CLI", "earlyprune train --lr inf", EXIT_2, "got inf")(lambda tmp: _train(tmp, "--lr", "inf"))
case("CLI", "earlyprune train --momentum nan", EXIT_2, "got nan")(lambda tmp: _train(tmp, "--momentum", "nan"))
case("CLI", "earlyprune train --ratio 1.5", EXIT_2, "got 1.5")(lambda tmp: _train(tmp, "--ratio", "1.5"))
case("CLI", "earlyprune train --epochs 0", EXIT_2, "got 0")(lambda tmp: _train(tmp, "--epochs", "0"))
case("CLI", "earlyprune train --model-arg width=0", EXIT_2, "got 0")(
    lambda tmp: _train(tmp, "--model-arg", "width=0"))
case("CLI", "earlyprune train --model-arg widht=8", EXIT_2, "widht")(
    lambda tmp: _train(tmp, "--model-arg", "widht=8"))
case("CLI", "earlyprune train --model-arg num_classes=3", EXIT_2, "num_classes")(
    lambda tmp: _train(tmp, "--model-arg", "num_classes=3"))
case("CLI", "earlyprune train --policy epoch:10 --epochs 2", EXIT_2, "epoch:10")(
    lambda tmp: _train(tmp, "--policy", "epoch:10"))
case("CLI", "earlyprune train --policy random:0-30 --epochs 2", EXIT_2, "random:0-30")(
    lambda tmp: _train(tmp, "--policy", "random:0-30"))
case("CLI", "earlyprune train --steps 100000", EXIT_2, "got 100000")(lambda tmp: _train(tmp, "--steps", "100000"))
case("CLI", "earlyprune train --min-channels 1000", EXIT_2, "min_channels=1000")(
    lambda tmp: _train(tmp, "--min-channels", "1000"))
case("CLI", "earlyprune train --round-to 0", EXIT_2, "got 0")(lambda tmp: _train(tmp, "--round-to", "0"))
case("CLI", "earlyprune train --dataset mnist", EXIT_2, "'mnist'")(lambda tmp: _train(tmp, "--dataset", "mnist"))
case("CLI", "earlyprune train --dataset synthetic:x", EXIT_2, "synthetic:x")(
    lambda tmp: _train(tmp, "--dataset", "synthetic:x"))
case("CLI", "earlyprune train --model resnet999", EXIT_2, "'resnet999'")(
    lambda tmp: _train(tmp, "--model", "resnet999"))
case("CLI", "earlyprune train --criterion vibes", EXIT_2, "'vibes'")(lambda tmp: _train(tmp, "--criterion", "vibes"))
case("CLI", "earlyprune train --pruner-arg ratio=0.3", EXIT_2, "ratio=")(
    lambda tmp: _train(tmp, "--pruner-arg", "ratio=0.3"))
case("CLI", "earlyprune train --pruner-arg compute_aware=-1", EXIT_2, "got -1")(
    lambda tmp: _train(tmp, "--pruner-arg", "compute_aware=-1"))
case("CLI", "earlyprune train --precision fp16 --device cpu", EXIT_2, "fp16")(
    lambda tmp: _train(tmp, "--precision", "fp16", "--device", "cpu"))
case("CLI", "earlyprune train --precision fast", EXIT_2, "'fast'")(lambda tmp: _train(tmp, "--precision", "fast"))
case("CLI", "earlyprune train --channels-last sometimes", EXIT_2, "'sometimes'")(
    lambda tmp: _train(tmp, "--channels-last", "sometimes"))
case("CLI", "earlyprune train --compile always", EXIT_2, "'always'")(lambda tmp: _train(tmp, "--compile", "always"))
case("CLI", "earlyprune train --target time", EXIT_2, "'time'")(lambda tmp: _train(tmp, "--target", "time"))
case("CLI", "earlyprune train --max-group-ratio 1.5", EXIT_2, "got 1.5")(
    lambda tmp: _train(tmp, "--max-group-ratio", "1.5"))
case("CLI", "earlyprune train --time-budget 1", EXIT_2, "got 1")(lambda tmp: _train(tmp, "--time-budget", "1"))
case("CLI", "earlyprune train --momentum 5", EXIT_2, "got 5")(lambda tmp: _train(tmp, "--momentum", "5"))
case("CLI", "earlyprune train --out-dir /proc/earlyprune-x", EXIT_2, "--out-dir /proc/earlyprune-x: cannot create it")(
    lambda tmp: main(["train", "--model", "small_cnn", "--dataset", "synthetic:32", "--image-size", "8",
                      "--epochs", "1", "--policy", "never", "--progress", "none", "--out-dir", "/proc/earlyprune-x"]))
case("CLI", "earlyprune train --time-budget 0.5 --policy never", EXIT_2, "--policy never trains dense")(
    lambda tmp: _train(tmp, "--time-budget", "0.5", "--policy", "never"))
case("CLI", "earlyprune train --time-budget 0.5 --granularity weights", EXIT_2, "same dense kernels")(
    lambda tmp: _train(tmp, "--time-budget", "0.5", "--granularity", "weights"))
case("CLI", "earlyprune train --name a/b", EXIT_2, "'a/b'")(lambda tmp: _train(tmp, "--name", "a/b"))
case("CLI", "earlyprune train --batch-size 0", EXIT_2, "got 0")(lambda tmp: _train(tmp, "--batch-size", "0"))
case("CLI", "earlyprune train --label-smoothing 1", EXIT_2, "got 1")(
    lambda tmp: _train(tmp, "--label-smoothing", "1"))
case("CLI", "earlyprune train --image-size 0", EXIT_2, "got 0")(lambda tmp: _train(tmp, "--image-size", "0"))
case("CLI", "earlyprune train --resume RUN --config run.yaml", EXIT_2, "--config")(
    lambda tmp: main(["train", "--resume", str(tmp), "--config", str(tmp / "run.yaml")]))
case("CLI", "earlyprune train --resume DIR (no such directory)", EXIT_2, "nowhere")(
    lambda tmp: main(["train", "--resume", str(tmp / "nowhere")]))

# -- config files ------------------------------------------------------------------------------------------------
case("config", "run.yaml: learning_rate: 0.1 (unknown key)", EXIT_2, "learning_rate")(
    lambda tmp: _config(tmp, "learning_rate: 0.1\n"))
case("config", "run.yaml: lr: .inf", EXIT_2, "got inf")(lambda tmp: _config(tmp, "lr: .inf\n"))
case("config", "run.yaml: channels_last: 'false'", EXIT_2, "got 'false'")(
    lambda tmp: _config(tmp, "channels_last: 'false'\n"))
case("config", "run.yaml: epochs: '10'", EXIT_2, "got '10'")(lambda tmp: _config(tmp, "epochs: '10'\n"))
case("config", "run.yaml: resume: runs/r56", EXIT_2, "'resume'")(lambda tmp: _config(tmp, "resume: runs/r56\n"))
case("config", "run.yaml: - lr: 0.1 (a list)", EXIT_2, "got list")(lambda tmp: _config(tmp, "- lr: 0.1\n"))
case("config", "run.yaml: epochs: [1 (not YAML)", EXIT_2, "not valid YAML")(
    lambda tmp: _config(tmp, "epochs: [1\n"))
case("config", "run.yaml: model_args: 5", EXIT_2, "got 5")(lambda tmp: _config(tmp, "model_args: 5\n"))
case("config", "run.yaml: milestones: [0]", EXIT_2, "got [0]")(lambda tmp: _config(tmp, "milestones: [0]\n"))
case("config", "run.yaml: momentum: -0.9", EXIT_2, "got -0.9")(lambda tmp: _config(tmp, "momentum: -0.9\n"))
case("config", "run.json: {epochs: 3} (not JSON)", EXIT_2, "not valid JSON")(
    lambda tmp: _config(tmp, "{epochs: 3}", "run.json"))
case("config", "--config missing.yaml", EXIT_2, "missing.yaml")(
    lambda tmp: main(["train", "--config", str(tmp / "missing.yaml")]))

# -- data files --------------------------------------------------------------------------------------------------
case("data", "folder dataset with one class (train/cats/)", DataError, "cats")(
    lambda tmp: _folder(_image_folder(tmp, classes=("cats",))))


@case("data", "folder dataset with a corrupt image train/dogs/1.png", DataError, "train/dogs/1.png")
def _corrupt_image(tmp: Path) -> Any:
    root = _image_folder(tmp)
    (root / "train" / "dogs" / "1.png").write_bytes(b"\x89PNG not really")
    return _folder(root)


case("data", "folder dataset without test/ or val/", DataError, "neither test/ nor val/")(
    lambda tmp: _folder(_image_folder(tmp, test=False)))
case("data", "folder:<missing directory>", DataError, "nowhere")(lambda tmp: _folder(tmp / "nowhere"))
case("data", "folder dataset of 8x8 and 9x9 images, no --image-size", DataError, "--image-size")(
    lambda tmp: _folder(_image_folder(tmp, sizes=(8, 9))))


@case("data", "folder:data.zip, truncated", DataError, "data.zip")
def _truncated_zip(tmp: Path) -> Any:
    root = _image_folder(tmp)
    with zipfile.ZipFile(tmp / "data.zip", "w") as zf:
        for p in root.rglob("*.png"):
            zf.write(p, p.relative_to(root).as_posix())
    (tmp / "data.zip").write_bytes((tmp / "data.zip").read_bytes()[:100])
    return _folder(tmp / "data.zip")


class _Payload:
    def __reduce__(self):  # noqa: ANN204 - what a hostile pickle asks for
        return (print, ("executed",))


@case("data", "cifar10 data_batch_1 replaced by a pickle that calls a function", DataError, "data_batch_1")
def _hostile_cifar(tmp: Path) -> Any:
    folder = tmp / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _Payload()}))
    return load_dataset("cifar10", data_dir=str(tmp / "data"), download=False, log=lambda _m: None)


case("data", "earlyprune train --dataset synthetic:1", EXIT_2, "got 1")(
    lambda tmp: _train(tmp, "--dataset", "synthetic:1"))

# -- saved files -------------------------------------------------------------------------------------------------
case("saved file", "load(): structure record edited, checksum not updated", DamagedFileError, "metadata")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d["history"].pop(), reseal=False)))
case("saved file", "load(): a byte of the tensor data flipped", DamagedFileError, "tensor data")(
    lambda tmp: _load(_flip(_saved(tmp))))
case("saved file", "load(): file truncated to half", DamagedFileError, "model.safetensors")(
    lambda tmp: _load((lambda p: (p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), p)[1])(_saved(tmp))))
case("saved file", "load(): structure record not JSON", DamagedFileError, "not JSON")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: None, raw="{not json")))
case("saved file", "load(): history names layer 'b1.99'", ep.StructureMismatchError, "'b1.99'")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d["history"].insert(0, ["b1.99", True, [0]]))))
case("saved file", "load(): a history of 50,000 entries", ep.StructureMismatchError, "50000 entries")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d.update(history=[["stem.0", True, [0]]] * 50_000))))
case("saved file", "load(): history removes channel 99 of an 8-channel layer", ep.StructureMismatchError, "[99]")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d["history"].insert(0, ["stem.0", True, [99]]))))
case("saved file", "load(): example inputs of 1.2 TB", ep.StructureMismatchError, "300,000,000,000 elements")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d.update(
        example_inputs={"tensor": [100_000, 3, 1000, 1000], "dtype": "float32"}))))
case("saved file", "load(): example inputs of dtype 'save'", ep.StructureMismatchError, "'save'")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d.update(example_inputs={"tensor": [2, 3], "dtype": "save"}))))
case("saved file", "load(): structure version 99", ep.StructureMismatchError, "version 99")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d.update(version=99))))
case("saved file", "load(): 'final' shapes larger than the original", ep.StructureMismatchError, "stem.0.weight")(
    lambda tmp: _load(_rewrite(_saved(tmp), lambda d: d["final"][0].__setitem__(1, [999, 3, 3, 3]))))
case("saved file", "load(file, MLP()) (another architecture)", ep.StructureMismatchError, "different architecture")(
    lambda tmp: _load(_saved(tmp), MLP()))


@case("saved file", "save() onto a directory", ep.InvalidParameterError, "is a directory")
def _save_onto_directory(tmp: Path) -> Any:
    (tmp / "adir").mkdir()
    try:
        return ep.save(MLP(), tmp / "adir")
    finally:
        assert not (tmp / ".adir.tmp").exists(), "save() left its temporary file"


@case("checkpoint", "--resume: metrics.jsonl made binary", EXIT_2, "metrics.jsonl is not text")
def _binary_metrics(tmp: Path) -> int:
    assert _train(tmp, "--stop-after", "1") == 0
    (tmp / "run" / "metrics.jsonl").write_bytes(b"\xff\xfe\x00binary")
    return main(["train", "--resume", str(tmp / "run"), "--progress", "none"])


@case("saved file", "load(): a plain safetensors file (no structure)", ep.StructureMismatchError,
      "no earlyprune structure")
def _plain(tmp: Path) -> Any:
    save_file({"w": torch.zeros(2)}, str(tmp / "plain.safetensors"))
    return _load(tmp / "plain.safetensors")


@case("saved file", "load(): a text file named .safetensors", DamagedFileError, "not a readable safetensors file")
def _text(tmp: Path) -> Any:
    (tmp / "junk.safetensors").write_text("hello, not a model")
    return _load(tmp / "junk.safetensors")


@case("saved file", "load(): header length claims 2**60 bytes", DamagedFileError, "1,152,921,504,606,846,976")
def _long_header(tmp: Path) -> Any:
    path = _saved(tmp)
    data = bytearray(path.read_bytes())
    data[:8] = (1 << 60).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return _load(path)


# -- checkpoints -------------------------------------------------------------------------------------------------
@case("checkpoint", "--resume: momentum buffer of the wrong shape in the checkpoint", EXIT_2, "momentum_buffer")
def _wrong_momentum(tmp: Path) -> int:
    run = _checkpointed(tmp)
    directory = _state(run)
    doc = json.loads((directory / "state.json").read_text())
    tensors = load_file(str(directory / "state.safetensors"))
    key = doc["state"]["optimizer"]["state"]["items"][0][1]["momentum_buffer"]["key"]
    tensors[key] = torch.zeros(3, 3)
    _reseal_state(directory, tensors, doc)
    return _resume(run)


case("checkpoint", "--resume: state.json is not JSON", CheckpointError, "state.json")(
    lambda tmp: load_checkpoint((lambda r: ((_state(r) / "state.json").write_text("{"), r)[1])(_checkpointed(tmp)),
                                _small_cnn()))
case("checkpoint", "--resume: a byte of state.safetensors flipped", CheckpointError, "tensor data")(
    lambda tmp: load_checkpoint((lambda r: (_flip(_state(r) / "state.safetensors"), r)[1])(_checkpointed(tmp)),
                                _small_cnn()))


@case("checkpoint", "--resume: state.json edited (checksum not updated)", CheckpointError, "checksum")
def _edited_state(tmp: Path) -> Any:
    run = _checkpointed(tmp)
    path = _state(run) / "state.json"
    doc = json.loads(path.read_text())
    doc["state"]["pruner"]["epoch"] = 5
    path.write_text(json.dumps(doc))
    return load_checkpoint(run, _small_cnn())


case("checkpoint", "--resume: checkpoint model.safetensors deleted", CheckpointError, "model.safetensors")(
    lambda tmp: load_checkpoint(
        (lambda r: ((_state(r) / "model.safetensors").unlink(), r)[1])(_checkpointed(tmp)), _small_cnn()))
case("checkpoint", "--resume: a byte of the checkpoint's model flipped", EXIT_2, "tensor data")(
    lambda tmp: _resume((lambda r: (_flip(_state(r) / "model.safetensors"), r)[1])(_checkpointed(tmp))))


@case("checkpoint", "--resume: state.json of another epoch than checkpoint.json", CheckpointError,
      "does not match checkpoint.json")
def _other_epoch(tmp: Path) -> Any:
    run = _checkpointed(tmp)
    directory = _state(run)
    doc = json.loads((directory / "state.json").read_text())
    doc["epoch"] = 7
    _reseal_state(directory, load_file(str(directory / "state.safetensors")), doc)
    return load_checkpoint(run, _small_cnn())


def _pointing(tmp: Path, path: str) -> Any:
    run = _checkpointed(tmp)
    pointer = json.loads((run / "checkpoint.json").read_text())
    (run / "checkpoint.json").write_text(json.dumps({**pointer, "path": path}))
    return load_checkpoint(run, _small_cnn())


case("checkpoint", "--resume: checkpoint.json naming ../other/checkpoints/after-epoch-0000", CheckpointError,
     "may only name")(lambda tmp: _pointing(tmp, "../other/checkpoints/after-epoch-0000"))


@case("checkpoint", "--resume: checkpoints/after-epoch-0000 a link to a directory outside the run", EXIT_2,
      "leads outside")
def _linked_out(tmp: Path) -> Any:
    run = _checkpointed(tmp)
    _state(run).rename(tmp / "elsewhere")
    _state(run).symlink_to(tmp / "elsewhere", target_is_directory=True)
    return _resume(run)


case("checkpoint", "earlyprune train --resume RUN --threads 2 --batch-size 8 (run: 1 thread, batch 16)", EXIT_2,
     "batch_size 16 -> 8; threads 1 -> 2")(
    lambda tmp: main(["train", "--resume", str(_checkpointed_threads(tmp)), "--threads", "2", "--batch-size", "8"]))
case("checkpoint", "earlyprune train --resume RUN --allow-changed treads", EXIT_2, "treads")(
    lambda tmp: main(["train", "--resume", str(_checkpointed(tmp)), "--allow-changed", "treads"]))
case("CLI", "earlyprune train … --allow-changed threads (no --resume)", EXIT_2, "--allow-changed")(
    lambda tmp: _train(tmp, "--allow-changed", "threads"))


def _checkpointed_threads(tmp: Path) -> Path:
    """A run stopped after one epoch, with its thread count recorded as 1."""
    run = _checkpointed(tmp)
    doc = json.loads((run / "environment.json").read_text())
    doc["environment"]["threads"] = 1
    (run / "environment.json").write_text(json.dumps(doc))
    return run


def _small_cnn() -> nn.Module:
    from earlyprune.models import create_model

    return create_model("small_cnn", num_classes=10, in_channels=3, width=4)


# -- running and rendering ---------------------------------------------------------------------------------------
def outcome(c: Case, tmp: Path) -> tuple[str, str, type | None]:
    """``(what it raised, its message, the exception class)`` — the message with scratch paths replaced by
    ``<tmp>``; the class is None for an exit status. Raises AssertionError when the input was accepted."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            result = c.run(tmp)
    except SystemExit as exc:  # argparse: usage + one error line
        kind, message, cls = f"exit status {exc.code}", _error_line(err.getvalue()), None
    except Exception as exc:  # noqa: BLE001 - the error is the answer
        kind, message, cls = type(exc).__name__, str(exc), type(exc)
    else:
        if c.error != EXIT_2 or result != 2:
            raise AssertionError(f"accepted: {c.given} (returned {result!r})")
        kind, message, cls = EXIT_2, _error_line(err.getvalue()), None
    return kind, _normalise(message, tmp), cls


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if ": error:" in line]
    return lines[-1] if lines else stderr.strip()


def _normalise(message: str, tmp: Path) -> str:
    return re.sub(r"0x[0-9a-f]{6,}", "0x…", message.replace(str(tmp), "<tmp>"))


def render(results: list[tuple[Case, str, str]]) -> str:
    """docs/errors.md from ``(case, what it raised, message)`` triples."""
    counts = {k: sum(c.kind == k for c, _, _ in results) for k in KINDS}
    lines = ["# Errors: what a bad input gets", "",
             "Every refusal earlyprune makes on purpose is an `earlyprune.EarlyPruneError` — each class also keeps "
             "the built-in exception it replaced (bad arguments are `ValueError` / `TypeError`, a call out of order "
             "a `RuntimeError`, an unknown name a `KeyError`…), so older `except` clauses still work — and on the "
             "command line one `earlyprune COMMAND: error: …` line with exit status 2. The message names the "
             "offending value and, where there is one, the fix. (`tests/test_error_hierarchy.py` walks every "
             "`raise` in the source to keep this true.)",
             "", "| class | what it means |", "|---|---|",
             "| `InvalidParameterError` | an argument breaks its rule (type, range, finiteness) |",
             "| `InfeasibleTargetError` | `min_channels` / `round_to` make the target unreachable |",
             "| `UnprunableGroupsError` | narrowing a group breaks the model's forward (a width fixed in code) |",
             "| `PrunedModelBrokenError` | a pruning step left a model that no longer runs; the step was rolled "
             "back (an `UnprunableGroupsError`, also a `RuntimeError`) |",
             "| `UsageError` | a call out of order, or in a state that cannot serve it (no batch observed yet, no "
             "gradients, no rewind point); also a `RuntimeError` |",
             "| `UnknownNameError` | a channel group or prunable weight looked up by a name that does not exist "
             "(also a `KeyError`) |",
             "| `NotSupportedError` | a setup earlyprune does not support, e.g. the Hugging Face callback under "
             "DDP (also a `NotImplementedError`) |",
             "| `MissingDependencyError` | an optional package the feature needs is not installed; names the "
             "`pip install` (also an `ImportError`) |",
             "| `MissingFileError` | a file to read does not exist (also a `FileNotFoundError`) |",
             "| `ConfigError` | a run configuration (flags, `--config` file) that cannot run |",
             "| `ResumeRefused` | a `--resume` that would change settings the results depend on (a `ConfigError`) |",
             "| `StructureMismatchError` | a saved model does not fit the model given, or is malformed |",
             "| `DamagedFileError` | a saved file's checksum or header does not hold (a `StructureMismatchError`) |",
             "| `CheckpointError` | a checkpoint is missing, damaged or does not fit the run |",
             "| `DataError` | a dataset is missing, corrupt or laid out otherwise |",
             "| `NonFiniteError` | training produced NaN / infinity for too long (names `--lr` / `--precision`) |",
             "| `RunError` | a path that is not a readable run directory (`earlyprune report`) |",
             "| `RunFailedError` | a training run that `compare` / `sweep` started failed; rerunning continues it |",
             "",
             f"The catalogue below is generated by `python tests/bad_inputs.py` from the cases that "
             f"`tests/test_bad_inputs.py` runs ({len(results)} cases: "
             + ", ".join(f"{n} {k}" for k, n in counts.items()) + "); a test fails when this page is not current. "
             "`<tmp>` stands for a scratch directory.", ""]
    for kind in KINDS:
        lines += [f"## {kind}", "", "| input | error | message |", "|---|---|---|"]
        for c, raised, message in results:
            if c.kind == kind:
                lines.append(f"| `{_cell(c.given)}` | {raised} | {_cell(message)} |")
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def run_all(scratch: Path) -> list[tuple[Case, str, str]]:
    results = []
    for i, c in enumerate(CASES):
        tmp = scratch / f"case{i:03d}"
        tmp.mkdir(parents=True)
        results.append((c, *outcome(c, tmp)[:2]))
    return results


DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"

if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        text = render(run_all(Path(scratch)))
    DOC.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {DOC} ({len(CASES)} cases)")
