"""Training throughput of the `earlyprune train` step on this CPU: CIFAR ResNet-20, fp32 vs bf16, with and
without channels_last, measured side by side.

One step is exactly the trainer's (minus the pruner, which does nothing per batch in a dense run without
signals): a batch from :class:`~earlyprune.training.data.BatchLoader` (pad-4 crop + flip + normalise, included
in the time), forward under the run's autocast, cross-entropy, backward, SGD-momentum step, LR-schedule step.
Four modes — fp32, bf16, fp32 + channels_last, bf16 + channels_last — each with its own freshly built model,
warmed up first, then timed in interleaved blocks (``round r: mode 1, mode 2, mode 3, mode 4``) so that the
noise of a shared machine hits every mode alike. Reported per mode: median images/s over the blocks and the
inter-quartile range.

    python benchmarks/train_speed.py [--data folder:/work/shared/data/cifar10-jpeg.zip] [--rounds 8]
        [--steps 5] [--batch-size 128] [--threads 2] [--out benchmarks/results/train_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from earlyprune.core import timing
from earlyprune.models import create_model
from earlyprune.training.config import TrainConfig
from earlyprune.training.data import BatchLoader, load_dataset
from earlyprune.training.optim import build_optimizer, build_scheduler
from earlyprune.training.precision import Precision

DATE = "2026-11-21"
MODES = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


class Mode:
    def __init__(self, precision: str, channels_last: bool, data, batch_size: int) -> None:
        torch.manual_seed(0)
        self.name = precision + (" + channels_last" if channels_last else "")
        cfg = TrainConfig(model="resnet20", epochs=10, batch_size=batch_size, precision=precision,
                          channels_last=channels_last, device="cpu", policy="never").resolved()
        self.model = create_model("resnet20", num_classes=data.num_classes)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loader = BatchLoader(data.train_x, data.train_y, batch_size, data.mean, data.std, augment=True,
                                  shuffle=True, channels_last=channels_last)
        self.opt = build_optimizer(self.model.parameters(), cfg)
        self.sched = build_scheduler(self.opt, cfg, len(self.loader))
        self.precision = Precision(precision, torch.device("cpu"))
        self.loss_fn = nn.CrossEntropyLoss()
        self.batches = iter(self.loader)
        self.batch_size = batch_size

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> None:
        """One training step as the trainer takes it (next batch, autocast, LR schedule)."""
        x, y = self._next()
        self.opt.zero_grad(set_to_none=True)
        with self.precision.autocast():
            loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.sched.step()

    def block(self, steps: int) -> float:
        """Images per second over ``steps`` training steps."""
        return self.batch_size / timing.time_once(self.step, device=self.precision.device, number=steps)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="folder:/work/shared/data/cifar10-jpeg.zip")
    ap.add_argument("--cache", default="auto", help="decoded-image cache for folder data")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, cache=args.cache).subset(10_000)
    modes = [Mode(p, cl, data, args.batch_size) for p, cl in MODES]
    for m in modes:
        for _ in range(args.warmup):  # untimed: kernel selection, allocator
            m.step()
    rates: dict[str, list[float]] = {m.name: [] for m in modes}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for m in modes:
            rates[m.name].append(m.block(args.steps))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    result = {
        "benchmark": "train_speed", "date": DATE, "machine": f"{os.cpu_count()}-core {cpu_name()}, no GPU, shared "
        f"with other engineers' jobs (noisy)", "torch": torch.__version__, "threads": args.threads,
        "model": "resnet20", "data": args.data, "batch_size": args.batch_size, "steps_per_block": args.steps,
        "rounds": args.rounds, "seconds": time.perf_counter() - t0,
        "modes": {k: {"images_per_s_median": statistics.median(v),
                      "images_per_s_iqr": [statistics.quantiles(v, n=4)[0], statistics.quantiles(v, n=4)[2]],
                      "blocks": v} for k, v in rates.items()},
    }
    base = result["modes"]["fp32"]["images_per_s_median"]
    for k, v in result["modes"].items():
        v["vs_fp32"] = v["images_per_s_median"] / base
        print(f"{k:28} {v['images_per_s_median']:7.0f} img/s  (IQR {v['images_per_s_iqr'][0]:.0f}-"
              f"{v['images_per_s_iqr'][1]:.0f})  {v['vs_fp32']:.2f}x fp32")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
