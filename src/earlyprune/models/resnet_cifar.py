"""The CIFAR ResNets of He et al. (2016, §4.2): 3 stages of 16/32/64 channels, 6n+2 layers.

Shortcuts between stages are 1×1 convolutions with BatchNorm (option B), so every residual stream is a
coupled channel group that the dependency graph can prune.
"""

from __future__ import annotations

from numbers import Integral

from torch import nn

from ..core.validation import Interval, InvalidParameterError, checked, rule
from .init import kaiming_init_
from .registry import IN_CHANNELS, NUM_CLASSES, WIDTH, register_model
from .resnet import BasicBlock


class CifarResNet(nn.Module):
    RULES = {"depth": rule(Interval(Integral, 8, None), hint="6n+2: 20, 32, 44, 56, 110"), "num_classes": NUM_CLASSES,
             "width": WIDTH, "in_channels": IN_CHANNELS}

    @checked(RULES)
    def __init__(self, depth: int, num_classes: int = 10, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise InvalidParameterError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if (i == 0 and stage > 0) else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}", f"CIFAR ResNet-{_depth} (He et al. 2016, 16/32/64 channels; kwargs: width=16)")(
        lambda num_classes=10, _d=_depth, **kw: CifarResNet(_d, num_classes, **kw))
