"""Safetensors files that say when they are damaged: a checksum in the header, and a header read with bounds.

A ``.safetensors`` file is an 8-byte little-endian header length, a JSON header (per tensor: dtype, shape, byte
offsets into the data; plus ``__metadata__``, a map of strings), then the tensor data. :func:`seal` adds one
metadata entry, ``earlyprune.checksum``: the SHA-256 of the tensor index and data (``tensors``) and of the other
metadata entries — the pruned structure among them — (``metadata``). :func:`read_header` parses the header
itself, before safetensors allocates anything, and refuses what a file cannot hold (a header longer than the
file or than :data:`MAX_HEADER_BYTES`, offsets outside the data, sizes that disagree with the shape);
:func:`verify` recomputes the checksum by streaming the file. Every refusal is a
:class:`~earlyprune.core.errors.DamagedFileError` that says what was wrong.

Files written before the checksum existed have none: :func:`verify` then returns False (they are read as
before, unverified).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import DamagedFileError, MissingFileError

CHECKSUM_KEY = "earlyprune.checksum"
#: the longest header read (safetensors itself allows 100 MB): a pruned structure of a large model is ~1 MB
MAX_HEADER_BYTES = 64 << 20
#: bytes per element of each safetensors dtype
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
            "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    start: int   #: offset of the first byte in the data section
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed, bounds-checked safetensors header."""

    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int   #: file offset of the data section
    size: int         #: file size in bytes
    raw: dict[str, Any] = field(repr=False, default_factory=dict)  #: the tensor index as stored


def _damaged(path: Path, what: str, state: str = "is not a readable safetensors file") -> DamagedFileError:
    return DamagedFileError(f"{path} {state}: {what}")


def read_header(path: str | os.PathLike) -> Header:
    """Parse and check the header of ``path`` without reading the tensor data."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, f"{size} bytes, too short for the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise _damaged(path, f"its header claims {n:,} bytes, the file holds {size - 8:,} after the length "
                                 f"(limit {MAX_HEADER_BYTES:,})")
        raw_bytes = f.read(n)
    try:
        doc = json.loads(raw_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _damaged(path, f"its header is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _damaged(path, f"its header is a JSON {type(doc).__name__}, not an object")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise _damaged(path, "its __metadata__ is not a map of strings to strings")
    data_len = size - 8 - n
    tensors: dict[str, TensorEntry] = {}
    spans = []
    for name, entry in doc.items():
        tensors[name] = _entry(path, name, entry, data_len)
        spans.append((tensors[name].start, tensors[name].end, name))
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise _damaged(path, f"tensors {first!r} and {second!r} overlap in the data")
    return Header(path, tensors, metadata, 8 + n, size, doc)


def _entry(path: Path, name: str, entry: Any, data_len: int) -> TensorEntry:
    if not isinstance(entry, dict):
        raise _damaged(path, f"tensor {name!r} is described by a {type(entry).__name__}, not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ITEMSIZE:
        raise _damaged(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or len(shape) > 16 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 48 for d in shape):
        raise _damaged(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_len):
        raise _damaged(path, f"tensor {name!r} has data offsets {offsets!r} outside the {data_len:,} bytes of data")
    nbytes = math.prod(shape) * ITEMSIZE[dtype]
    if offsets[1] - offsets[0] != nbytes:
        raise _damaged(path, f"tensor {name!r} of shape {shape} ({dtype}) needs {nbytes:,} bytes, its offsets span "
                             f"{offsets[1] - offsets[0]:,}")
    return TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])


def _metadata_digest(metadata: dict[str, str]) -> str:
    rest = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _tensor_digest(header: Header) -> str:
    h = hashlib.sha256(json.dumps(header.raw, sort_keys=True).encode("utf-8"))
    with open(header.path, "rb") as f:
        f.seek(header.data_start)
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def seal(path: str | os.PathLike) -> None:
    """Add the checksum entry to the header of the safetensors file ``path`` (rewritten through a temporary file
    and ``os.replace``; the tensor data is copied unchanged)."""
    path = Path(path)
    header = read_header(path)
    metadata = dict(header.metadata)
    metadata[CHECKSUM_KEY] = json.dumps({"algorithm": "sha256", "tensors": _tensor_digest(header),
                                         "metadata": _metadata_digest(metadata)})
    text = json.dumps({"__metadata__": metadata, **header.raw}, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors writes it
    tmp = path.with_name(f".{path.name}.seal")
    with open(path, "rb") as src, open(tmp, "wb") as out:
        out.write(len(text).to_bytes(8, "little"))
        out.write(text)
        src.seek(header.data_start)
        for block in iter(lambda: src.read(_CHUNK), b""):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def verify(header: Header) -> bool:
    """Check the checksum of a file read by :func:`read_header`: True when it matches, False when the file has
    none (written before checksums); :class:`~earlyprune.core.errors.DamagedFileError` when it does not match."""
    stored = header.metadata.get(CHECKSUM_KEY)
    if stored is None:
        return False
    try:
        record = json.loads(stored)
        algorithm, tensors, metadata = record["algorithm"], record["tensors"], record["metadata"]
    except (ValueError, TypeError, KeyError):
        raise _damaged(header.path, f"its {CHECKSUM_KEY} entry is malformed", "is damaged") from None
    if algorithm != "sha256":
        raise _damaged(header.path, f"unknown checksum algorithm {algorithm!r}", "is damaged")
    if metadata != _metadata_digest(header.metadata):
        raise _damaged(header.path, "the checksum of its metadata (the pruned structure) does not match — the header "
                                    "was altered after it was written", "is damaged")
    if tensors != _tensor_digest(header):
        raise _damaged(header.path, "the checksum of its tensor data does not match — the file was altered or "
                                    "truncated after it was written", "is damaged")
    return True


def read_verified(path: str | os.PathLike) -> Header:
    """:func:`read_header` then :func:`verify` (a file without a checksum is accepted as it is)."""
    header = read_header(path)
    verify(header)
    return header


__all__ = ["CHECKSUM_KEY", "Header", "MAX_HEADER_BYTES", "TensorEntry", "read_header", "read_verified", "seal",
           "verify"]
