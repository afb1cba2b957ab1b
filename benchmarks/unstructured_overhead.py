"""Per-step cost of weight masks: a training step on a masked model against the same step on the dense model.

Three variants of one model, built from the same weights: **dense** (no mask), **parametrize** (earlyprune's
masks: ``torch.nn.utils.parametrize`` with ``where(mask, θ, 0)``), and **nn.utils.prune** (PyTorch's other
mechanism, ``weight_orig * weight_mask`` in a forward pre-hook) for comparison — all at 90 % weight sparsity,
which changes nothing for dense kernels. One step: forward, cross-entropy, backward, SGD-momentum step (the
trainer's). Each round times one step of every variant, in an order rotated per round, on one thread, by the
process CPU time (``earlyprune.core.timing``, one thread: on a shared machine, time spent descheduled is not
counted; wall-clock ratios are recorded too); reported: median over rounds of the paired ratio masked / dense, its inter-quartile
range, and the median milliseconds.

    python benchmarks/unstructured_overhead.py [--rounds 30] [--threads 1]
        [--out benchmarks/results/unstructured_overhead.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
from datetime import date
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from earlyprune.core import timing
from earlyprune.graph.masks import prunable_weights
from earlyprune.models import create_model
from earlyprune.unstructured import MaskedWeights, select_weights
from earlyprune.unstructured.criteria import RandomU

HERE = Path(__file__).resolve().parent


class MLP(nn.Module):
    """A linear-heavy model: where a per-layer elementwise mask costs the most relative to the matmuls."""

    def __init__(self, width: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(128, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x)


CASES = {
    "resnet20 (CIFAR, 0.27 M params), batch 128 × 32²": (lambda: create_model("resnet20", num_classes=10),
                                                          (128, 3, 32, 32)),
    "resnet18, width 16 (0.7 M params), batch 64 × 32²": (lambda: create_model("resnet18", num_classes=10,
                                                                            width=16),
                                                              (64, 3, 32, 32)),
    "vgg16 (CIFAR, 15 M params), batch 32 × 32²": (lambda: create_model("vgg16", num_classes=10), (32, 3, 32, 32)),
    "MLP 128-512-512-512-10 (0.6 M params), batch 256": (MLP, (256, 128)),
}


def variants(build, sparsity: float) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    dense = build()
    masked = copy.deepcopy(dense)
    weights = MaskedWeights(masked)
    keep = select_weights(weights, RandomU(0).scores(weights), sparsity).keep
    weights.apply(keep)
    pruned = copy.deepcopy(dense)
    for name, module, attr in prunable_weights(pruned):
        torch_prune.custom_from_mask(module, attr, keep[name])
    return {"dense": dense, "parametrize": masked, "nn.utils.prune": pruned}


def step_fn(model: nn.Module, shape: tuple[int, ...]):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    y = torch.randint(0, 10, (shape[0],), generator=g)

    train = timing.train_step(model, opt, x, y)

    def step() -> tuple[float, float]:
        t = timing.measure(train, repeats=1, warmup=0, cpu=True)   # one step: CPU and wall seconds of the same run
        return t.cpu_seconds, t.seconds
    return step


def measure(build, shape, rounds: int, sparsity: float) -> dict:
    models = variants(build, sparsity)
    steps = {k: step_fn(m, shape) for k, m in models.items()}
    names = list(steps)
    for _ in range(3):  # warm-up
        for k in names:
            steps[k]()
    cpu: dict[str, list[float]] = {k: [] for k in names}
    wall: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            c, w = steps[k]()
            cpu[k].append(c)
            wall[k].append(w)
    out = {"ms": {k: 1e3 * statistics.median(v) for k, v in cpu.items()},
           "wall_ms": {k: 1e3 * statistics.median(v) for k, v in wall.items()}}
    for k in names[1:]:
        for label, times in (("", cpu), ("wall ", wall)):
            ratios = sorted(a / b for a, b in zip(times[k], times["dense"]))
            q = len(ratios) // 4
            out[f"{label}{k} / dense"] = {"median": statistics.median(ratios), "q1": ratios[q], "q3": ratios[-q - 1]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--out", type=Path, default=HERE / "results" / "unstructured_overhead.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {"date": date.today().isoformat(), "threads": args.threads, "rounds": args.rounds,
               "sparsity": args.sparsity, "torch": torch.__version__, "machine": platform.processor() or
               platform.machine(), "cases": {}}
    for name, (build, shape) in CASES.items():
        results["cases"][name] = res = measure(build, shape, args.rounds, args.sparsity)
        print(f"{name}: dense {res['ms']['dense']:.1f} ms, "
              + ", ".join(f"{k} {v['median']:.3f}x [{v['q1']:.3f}, {v['q3']:.3f}]" for k, v in res.items()
                          if "ms" not in k), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
