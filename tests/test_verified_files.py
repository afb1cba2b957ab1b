"""Saved models and checkpoints carry checksums that load() and --resume verify before using anything; headers are
read with bounds; older files without a checksum still load."""

from __future__ import annotations

import json

import pytest
import torch
import torch_pruning as tp
from safetensors.torch import load_file, save_file

import earlyprune as ep
from earlyprune.io import sealed
from earlyprune.surgery.optimizer_state import check_state
from nets import MLP, ResidualNet

X = torch.randn(2, 3, 8, 8)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = ResidualNet()
    ep.prune(model, X, 0.5, steps=2)
    return ep.save(model, tmp_path / "m.safetensors"), model


def test_save_seals_the_tensors_and_the_structure_and_stays_a_plain_safetensors_file(saved):
    path, model = saved
    header = sealed.read_header(path)
    record = json.loads(header.metadata[sealed.CHECKSUM_KEY])
    assert record["algorithm"] == "sha256" and len(record["tensors"]) == len(record["metadata"]) == 64
    assert sealed.verify(header) is True and header.data_start % 8 == 0
    plain = load_file(str(path))                      # any safetensors reader still reads it
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items() if k in plain)


def _resave(path, metadata):
    save_file(load_file(str(path)), str(path), metadata=metadata)


def test_a_file_from_before_checksums_still_loads(saved):
    path, model = saved
    metadata = dict(sealed.read_header(path).metadata)
    del metadata[sealed.CHECKSUM_KEY]
    doc = json.loads(metadata["earlyprune.structure"])
    doc["version"] = 1                                # written before checksums existed
    metadata["earlyprune.structure"] = json.dumps(doc)
    _resave(path, metadata)
    loaded = ep.load(path, ResidualNet())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_a_current_file_whose_checksum_was_removed_is_refused(saved):
    path, _ = saved
    metadata = dict(sealed.read_header(path).metadata)
    del metadata[sealed.CHECKSUM_KEY]
    _resave(path, metadata)
    with pytest.raises(ep.core.errors.DamagedFileError, match="entry is missing"):
        ep.load(path, ResidualNet())


def test_a_hostile_history_is_refused_before_any_replay(saved, monkeypatch):
    path, _ = saved
    metadata = {k: v for k, v in sealed.read_header(path).metadata.items() if k != sealed.CHECKSUM_KEY}
    doc = json.loads(metadata["earlyprune.structure"])
    doc["history"] = [["b1.0.0", True, [i % 12]] for i in range(50_000)]
    metadata["earlyprune.structure"] = json.dumps(doc)
    _resave(path, metadata)
    sealed.seal(path)                                  # a valid checksum: only the content is hostile

    def never(*args, **kwargs):
        raise AssertionError("the history was replayed")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", never)
    monkeypatch.setattr(tp.DependencyGraph, "load_pruning_history", never)
    with pytest.raises(ep.StructureMismatchError, match="50000 entries"):
        ep.load(path, ResidualNet())


def test_a_tensor_outside_the_saved_structure_is_refused(saved):
    path, _ = saved
    tensors = load_file(str(path))
    tensors["fc.weight"] = torch.zeros(5, 99)
    metadata = {k: v for k, v in sealed.read_header(path).metadata.items() if k != sealed.CHECKSUM_KEY}
    save_file(tensors, str(path), metadata=metadata)
    sealed.seal(path)
    with pytest.raises(ep.StructureMismatchError, match="'fc.weight' of shape \\[5, 99\\]"):
        ep.load(path, ResidualNet())


def test_an_optimizer_state_that_does_not_fit_is_refused():
    model = MLP()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 20)).sum().backward()
    opt.step()
    state = opt.state_dict()
    check_state(opt, state)                            # its own state fits
    state["state"][0]["exp_avg"] = torch.zeros(7)
    with pytest.raises(ValueError, match="'exp_avg' of parameter 0 has shape \\[7\\]"):
        check_state(opt, state)
    with pytest.raises(ValueError, match="holds 6 parameters, the optimizer 2"):
        check_state(torch.optim.SGD(list(model.parameters())[:2], 0.1), opt.state_dict())


def test_checkpoints_carry_checksums(tmp_path):
    from earlyprune.training.checkpoint import save_checkpoint

    model = MLP()
    directory = save_checkpoint(tmp_path, 1, model, {"x": torch.ones(3), "n": 1})
    assert sealed.verify(sealed.read_header(directory / "state.safetensors")) is True
    assert sealed.verify(sealed.read_header(directory / "model.safetensors")) is True
    assert len(json.loads((directory / "state.json").read_text())["sha256"]) == 64
