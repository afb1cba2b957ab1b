"""``earlyprune demo``: early pruning on scikit-learn's bundled 8×8 digits, in under a minute on a laptop CPU.

A small CNN trains dense for a few epochs, the ``epoch:K`` policy prunes half of its channels during epoch K
(in a few iterative steps), and the smaller model trains on. The summary compares accuracy, size, MACs and
time per epoch before and after pruning. This file is also a compact example of :class:`EarlyPruner` inside a
plain training loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .metrics import ModelStats
from .models import create_model
from .pruner import EarlyPruner


@dataclass
class DemoResult:
    dense_accuracy: float      #: test accuracy at the end of the last dense epoch
    final_accuracy: float
    dense_stats: ModelStats
    final_stats: ModelStats
    dense_epoch_seconds: float
    sparse_epoch_seconds: float
    prune_epoch: int
    epochs: list[dict]


def load_digits_tensors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as (x_train, y_train, x_test, y_test); 80/20 split, pixels scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("earlyprune demo needs scikit-learn for its bundled digits: pip install 'earlyprune[demo]'")
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).sum().item()
    model.train()
    return correct / len(y)


def run_demo(epochs: int = 12, ratio: float = 0.5, prune_epoch: int = 4, criterion: str = "magnitude",
             steps: int = 4, batch_size: int = 64, width: int = 64, seed: int = 0,
             log: Callable[[str], None] = print) -> DemoResult:
    """Train the demo CNN on digits with early pruning and return what happened."""
    if epochs <= prune_epoch:
        raise ValueError(f"epochs ({epochs}) must exceed prune_epoch ({prune_epoch}) so the pruned model trains on")
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_tensors(seed)
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    batches = (len(y_train) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches)
    pruner = EarlyPruner(model, x_train[:batch_size], ratio, criterion=criterion, policy=f"epoch:{prune_epoch}",
                         optimizer=optimizer, steps=steps, steps_per_epoch=batches)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    dense_acc = 0.0
    log(f"digits: {len(y_train)} train / {len(y_test)} test images, small CNN (width {width}), "
        f"{criterion} criterion, prune {ratio:.0%} of channels during epoch {prune_epoch}")
    for epoch in range(epochs):
        phase = pruner.phase
        t0 = time.perf_counter()
        total, n = 0.0, 0
        for idx in torch.randperm(len(y_train), generator=gen).split(batch_size):
            xb, yb = x_train[idx], y_train[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            pruner.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        seconds = time.perf_counter() - t0
        pruner.epoch_end()
        acc = _accuracy(model, x_test, y_test)
        if phase == "dense":
            dense_acc = acc
        params = sum(p.numel() for p in model.parameters())
        rows.append({"epoch": epoch, "phase": phase, "loss": total / n, "accuracy": acc, "seconds": seconds,
                     "params": params})
        log(f"epoch {epoch:2d}  {phase:<7}  loss {total / n:.3f}  test acc {acc:6.2%}  params {params:>7,}  "
            f"{seconds:5.2f}s")
    dense_secs = [r["seconds"] for r in rows if r["phase"] == "dense"]
    sparse_secs = [r["seconds"] for r in rows if r["phase"] == "sparse"]
    return DemoResult(dense_accuracy=dense_acc, final_accuracy=rows[-1]["accuracy"],
                      dense_stats=pruner.dense_stats, final_stats=pruner.stats(),
                      dense_epoch_seconds=_median(dense_secs[1:] or dense_secs),  # epoch 0 includes warm-up
                      sparse_epoch_seconds=_median(sparse_secs), prune_epoch=int(pruner.prune_epoch), epochs=rows)


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def summary(result: DemoResult) -> str:
    d, f = result.dense_stats, result.final_stats
    speed = result.dense_epoch_seconds / result.sparse_epoch_seconds if result.sparse_epoch_seconds else float("nan")
    return "\n".join([
        "",
        f"{'':26}{'before pruning':>16}{'after pruning':>16}",
        f"{'test accuracy':26}{result.dense_accuracy:>16.2%}{result.final_accuracy:>16.2%}",
        f"{'parameters':26}{d.params:>16,}{f.params:>16,}",
        f"{'MACs per image':26}{d.macs:>16,}{f.macs:>16,}",
        f"{'seconds per epoch':26}{result.dense_epoch_seconds:>16.3f}{result.sparse_epoch_seconds:>16.3f}",
        "",
        f"Pruned during epoch {result.prune_epoch}: {f.params / d.params:.0%} of the parameters and "
        f"{f.macs / d.macs:.0%} of the MACs remain (node sparsity {f.node_sparsity:.0%}); every later epoch ran "
        f"{speed:.1f}x faster than a dense one.",
    ])
