"""Weight initialisation shared by the model zoo."""

from __future__ import annotations

from torch import nn


def kaiming_init_(model: nn.Module) -> nn.Module:
    """He initialisation (fan-out, ReLU) of every convolution, as in the ResNet paper; other layers keep
    PyTorch's defaults."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
