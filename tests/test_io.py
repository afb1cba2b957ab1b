"""save()/load(): safetensors + JSON structure, replayed on a fresh original; no pickle on the load path."""

import pickle

import pytest
import torch
from torch import nn
from safetensors.torch import save_file

import earlyprune as ep
from nets import ARCHITECTURES, MLP, ResidualNet, randomize_


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_round_trip_gives_identical_outputs(arch, tmp_path):
    builder, shape = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model, x = randomize_(builder()), torch.randn(*shape)
    ep.prune(model, x, 0.5, steps=3)
    path = ep.save(model, tmp_path / "model.safetensors")
    fresh = ep.load(path, builder())
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)
    assert not list(tmp_path.glob(".*.tmp"))          # the atomic write left no temporary file


def test_unpruned_model_round_trips(tmp_path):
    model = MLP()
    ep.save(model, tmp_path / "m.safetensors", metadata={"note": "dense"})
    fresh = ep.load(tmp_path / "m.safetensors", MLP())
    x = torch.randn(3, 20)
    torch.testing.assert_close(fresh(x), model(x))


def test_a_loaded_model_can_be_pruned_further_and_saved_again(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    model = randomize_(ResidualNet())
    ep.prune(model, x, 0.3)
    ep.save(model, tmp_path / "a.safetensors")
    again = ep.load(tmp_path / "a.safetensors", ResidualNet())
    ep.prune(again, x, 0.6)
    ep.save(again, tmp_path / "b.safetensors")
    final = ep.load(tmp_path / "b.safetensors", ResidualNet())
    again.eval(), final.eval()
    torch.testing.assert_close(final(x), again(x), rtol=0, atol=0)


def test_load_never_unpickles(tmp_path, monkeypatch):
    model, x = ResidualNet(), torch.randn(2, 3, 8, 8)
    ep.prune(model, x, 0.5)
    ep.save(model, tmp_path / "m.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling on the load path")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    ep.load(tmp_path / "m.safetensors", ResidualNet())


def test_a_file_from_another_architecture_is_refused(tmp_path):
    model, x = ResidualNet(), torch.randn(2, 3, 8, 8)
    ep.prune(model, x, 0.5)
    ep.save(model, tmp_path / "m.safetensors")
    with pytest.raises(ep.StructureMismatchError, match="different architecture"):
        ep.load(tmp_path / "m.safetensors", MLP())
    with pytest.raises(ep.StructureMismatchError, match="different architecture"):
        ep.load(tmp_path / "m.safetensors", model)   # already pruned: not the original


def test_foreign_and_broken_files_are_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ep.StructureMismatchError, match="no earlyprune structure"):
        ep.load(tmp_path / "plain.safetensors", MLP())
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ep.StructureMismatchError, match="not a readable safetensors file"):
        ep.load(tmp_path / "junk.safetensors", MLP())
    with pytest.raises(FileNotFoundError):
        ep.load(tmp_path / "missing.safetensors", MLP())
    with pytest.raises(ValueError, match="metadata"):
        ep.save(MLP(), tmp_path / "x.safetensors", metadata={"earlyprune.structure": "x"})


def test_tracing_a_model_does_not_keep_it_alive_and_its_history_outlives_the_graph(tmp_path):
    """The structure record holds the pruning graph weakly (the graph references the model; a strong reference
    kept every traced model in memory), and copies its history after each removal."""
    import gc
    import weakref

    model, x = randomize_(ResidualNet()), torch.randn(2, 3, 8, 8)
    alive = weakref.ref(model)
    ep.ChannelGroups(model, x)
    del model
    gc.collect()
    assert alive() is None
    model = randomize_(ResidualNet())
    ep.prune(model, x, 0.5, steps=2)  # its groups and graph are gone after the call
    gc.collect()
    loaded = ep.load(ep.save(model, tmp_path / "m.safetensors"), ResidualNet())
    assert torch.equal(loaded.eval()(x), model.eval()(x))


class Versioned(ResidualNet):
    """A module whose loading depends on its version (as torchvision's MNASNet): load() must hand it its own."""

    _version = 2

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version") != 2:
            raise ValueError(f"version should be 2, got {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight  # stored once by save_model

    def forward(self, x):
        return self.b(self.a(x))


def test_load_passes_module_versions_and_restores_tied_weights(tmp_path):
    model, x = randomize_(Versioned()), torch.randn(2, 3, 8, 8)
    ep.prune(model, x, 0.5)
    loaded = ep.load(ep.save(model, tmp_path / "v.safetensors"), Versioned())
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    tied = Tied()
    loaded = ep.load(ep.save(tied, tmp_path / "t.safetensors"), Tied())
    assert loaded.a.weight is loaded.b.weight and torch.equal(loaded.a.weight, tied.a.weight)


def test_saved_files_follow_the_umask_like_every_other_file(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        ep.save(nn.Linear(2, 2), tmp_path / "m.safetensors")
        (tmp_path / "other.json").write_text("{}")
    finally:
        os.umask(old)
    mode = (tmp_path / "m.safetensors").stat().st_mode & 0o777
    assert mode == 0o640 == (tmp_path / "other.json").stat().st_mode & 0o777  # not safetensors' own 0600
