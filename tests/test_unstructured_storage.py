"""Sparse models on disk: CSR size by hand, the reference code's formula by hand, sparse safetensors files that
restore masks and values exactly (no pickle), are smaller than dense ones, and fail clearly when damaged."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import earlyprune
from earlyprune.io import sealed
from earlyprune.core.errors import DamagedFileError
from earlyprune.io import StructureMismatchError
from earlyprune.unstructured import MaskedWeights, csr_bytes, dense_bytes, reference_disk_size, select_weights
from earlyprune.unstructured import sparse_io
from earlyprune.unstructured.criteria import MagnitudeU
from earlyprune.unstructured.storage import index_width
from nets import ResidualNet


def _masked_linear():
    layer = nn.Linear(300, 4, bias=True)
    keep = torch.zeros(4, 300, dtype=torch.bool)
    keep[0, :10] = True
    keep[2, 290:] = True
    MaskedWeights(layer).apply({"weight": keep})
    return layer


def test_csr_size_by_hand():
    """20 kept of 4×300: values 20·4 B, columns (≤ 299: 16 bit) 20·2 B, row pointers (≤ 20: 8 bit) 5·1 B."""
    layer = _masked_linear()
    assert csr_bytes(layer) == 20 * 4 + 20 * 2 + 5 * 1
    assert csr_bytes(layer, value_bits=16, index_bits=16) == 20 * 2 + 20 * 2 + 5 * 2
    assert dense_bytes(layer) == 4 * 300 * 4
    assert reference_disk_size(layer) == 20 * 34 + 2 * (4 + 1)
    assert index_width(255) == 8 and index_width(256) == 16 and index_width(2 ** 32) == 64
    with pytest.raises(ValueError, match="value_bits"):
        csr_bytes(layer, value_bits=0)


def test_unmasked_tensors_count_their_nonzeros_and_batchnorm_gamma_counts():
    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 0.0, 2.0]))
    # γ: 2 non-zeros of a 3×1 matrix, columns ≤ 0 (8 bit), pointers ≤ 2 (8 bit)
    assert csr_bytes(bn) == 2 * 4 + 2 * 1 + 4 * 1


@pytest.mark.parametrize("encoding", sparse_io.ENCODINGS)
@pytest.mark.parametrize("shape", [(4, 300), (6, 3, 3, 3), (5,)])
def test_encodings_round_trip_exactly(encoding, shape):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(shape, generator=g)
    mask = torch.rand(shape, generator=g) < 0.3
    mask.view(-1)[0] = True
    values = torch.where(mask, values, 0)
    values.view(-1)[0] = 0.0  # a kept weight that is exactly zero stays kept
    tensors, meta = sparse_io.encode("w", values, mask, encoding)
    back, back_mask = sparse_io.decode("w", tensors, meta)
    assert torch.equal(back, values) and torch.equal(back_mask, mask)
    assert sorted(tensors) == sorted(sparse_io.component_names("w", meta))


def test_the_smaller_encoding_is_chosen():
    values = torch.randn(64, 64)
    sparse = torch.rand(64, 64) < 0.02
    dense = torch.rand(64, 64) < 0.6
    assert sparse_io.encode("w", values * sparse, sparse)[1]["encoding"] == "csr"
    assert sparse_io.encode("w", values * dense, dense)[1]["encoding"] == "bitmask"


def _sparse_resnet(amount=0.9):
    torch.manual_seed(0)
    model = ResidualNet()
    weights = MaskedWeights(model)
    weights.apply(select_weights(weights, MagnitudeU().scores(weights), amount).keep)
    return model


def test_save_load_restores_masks_and_values_exactly(tmp_path):
    model = _sparse_resnet().eval()
    path = earlyprune.save(model, tmp_path / "m.safetensors")
    loaded = earlyprune.load(path, ResidualNet()).eval()
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(model(x), loaded(x))
    a, b = MaskedWeights(model).masks(), MaskedWeights(loaded).masks()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state, state2 = model.state_dict(), loaded.state_dict()
    assert state.keys() == state2.keys() and all(torch.equal(state[k], state2[k]) for k in state)
    with safe_open(str(path), framework="pt") as f:  # stored sparse, under derived names
        keys = set(f.keys())
        masks_meta = json.loads(f.metadata()[sparse_io.MASKS_KEY])
    assert "b1.0.0.weight" not in keys and set(masks_meta) == set(a)
    doc = earlyprune.io.read_structure(path)
    assert doc["masks"]["stem.0.weight"]["entries"] == 8 * 3 * 3 * 3


def test_sparse_file_is_smaller_than_the_dense_one(tmp_path):
    dense = ResidualNet()
    sparse = _sparse_resnet(0.95)
    dense_size = earlyprune.save(dense, tmp_path / "d.safetensors").stat().st_size
    sparse_size = earlyprune.save(sparse, tmp_path / "s.safetensors").stat().st_size
    tensor_bytes = sum(t.numel() * 4 for t in dense.state_dict().values() if t.is_floating_point())
    assert sparse_size < dense_size - 0.7 * tensor_bytes


def test_loaded_sparse_model_trains_on_with_its_masks(tmp_path):
    path = earlyprune.save(_sparse_resnet(), tmp_path / "m.safetensors")
    model = earlyprune.load(path, ResidualNet())
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.randint(0, 5, (4,))).backward()
        opt.step()
    assert all(torch.count_nonzero(t.value.detach()[~t.mask]) == 0 for t in MaskedWeights(model))


def test_damaged_sparse_file_is_refused(tmp_path):
    path = earlyprune.save(_sparse_resnet(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k in tensors if k.endswith(".csr_values") or k.endswith(".bitmask_values"))
    tensors[name] = tensors[name][:-1].clone()
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(DamagedFileError):                      # the checksum no longer matches
        earlyprune.load(tmp_path / "bad.safetensors", ResidualNet())
    sealed.seal(tmp_path / "bad.safetensors")                  # re-sealed: the sparse components themselves disagree
    with pytest.raises(StructureMismatchError, match="cannot be decoded"):
        earlyprune.load(tmp_path / "bad.safetensors", ResidualNet())
