"""Early pruning in your own training loop: a plain PyTorch loop plus two calls of `EarlyPruner`.

The model trains dense until the `epi` policy sees the channel ranking settle (PaT's Early Pruning Indicator),
one epoch removes half of the channels in 8 steps, and the rest of training runs on the smaller, faster model.
The optimizer (SGD with momentum) and the LR scheduler keep going across the removals: the pruner re-points the
optimizer to the new parameters and slices their momentum.

    python examples/plain_loop.py            # 44 s on a 2-core CPU, 1 thread (2026-11-30)
    EARLYPRUNE_EXAMPLE_TINY=1 python examples/plain_loop.py   # a few seconds

See docs/plain-loop.md for what each line does and the variations (other criteria, policies, DDP, AMP).
"""

import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import earlyprune

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"
EPOCHS, N_TRAIN, WIDTH = (4, 512, 8) if TINY else (12, 4096, 32)
torch.manual_seed(0)


def make_data(n: int, seed: int, classes: int = 10, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images of 10 smooth class templates (no download): hard enough that training takes a few epochs."""
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
        self.head = nn.Linear(c_in, classes)  # the output layer: detected and never pruned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(500), y.split(500)))
    model.train()
    return correct / len(y)


def main() -> None:
    x_train, y_train = make_data(N_TRAIN, seed=0)
    x_test, y_test = make_data(2000, seed=1)
    model = SmallCNN(WIDTH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)

    # the two lines earlyprune adds: build the pruner once ...
    pruner = earlyprune.EarlyPruner(model, x_train[:2], ratio=0.5, criterion="magnitude",
                                    policy=f"epi:cap={EPOCHS // 3}", optimizer=optimizer)
    dense = pruner.stats()
    for epoch in range(EPOCHS):
        t0 = time.perf_counter()
        for idx in torch.randperm(N_TRAIN).split(64):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            pruner.step()        # ... call it after every optimizer step (prunes on schedule in the pruning epoch)
        scheduler.step()
        pruner.epoch_end()       # ... and at the end of every epoch (asks the policy)
        seconds = time.perf_counter() - t0
        phase = pruner.history[-1]["phase"]
        print(f"epoch {epoch:2d} {phase:<7} loss {loss.item():.3f}  test accuracy {accuracy(model, x_test, y_test):6.2%}"
              f"  {seconds:5.2f} s  parameters {sum(p.numel() for p in model.parameters()):,}")

    stats = pruner.stats()
    print(f"\npruning: {earlyprune.pruning_outcome(pruner, epochs=EPOCHS).describe()}")
    print(f"parameters {dense.params:,} -> {stats.params:,}, MACs {dense.macs:,} -> {stats.macs:,} per image")

    # the pruned model in one safetensors file; load() replays its structure on a freshly built original
    with tempfile.TemporaryDirectory() as tmp:
        path = earlyprune.save(model, Path(tmp) / "model.safetensors")
        again = earlyprune.load(path, SmallCNN(WIDTH)).eval()
        assert torch.equal(again(x_test[:8]), model.eval()(x_test[:8]))
        print(f"saved and reloaded {path.name}: identical outputs")


if __name__ == "__main__":
    main()
