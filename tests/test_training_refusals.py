"""The trainer's refusals (src/earlyprune/training/) are EarlyPruneErrors that keep their built-in base, and
``build_model`` tells a refused model *name* from refused model *arguments*."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import earlyprune as ep
from earlyprune.core.errors import (
    ConfigError,
    DamagedFileError,
    EarlyPruneError,
    MissingDependencyError,
)
from earlyprune.core.validation import InvalidParameterError
from earlyprune.models import registry
from earlyprune.training import build, rundir, statecodec
from earlyprune.training.config import TrainConfig
from earlyprune.training.data import BatchLoader
from earlyprune.training.data.builtin import load_synthetic

TRAINING = Path(ep.__file__).resolve().parent / "training"
BUILTINS = {"ValueError", "TypeError", "RuntimeError", "KeyError", "IndexError", "AttributeError", "OSError",
            "FileNotFoundError", "Exception", "ImportError", "NotImplementedError"}


def test_no_plain_builtin_raise_under_training_unless_marked_internal():
    """A static walk (the whole-package walk is tests/test_error_hierarchy.py): every ``raise Builtin(...)``
    under training/ carries ``# internal: <why>``."""
    found = []
    for path in sorted(TRAINING.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
                continue
            func = node.exc.func
            if isinstance(func, ast.Name) and func.id in BUILTINS \
                    and not any("# internal:" in line for line in lines[node.lineno - 1:node.end_lineno]):
                found.append(f"{path.relative_to(TRAINING)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not found, "\n".join(found)


def _synthetic():
    return load_synthetic("32", image_size=8)


@pytest.mark.parametrize("make,old_base", [
    (lambda tmp: BatchLoader(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), 0,
                             (0.5,) * 3, (0.5,) * 3), ValueError),
    (lambda tmp: BatchLoader(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), 2, (0.5,) * 3,
                             (0.5,) * 3), ValueError),
    (lambda tmp: rundir.read_config(tmp / "nothing"), ValueError),
    (lambda tmp: statecodec.decode({"__ep__": "nonsense"}, {}), ValueError),
    (lambda tmp: build.build_model(TrainConfig(model="small_cnn", model_args={"depth": 3}), _synthetic()),
     ValueError),
])
def test_training_refusals_are_earlyprune_errors(tmp_path, make, old_base):
    with pytest.raises(EarlyPruneError) as info:
        make(tmp_path)
    assert isinstance(info.value, old_base)


def test_a_damaged_metrics_file_is_a_damaged_file_error(tmp_path):
    (tmp_path / rundir.METRICS).write_bytes(b"\xff\xfe not text\n")
    with pytest.raises(DamagedFileError, match="metrics.jsonl is not text"):
        rundir.read_metrics(tmp_path)


def test_tensorboard_missing_is_a_missing_dependency(monkeypatch):
    import builtins

    from earlyprune.training.loggers import TensorBoardLogger

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(MissingDependencyError, match="pip install") as info:
        TensorBoardLogger().start(None)
    assert isinstance(info.value, (ImportError, ValueError))


# -- build_model: the name or the arguments --------------------------------------------------------------------

def test_an_unknown_model_name_does_not_blame_the_model_args():
    with pytest.raises(ConfigError) as info:
        build.build_model(TrainConfig(model="resnet999"), _synthetic())
    assert "unknown model 'resnet999'" in str(info.value) and "--model-arg" not in str(info.value)


def test_a_name_refused_with_an_invalid_parameter_error_is_not_called_a_model_arg(monkeypatch):
    """Whatever class the name lookup refuses with, it is not reported as a bad --model-arg."""
    def refuse(name, in_channels=3):
        raise InvalidParameterError(f"no model named {name!r}; run `earlyprune models`")

    monkeypatch.setattr(build, "model_builder", refuse)
    with pytest.raises(InvalidParameterError) as info:
        build.build_model(TrainConfig(model="nope"), _synthetic())
    assert "--model-arg" not in str(info.value)


def test_a_bad_model_arg_is_still_named():
    with pytest.raises(ConfigError, match="check --model-arg"):
        build.build_model(TrainConfig(model="small_cnn", model_args={"width": 0}), _synthetic())


def test_a_constructor_failing_with_a_plain_error_is_said_with_the_arguments(monkeypatch):
    def broken(num_classes=10, in_channels=3, **kwargs):
        raise ValueError("inner shape trouble")

    monkeypatch.setitem(registry.MODELS, "broken_for_test", broken)
    with pytest.raises(ConfigError, match=r"could not be built with --model-arg width=4 \(ValueError: inner"):
        build.build_model(TrainConfig(model="broken_for_test", model_args={"width": 4}), _synthetic())
