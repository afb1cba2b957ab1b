"""A small CNN for 8×8 digits and other tiny images (the demo's model)."""

from __future__ import annotations

from torch import nn

from ..core.validation import BOOLEAN, checked
from .registry import IN_CHANNELS, NUM_CLASSES, WIDTH, register_model


class SmallCNN(nn.Module):
    """conv-bn-relu ×3 (32/64/128 channels, one 2× pooling) → global average pool → linear.

    ``batchnorm=False`` builds conv(bias)-relu blocks: a model whose result does not depend on how a batch is
    split, so data-parallel training equals one process with the global batch (the torchrun test uses it).
    """

    RULES = {"num_classes": NUM_CLASSES, "in_channels": IN_CHANNELS, "width": WIDTH, "batchnorm": BOOLEAN}

    @checked(RULES)
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, batchnorm: bool = True) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            if not batchnorm:
                return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(in_channels, width), *block(width, 2 * width), nn.MaxPool2d(2),
                                      *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


register_model("small_cnn", "small CNN, conv-bn-relu x3 (the demo model; kwargs: width=32, batchnorm=true)")(SmallCNN)
