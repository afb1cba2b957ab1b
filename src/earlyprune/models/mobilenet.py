"""MobileNetV1 (Howard et al. 2017) with a width multiplier α, for 32×32 inputs (the PaT paper's third network).

Depthwise-separable blocks (3×3 depthwise conv-BN-ReLU, 1×1 pointwise conv-BN-ReLU) with the paper's channel
plan 32-64-128-128-256-256-512×6-1024-1024. For small images the stem has stride 1 (ImageNet: 2) and the blocks
keep the paper's strides, so a 32×32 input ends at 2×2 before global pooling.
"""

from __future__ import annotations

from torch import nn

from ..core.validation import checked
from .init import kaiming_init_
from .registry import IN_CHANNELS, NUM_CLASSES, WIDTH_MULT, register_model

# (output channels, stride) of the 13 depthwise-separable blocks, as in the paper
_PLAN = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
         (512, 1), (1024, 2), (1024, 1))


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class MobileNetV1(nn.Module):
    RULES = {"num_classes": NUM_CLASSES, "in_channels": IN_CHANNELS, "width_mult": WIDTH_MULT}

    @checked(RULES)
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()

        def c(n: int) -> int:
            return max(8, int(n * width_mult))

        layers = _conv_bn(in_channels, c(32), 3, 1)
        c_in = c(32)
        for out, stride in _PLAN:
            layers += _conv_bn(c_in, c_in, 3, stride, groups=c_in) + _conv_bn(c_in, c(out), 1, 1)
            c_in = c(out)
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


register_model("mobilenet_v1", "MobileNetV1 for 32x32 inputs (kwargs: width_mult=1.0)")(MobileNetV1)
