"""Pruning before training (3SP): score the channels of the freshly initialised network on one minibatch, remove
80 % of its MACs, and train only the small network — next to the same network trained dense.

3SP (Single-Shot Structured Pruning) scores every channel by |∂L/∂M|, the gradient of the loss with respect to a
mask on the channel's output (criterion "snip"); "compute-aware" divides each score by the channel's smoothed
share of the MACs (compute_aware=λ), so expensive early layers are pruned harder; rescale=True restores the
initialisation's variance in the layers that lost inputs. Then the pruned model trains like any model: build the
optimizer after pruning.

    python examples/prune_before_training.py            # 43 s on a 2-core CPU, 1 thread (2026-11-30)
    EARLYPRUNE_EXAMPLE_TINY=1 python examples/prune_before_training.py

See docs/pruning-before-training.md (CroP-S, CroPit / SNAP-it, doing it inside EarlyPruner with policy "before").
"""

import copy
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import earlyprune

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"
EPOCHS, N_TRAIN, WIDTH = (2, 512, 8) if TINY else (8, 4096, 32)
torch.manual_seed(0)


def make_data(n: int, seed: int, classes: int = 10, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images of 10 smooth class templates (no download)."""
    templates = F.avg_pool2d(torch.randn(classes, 3, size, size, generator=torch.Generator().manual_seed(1)), 5, 1, 2)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return templates[y] + 1.2 * torch.randn(n, 3, size, size, generator=g), y


class SmallCNN(nn.Module):
    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        layers, c_in = [], 3
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor
          ) -> tuple[float, float]:
    """Plain training; returns (test accuracy, seconds)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)  # after pruning
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(y)).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    return acc, seconds


def main() -> None:
    x_train, y_train = make_data(N_TRAIN, seed=0)
    x_test, y_test = make_data(2000, seed=1)
    dense = SmallCNN(WIDTH)
    pruned = copy.deepcopy(dense)  # the same initial weights, so the comparison is fair

    # 3SP + compute-aware: one minibatch of 256 scores the channels at initialisation
    result = earlyprune.prune(pruned, x_train[:2], 0.8, criterion="snip", target="flops",
                              batches=[(x_train[:256], y_train[:256])], loss_fn=F.cross_entropy,
                              compute_aware=0.05, rescale=True)
    print(f"pruned before training: MACs {result.before.macs:,} -> {result.after.macs:,} per image "
          f"({1 - result.after.macs / result.before.macs:.0%} fewer), parameters {result.before.params:,} -> "
          f"{result.after.params:,}; channels kept per group: {result.structure}")

    acc_dense, t_dense = train(dense, x_train, y_train, x_test, y_test)
    acc_pruned, t_pruned = train(pruned, x_train, y_train, x_test, y_test)
    print(f"dense : test accuracy {acc_dense:6.2%} after {EPOCHS} epochs, {t_dense:5.1f} s")
    print(f"pruned: test accuracy {acc_pruned:6.2%} after {EPOCHS} epochs, {t_pruned:5.1f} s "
          f"({t_dense / t_pruned:.2f}x faster)")


if __name__ == "__main__":
    main()
