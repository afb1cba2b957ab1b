"""Nested training state (optimizer, scheduler, pruner, RNG states) ↔ JSON + a flat dict of tensors.

State dicts mix plain values, tuples, integer keys and tensors. Pickle would keep them all but executes code
on load; instead :func:`encode` turns the structure into JSON in which every tensor is a reference into a flat
``{key: tensor}`` dict (written with safetensors), and tuples and non-string keys are tagged so that
:func:`decode` gives back exactly what went in.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.errors import DamagedFileError

_TAG = "__ep__"


def encode(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(json_value, tensors)`` for a nested structure of dicts, lists, tuples, scalars, strings and tensors."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = f"t{len(tensors)}"
            # clone: safetensors refuses views sharing storage, and the state must not alias live tensors
            tensors[key] = value.detach().to("cpu", copy=True).contiguous()
            return {_TAG: "tensor", "key": key}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {_TAG: "float", "value": repr(value)}
        if isinstance(value, tuple):
            return {_TAG: "tuple", "items": [enc(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and _TAG not in value:
                return {k: enc(v, f"{path}.{k}") for k, v in value.items()}
            return {_TAG: "dict", "items": [[enc(k, path), enc(v, f"{path}[{k!r}]")] for k, v in value.items()]}
        if isinstance(value, torch.dtype):
            return {_TAG: "dtype", "name": str(value).removeprefix("torch.")}
        raise TypeError(  # internal: a checkpoint holds only the trainer's own state, never a value of the user's
            f"cannot store {type(value).__name__} at {path or 'the top level'} in a checkpoint "
            f"(only dicts, lists, tuples, numbers, strings and tensors)")

    return enc(obj, ""), tensors


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: decode(v, tensors) for k, v in value.items()}
    if tag == "tensor":
        try:
            return tensors[value["key"]]
        except KeyError:
            raise DamagedFileError(f"checkpoint state refers to a missing tensor {value['key']!r}") from None
    if tag == "float":
        return float(value["value"])
    if tag == "tuple":
        return tuple(decode(v, tensors) for v in value["items"])
    if tag == "dict":
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in value["items"]}
    if tag == "dtype":
        return getattr(torch, value["name"])
    raise DamagedFileError(f"unknown tag {tag!r} in checkpoint state")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key
