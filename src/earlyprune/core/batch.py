"""One training batch and how to call a model on inputs of any shape — a leaf module: it imports nothing from the
package, so that every layer (criteria, gates, the pruner, ``prune()``) can use it without import cycles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """Run ``model`` on ``example_inputs``: a tensor, a tuple/list of positional arguments, or a dict of keywords."""
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


def flat_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in ``obj`` (a tensor, tuple / list, dict or a ``ModelOutput``-like container), in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in flat_tensors(item)]
    if hasattr(obj, "__dict__"):  # ModelOutput-like containers
        return [t for item in vars(obj).values() for t in flat_tensors(item)]
    return []


@dataclass(frozen=True)
class Batch:
    """One training batch and the loss to score it with (for criteria that run passes of their own)."""

    inputs: Any
    targets: Any
    loss_fn: Callable[[Any, Any], torch.Tensor]

    def loss(self, model: nn.Module) -> torch.Tensor:
        return self.loss_fn(call_model(model, self.inputs), self.targets)


__all__ = ["Batch", "call_model", "flat_tensors"]
