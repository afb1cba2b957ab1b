"""Disk size of a sparse model in compressed sparse row (CSR) form — EarlyCroP's "Disk (MB)" column.

EarlyCroP's appendix D: "We estimate the storage needed to store a model on disk using the CSR sparse matrix
format (Buluç et al., 2009). Similarly to (Verdenius et al., 2020), we used a ratio of 16:1 float precision on
all vectors of the CSR format." The sentence does not pin the precisions down, so two numbers are given:

* :func:`csr_bytes` — CSR with **stated** precisions. Each weight tensor is a matrix of ``rows = shape[0]``
  (output channels / features) by ``cols = numel / rows``; it stores ``nnz`` values (``value_bits`` each, 32 by
  default: the fp32 weights as trained), ``nnz`` column indices and ``rows + 1`` row pointers. Index width:
  ``index_bits`` if given, else per tensor the narrowest of 8/16/32/64 bits that holds the largest column index
  (for the column indices) and ``nnz`` (for the row pointers) — what :mod:`.sparse_io` writes;
* :func:`reference_disk_size` — what the EarlyCroP / SNIP-it reference code computes and the paper's tables
  report divided by 10⁶: ``Σ nnz·34 + 2·(min(rows, cols) + 1)`` — read as bits, a 32-bit value plus 2 bits per
  non-zero and 2-bit row pointers over the shorter side. The formula is reproduced for comparison with the
  paper's numbers, not because it is a faithful byte count.

Both count every parameter whose (plain) name contains ``weight`` — BatchNorm γ, ``weight_hh_l0`` and
``in_proj_weight`` included, biases excluded — as the reference code does; ``nnz`` is the mask's kept count for a
masked tensor and the number of non-zeros otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import nn

from ..core.validation import MODEL, Interval, checked, rule
from ..graph.masks import mask_of, plain_name


@dataclass(frozen=True)
class TensorCSR:
    """The CSR layout of one weight tensor."""

    name: str
    rows: int
    cols: int
    nnz: int

    def bytes(self, value_bits: int = 32, index_bits: int | None = None) -> int:
        col_bits = index_bits or index_width(max(self.cols - 1, 0))
        ptr_bits = index_bits or index_width(self.nnz)
        return math.ceil((self.nnz * (value_bits + col_bits) + (self.rows + 1) * ptr_bits) / 8)


def index_width(largest: int) -> int:
    """The narrowest of 8, 16, 32, 64 bits whose unsigned range holds ``largest``."""
    for bits in (8, 16, 32, 64):
        if largest < 2 ** bits:
            return bits
    raise ValueError(f"{largest} does not fit 64 bits")  # internal: a tensor size always fits 64 bits


def weight_tensors(model: nn.Module) -> list[TensorCSR]:
    """The CSR layout of every weight tensor of ``model`` (see the module docstring for which)."""
    out = []
    for name, param in model.named_parameters():
        plain = plain_name(name)
        if "weight" not in plain.rsplit(".", 1)[-1]:
            continue
        module_name, _, attr = plain.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        mask = mask_of(module, attr)
        nnz = mask.kept if mask is not None else int(torch.count_nonzero(param.detach()))
        rows = param.shape[0] if param.dim() else 1
        out.append(TensorCSR(plain, rows, max(param.numel() // max(rows, 1), 1), nnz))
    return out


BITS = rule(Interval(Integral, 1, None), hint="bits per stored number")


@checked({"model": MODEL, "value_bits": BITS, "index_bits": rule(Interval(Integral, 1, None), None)})
def csr_bytes(model: nn.Module, value_bits: int = 32, index_bits: int | None = None) -> int:
    """Bytes of every weight tensor of ``model`` stored in CSR (see the module docstring)."""
    return sum(t.bytes(value_bits, index_bits) for t in weight_tensors(model))


def dense_bytes(model: nn.Module, value_bits: int = 32) -> int:
    """Bytes of the same weight tensors stored dense (``numel · value_bits``)."""
    return math.ceil(sum(t.rows * t.cols for t in weight_tensors(model)) * value_bits / 8)


def reference_disk_size(model: nn.Module) -> int:
    """The EarlyCroP reference code's ``compressed_size``: ``Σ nnz·34 + 2·(min(rows, cols) + 1)`` over the weight
    tensors (its unit is undocumented; the paper's "Disk (MB)" is this number / 10⁶)."""
    return sum(t.nnz * 34 + 2 * (min(t.rows, t.cols) + 1) for t in weight_tensors(model))


__all__ = ["TensorCSR", "csr_bytes", "dense_bytes", "index_width", "reference_disk_size", "weight_tensors"]
