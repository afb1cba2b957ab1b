"""Fuzzing the readers of saved files: earlyprune.load (structure + header loader) and the checkpoint reader get
arbitrarily mutated files — flipped bytes, overwritten runs, truncation, insertion, deletion — and must either
refuse with a project exception (earlyprune.EarlyPruneError) within a time bound, or give back exactly what was
saved. A default run tries a bounded number of examples; ``-m slow`` runs the long profile."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import earlyprune as ep
from earlyprune.cli import main
from earlyprune.models import create_model
from earlyprune.training.checkpoint import load_checkpoint
from nets import ResidualNet

#: seconds one mutated file may take to be read or refused (a hostile header must not buy minutes of work)
TIME_BOUND = 10.0
FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LONG = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

#: one mutation: (kind, position as a fraction of the file, length, byte value)
MUTATION = st.tuples(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete"]),
                     st.floats(0, 1, allow_nan=False), st.integers(1, 64), st.integers(0, 255))


def mutate(data: bytes, mutations: list[tuple[str, float, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, length, value in mutations:
        i = min(int(where * len(out)), max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[i] ^= value or 0xFF
        elif kind == "overwrite":
            out[i:i + length] = bytes([value]) * len(out[i:i + length])
        elif kind == "truncate":
            del out[i:]
        elif kind == "insert":
            out[i:i] = bytes([value]) * length
        elif kind == "delete":
            del out[i:i + length]
    return bytes(out)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[bytes, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = ResidualNet()
    ep.prune(model, torch.randn(2, 3, 8, 8), 0.5, steps=2)
    path = ep.save(model, tmp_path_factory.mktemp("saved") / "m.safetensors")
    return path.read_bytes(), {k: v.clone() for k, v in model.state_dict().items()}


def _check_load(data: bytes, original: dict[str, torch.Tensor], path: Path) -> None:
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        model = ep.load(path, ResidualNet())
    except ep.EarlyPruneError:
        pass
    else:  # accepted: then it is exactly what was saved
        state = model.state_dict()
        assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in original)
    assert time.perf_counter() - start < TIME_BOUND


@FAST
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_model_files_are_refused_or_identical(saved, tmp_path, mutations):
    data, original = saved
    _check_load(mutate(data, mutations), original, tmp_path / "m.safetensors")


@pytest.mark.slow
@LONG
@given(st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_model_files_long_profile(saved, tmp_path, mutations):
    data, original = saved
    _check_load(mutate(data, mutations), original, tmp_path / "m.safetensors")


# -- the checkpoint reader ---------------------------------------------------------------------------------------
FILES = ["checkpoint.json", "checkpoints/after-epoch-0000/state.json", "checkpoints/after-epoch-0000/state.safetensors",
         "checkpoints/after-epoch-0000/model.safetensors"]


def _fresh() -> torch.nn.Module:
    return create_model("small_cnn", num_classes=10, in_channels=3, width=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, tuple]:
    out = tmp_path_factory.mktemp("fuzzrun")
    assert main(["train", "--model", "small_cnn", "--model-arg", "width=4", "--dataset", "synthetic:32",
                 "--image-size", "8", "--batch-size", "16", "--epochs", "2", "--policy", "epoch:1", "--steps", "1",
                 "--round-to", "1", "--channels-last", "off", "--progress", "none", "--out-dir", str(out), "--name", "r",
                 "--stop-after",
                 "1"]) == 0
    return out / "r", load_checkpoint(out / "r", _fresh())


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def _check_checkpoint(run: Path, reference: tuple, target: str, mutations: list, scratch: Path) -> None:
    copy = scratch / "run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    (copy / target).write_bytes(mutate((copy / target).read_bytes(), mutations))
    start = time.perf_counter()
    try:
        epoch, model, state = load_checkpoint(copy, _fresh())
    except ep.EarlyPruneError:
        pass
    else:
        assert epoch == reference[0] and _same(state, reference[2])
        assert _same(model.state_dict(), reference[1].state_dict())
    assert time.perf_counter() - start < TIME_BOUND


@FAST
@given(st.sampled_from(FILES), st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_checkpoints_are_refused_or_identical(run_dir, tmp_path, target, mutations):
    _check_checkpoint(*run_dir, target, mutations, tmp_path)


@pytest.mark.slow
@LONG
@given(st.sampled_from(FILES), st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_checkpoints_long_profile(run_dir, tmp_path, target, mutations):
    _check_checkpoint(*run_dir, target, mutations, tmp_path)


def test_the_mutations_do_reach_every_part_of_a_file(saved):
    data, _ = saved
    assert mutate(data, [("truncate", 0.5, 1, 0)]) == data[: len(data) // 2]
    assert mutate(data, [("flip", 0.0, 1, 1)])[0] == data[0] ^ 1
    assert len(mutate(data, [("insert", 1.0, 3, 7)])) == len(data) + 3
