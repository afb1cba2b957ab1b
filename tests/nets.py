"""Small test architectures covering the coupling patterns the dependency graph must handle."""

from __future__ import annotations

import torch
from torch import nn


def cbr(c_in: int, c_out: int, groups: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class ResidualNet(nn.Module):
    """Two residual blocks on one stream (three producers coupled), a strided stage with a 1×1 shortcut."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.b1 = nn.Sequential(cbr(8, 12), nn.Conv2d(12, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8))
        self.b2 = nn.Sequential(cbr(8, 12), nn.Conv2d(12, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8))
        self.down = nn.Sequential(cbr(8, 16, stride=2), nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.short = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.b1(x))
        x = torch.relu(x + self.b2(x))
        x = torch.relu(self.down(x) + self.short(x))
        return self.fc(x.mean((2, 3)))


class ConcatNet(nn.Module):
    """Two branches concatenated on channels, then a flatten → linear head."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.a = cbr(8, 6)
        self.b = cbr(8, 10)
        self.mix = cbr(16, 12)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(12 * 4, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        return self.fc(self.pool(self.mix(x)).flatten(1))


class DepthwiseNet(nn.Module):
    """MobileNet-style depthwise-separable blocks, with a residual over one of them."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.dw1 = cbr(16, 16, groups=16)
        self.pw1 = nn.Sequential(nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.dw2 = cbr(24, 24, groups=24)
        self.pw2 = nn.Sequential(nn.Conv2d(24, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.pw1(self.dw1(self.stem(x)))
        x = torch.relu(x + self.pw2(self.dw2(x)))
        return self.fc(x.mean((2, 3)))


class GroupedNet(nn.Module):
    """A grouped (non-depthwise) convolution: channels must leave every convolution group alike."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.grouped = cbr(8, 16, groups=4)
        self.head = cbr(16, 12)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.grouped(self.stem(x))).mean((2, 3)))


class MLP(nn.Module):
    def __init__(self, d_in: int = 20, num_classes: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(),
                                 nn.Linear(24, num_classes))

    def forward(self, x):
        return self.net(x)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet-V2's unit: half the channels pass, half go through a 1×1 → depthwise → 1×1 branch; then a
    channel shuffle (a permutation torch-pruning cannot map)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
                                    nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
                                    nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch(x2)), 1), 2)


class ShuffleNet(nn.Module):
    """Two ShuffleNet-V2 units between a stem and a head."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = cbr(3, 8)
        self.units = nn.Sequential(ShuffleUnit(8), ShuffleUnit(8))
        self.head = cbr(8, 16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.units(self.stem(x))).mean((2, 3)))


#: name → (builder, example input shape)
ARCHITECTURES = {
    "residual": (ResidualNet, (4, 3, 8, 8)),
    "concat": (ConcatNet, (4, 3, 8, 8)),
    "depthwise": (DepthwiseNet, (4, 3, 8, 8)),
    "grouped": (GroupedNet, (4, 3, 8, 8)),
    "mlp": (MLP, (4, 20)),
}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model
