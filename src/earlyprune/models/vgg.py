"""VGG-16/19 with BatchNorm, CIFAR variant: 3×3 conv-BN-ReLU stacks and five 2× max-pools, then one linear layer.

As in the network-slimming / pruning literature for CIFAR, the three 4096-wide fully connected layers of the
ImageNet VGG are replaced by a single classifier on the 512 pooled features.
"""

from __future__ import annotations

from torch import nn

from ..core.validation import Options, checked, rule
from .init import kaiming_init_
from .registry import IN_CHANNELS, NUM_CLASSES, WIDTH_MULT, register_model

_CONFIGS = {
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    RULES = {"depth": rule(Options(tuple(_CONFIGS))), "num_classes": NUM_CLASSES, "in_channels": IN_CHANNELS,
             "width_mult": WIDTH_MULT}

    @checked(RULES)
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for item in _CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = max(1, round(int(item) * width_mult))
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.AdaptiveAvgPool2d(1))  # 1×1 already for 32×32 inputs; other sizes still work
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


for _depth in _CONFIGS:
    register_model(f"vgg{_depth}", f"VGG-{_depth} with BatchNorm, CIFAR variant (kwargs: width_mult=1.0)")(
        lambda num_classes=10, _d=_depth, **kw: VGG(_d, num_classes, **kw))
