"""A learnable toy problem and the plain training loop that the pruner tests share."""

from __future__ import annotations

import torch
from torch import nn


def blobs(n: int = 256, d: int = 20, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random class centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def train(pruner, model, opt, x, y, epochs: int, batch: int = 32) -> list[float]:
    """Train ``epochs`` epochs in fixed batch order, calling the pruner as a user's loop would; returns the summed
    loss of each epoch."""
    losses = []
    for _ in range(epochs):
        total = 0.0
        for idx in torch.arange(len(y)).split(batch):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            pruner.step()
            total += loss.item()
        pruner.epoch_end()
        losses.append(total)
    return losses
