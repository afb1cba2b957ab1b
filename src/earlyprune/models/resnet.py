"""ResNet-18/34/50 (He et al. 2016) with a 3×3 stride-1 stem and no max-pool, the usual variant for 32×32 inputs.

Stages of 64/128/256/512 channels (×4 for the bottleneck of ResNet-50) with strides 1/2/2/2; projection shortcuts
(1×1 convolution + BatchNorm) where the shape changes, so every residual stream is a prunable coupled group.
"""

from __future__ import annotations

from torch import nn

from ..core.validation import checked
from .init import kaiming_init_
from .registry import IN_CHANNELS, NUM_CLASSES, WIDTH, register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(c_in, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """ResNet for small images: 3×3 stem, four stages, global average pool, linear classifier."""

    RULES = {"num_classes": NUM_CLASSES, "in_channels": IN_CHANNELS, "width": WIDTH}

    @checked(RULES)
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: tuple[int, ...], num_classes: int = 10,
                 in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layers = []
            for j in range(n):
                layers.append(block(c_in, planes, 2 if (j == 0 and i > 0) else 1))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


_SPECS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}

for _depth, (_block, _blocks) in _SPECS.items():
    register_model(f"resnet{_depth}", f"ResNet-{_depth} with a 3x3 stem for 32x32 inputs (kwargs: width=64)")(
        lambda num_classes=10, _b=_block, _n=_blocks, **kw: ResNet(_b, _n, num_classes, **kw))
