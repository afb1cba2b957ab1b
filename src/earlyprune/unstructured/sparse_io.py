"""Masked weights as compact sparse tensors in a safetensors file (no pickle), and back, exactly.

safetensors holds dense tensors only, so a masked weight ``W`` (mask ``M``) is written as the components of a
sparse format, under keys derived from its name, whichever of two is smaller for that tensor:

* ``"csr"`` — ``W`` viewed as ``rows = shape[0]`` by ``cols = numel/rows``: ``<name>.csr_values`` (the kept values,
  row by row, in the weight's dtype), ``<name>.csr_columns`` (their column indices, int16 when
  ``cols ≤ 32768``, else int32 / int64) and ``<name>.csr_row_pointers`` (int32, or int64 past 2³¹ entries) —
  the layout of :func:`torch.sparse_csr_tensor`; smallest at high sparsity;
* ``"bitmask"`` — ``<name>.bitmask`` (the mask, 8 entries per byte, row-major) and ``<name>.bitmask_values`` (the
  kept values in row-major order); smallest below roughly 80 % sparsity.

The mask is what is stored, not the non-zeros: a kept weight that happens to be 0.0 stays kept. The JSON
metadata (:data:`MASKS_KEY`) names each masked tensor's encoding, shape and dtype. Decoding returns the dense
values (pruned entries exactly zero) and the mask.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..core.errors import DamagedFileError
from ..core.validation import InvalidParameterError

#: the metadata key (JSON) of the masked tensors in a file written by :func:`earlyprune.save`
MASKS_KEY = "earlyprune.masks"
ENCODINGS = ("csr", "bitmask")


def _column_dtype(cols: int) -> torch.dtype:
    if cols <= 2 ** 15:
        return torch.int16
    return torch.int32 if cols <= 2 ** 31 else torch.int64


def _matrix(values: torch.Tensor) -> torch.Tensor:
    rows = values.shape[0] if values.dim() else 1
    return values.reshape(rows, -1)


def encoded_bytes(values: torch.Tensor, mask: torch.Tensor, encoding: str) -> int:
    """Bytes the tensor components of ``encoding`` take (headers excluded)."""
    kept = int(mask.sum())
    size = values.element_size() * kept
    if encoding == "csr":
        rows, cols = _matrix(mask).shape
        size += kept * torch.empty((), dtype=_column_dtype(cols)).element_size()
        size += (rows + 1) * (8 if kept >= 2 ** 31 else 4)
        return size
    return size + math.ceil(mask.numel() / 8)


def encode(name: str, values: torch.Tensor, mask: torch.Tensor, encoding: str | None = None
           ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to store for masked weight ``name`` and its metadata entry; ``encoding`` None picks the
    smaller of :data:`ENCODINGS`."""
    values = values.detach().cpu().contiguous()
    mask = mask.detach().cpu().to(torch.bool)
    if mask.shape != values.shape:
        raise InvalidParameterError(f"mask of {name!r} has shape {tuple(mask.shape)}, the weight {tuple(values.shape)}")
    if encoding is None:
        encoding = min(ENCODINGS, key=lambda e: encoded_bytes(values, mask, e))
    meta = {"encoding": encoding, "shape": list(values.shape), "dtype": str(values.dtype).removeprefix("torch.")}
    flat_mask = mask.reshape(-1)
    kept_values = values.reshape(-1)[flat_mask].clone()
    if encoding == "csr":
        m = _matrix(mask)
        rows, cols = m.shape
        row_counts = m.sum(1)
        pointer_dtype = torch.int64 if int(flat_mask.sum()) >= 2 ** 31 else torch.int32
        pointers = torch.zeros(rows + 1, dtype=torch.int64)
        pointers[1:] = torch.cumsum(row_counts, 0)
        columns = m.nonzero()[:, 1]  # row-major: the order of kept_values
        return ({f"{name}.csr_values": kept_values, f"{name}.csr_columns": columns.to(_column_dtype(cols)),
                 f"{name}.csr_row_pointers": pointers.to(pointer_dtype)}, meta)
    if encoding == "bitmask":
        bits = np.packbits(flat_mask.numpy().astype(np.uint8))
        return {f"{name}.bitmask": torch.from_numpy(bits), f"{name}.bitmask_values": kept_values}, meta
    raise InvalidParameterError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")


def decode(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dense values, bool mask)`` of masked weight ``name`` from the stored ``tensors``."""
    shape = tuple(int(s) for s in meta["shape"])
    dtype = getattr(torch, meta["dtype"])
    numel = math.prod(shape)
    encoding = meta.get("encoding")
    try:
        if encoding == "csr":
            kept = tensors[f"{name}.csr_values"]
            columns = tensors[f"{name}.csr_columns"].long()
            pointers = tensors[f"{name}.csr_row_pointers"].long()
            rows = shape[0] if shape else 1
            cols = numel // max(rows, 1)
            if pointers.numel() != rows + 1 or int(pointers[-1]) != kept.numel() or columns.numel() != kept.numel():
                raise DamagedFileError(f"masked weight {name!r}: inconsistent CSR components (the file is damaged)")
            row_index = torch.repeat_interleave(torch.arange(rows), pointers.diff())
            flat = row_index * cols + columns
        elif encoding == "bitmask":
            kept = tensors[f"{name}.bitmask_values"]
            bits = np.unpackbits(tensors[f"{name}.bitmask"].numpy())[:numel]
            flat = torch.from_numpy(bits.astype(bool)).nonzero().reshape(-1)
            if flat.numel() != kept.numel():
                raise DamagedFileError(f"masked weight {name!r}: its bit mask and its values disagree (the file is "
                                       f"damaged)")
        else:
            raise DamagedFileError(f"masked weight {name!r}: unknown encoding {encoding!r} (one of "
                                   f"{', '.join(ENCODINGS)} expected)")
    except KeyError as exc:
        raise DamagedFileError(f"masked weight {name!r}: component {exc} is missing") from None
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= numel):
        raise DamagedFileError(f"masked weight {name!r}: indices outside its shape {shape}")
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[flat] = True
    values = torch.zeros(numel, dtype=dtype)
    values[flat] = kept.to(dtype)
    return values.reshape(shape), mask.reshape(shape)


def component_names(name: str, meta: dict[str, Any]) -> list[str]:
    """The tensor keys that store masked weight ``name``."""
    if meta.get("encoding") == "csr":
        return [f"{name}.csr_values", f"{name}.csr_columns", f"{name}.csr_row_pointers"]
    return [f"{name}.bitmask", f"{name}.bitmask_values"]


__all__ = ["ENCODINGS", "MASKS_KEY", "component_names", "decode", "encode", "encoded_bytes"]
