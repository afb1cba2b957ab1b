"""Re-estimating BatchNorm running statistics after channels are removed.

Removing input channels of a layer changes the distribution of its outputs, so the running mean and variance of
the BatchNorm that follows describe a network that no longer exists. In train mode BatchNorm normalises with the
batch's own statistics and training is unaffected; evaluation uses the running ones, and with PyTorch's momentum
of 0.1 they catch up only over the next few dozen batches. Pruning steps spread over the pruning epoch end at its
last batch, so the accuracy measured right after it was that of a stale network (the demo: 99.6 % train,
46.8 % test after the pruning epoch, recovering two epochs later).

:func:`recalibrate_batchnorm` re-estimates them: running statistics reset, then forward passes in train mode
without gradients, with ``momentum=None`` (PyTorch's cumulative average, so every batch counts equally). Weights,
gradients, optimizer state and random number generators are untouched, so the training trajectory is the same as
without it; only what evaluation sees changes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..core.validation import POSITIVE_INT

#: batches a recalibration uses by default (4,096 images at batch 128)
DEFAULT_BATCHES = 32


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any], *,
                          forward: Callable[[nn.Module, Any], Any] | None = None,
                          max_batches: int = DEFAULT_BATCHES) -> int:
    """Re-estimate the running statistics of every BatchNorm layer of ``model`` from ``batches``.

    Args:
        model: the (pruned) network; its train/eval mode is restored afterwards.
        batches: model inputs, one batch per item (a tensor, or whatever ``forward`` takes).
        forward: how to run the model on one item (default ``model(item)``); e.g. to apply autocast.
        max_batches: use at most this many items.

    Returns:
        The number of batches used (0: the model has no BatchNorm layer with running statistics, or no batch was
        given — then nothing changed).
    """
    POSITIVE_INT.check("max_batches", max_batches)
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in layers]
    modes = {m: m.training for m in model.modules()}
    for m in layers:
        m.reset_running_stats()
        m.momentum = None     # cumulative moving average: each batch weighs the same
    model.train()
    used = 0
    try:
        for item in batches:
            if used >= max_batches:
                break
            if forward is None:
                model(item)
            else:
                forward(model, item)
            used += 1
    finally:
        for m, (momentum, mean, var, count) in zip(layers, saved):
            m.momentum = momentum
            if used == 0:     # nothing seen: keep the old statistics rather than the reset ones
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        for m, training in modes.items():
            m.training = training
    return used


__all__ = ["DEFAULT_BATCHES", "batchnorm_layers", "recalibrate_batchnorm"]
