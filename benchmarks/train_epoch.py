"""Time per epoch of `earlyprune train` on the shared CIFAR-10 copy (CPU), and the data pipeline alone.

Runs the real trainer (the same code path as ``earlyprune train``) for one dense epoch of CIFAR ResNet-20 on
``folder:/work/shared/data/cifar10-jpeg.zip`` in each requested mode, and reports the training seconds of the
epoch (evaluation excluded), images/s and the evaluation seconds on the 10,000 test images. Before that it times
the input pipeline alone — :class:`~earlyprune.training.data.BatchLoader` with pad-4 crop, flip and
normalisation — to show it is not the bottleneck. The decoded images come from the ``.npz`` cache when present.

    python benchmarks/train_epoch.py [--subset 50000] [--modes bf16+cl fp32] [--threads 2]
        [--out benchmarks/results/train_epoch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from earlyprune.core import timing
from earlyprune.training import TrainConfig, train
from earlyprune.training.data import BatchLoader, load_dataset

DATA = "folder:/work/shared/data/cifar10-jpeg.zip"


def loader_rate(data, batch_size: int = 128, batches: int = 100) -> float:
    loader = BatchLoader(data.train_x, data.train_y, batch_size, data.mean, data.std, augment=True, shuffle=True)
    it = iter(loader)
    next(it)
    n = 0
    with timing.Stopwatch(data.train_x.device) as clock:
        for _ in range(batches):
            x, _ = next(it)
            n += len(x)
    return n / clock.seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", type=int, default=50_000, help="training images per epoch (50,000 = a full epoch)")
    ap.add_argument("--modes", nargs="+", default=["bf16+cl", "fp32"], help="fp32, bf16, and +cl for channels_last")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/train_epoch.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with timing.Stopwatch() as clock:
        data = load_dataset(DATA)
    load_seconds = clock.seconds
    result = {"benchmark": "train_epoch", "date": "2026-11-21",
              "machine": f"{os.cpu_count()}-core CPU, no GPU, shared with other engineers' jobs (noisy)",
              "torch": torch.__version__, "threads": args.threads, "data": DATA, "model": "resnet20",
              "batch_size": 128, "train_images": min(args.subset, len(data.train_y)),
              "dataset_load_seconds": load_seconds, "loader_images_per_s": loader_rate(data), "runs": {}}
    print(f"dataset load {load_seconds:.1f}s, input pipeline alone {result['loader_images_per_s']:,.0f} img/s")
    for mode in args.modes:
        precision, _, cl = mode.partition("+")
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(model="resnet20", dataset=DATA, epochs=1, batch_size=128, policy="never",
                              precision=precision, channels_last=cl == "cl", device="cpu", threads=args.threads,
                              train_subset=args.subset if args.subset < 50_000 else None, out_dir=tmp, name="bench",
                              progress="log")
            run = train(cfg, log=print)
        row = run.rows[0]
        result["runs"][mode] = {"epoch_seconds": row["seconds"], "images_per_s": row["images_per_second"],
                                "eval_seconds": row["eval_seconds"], "test_accuracy_after_1_epoch": row["test_accuracy"],
                                "command": f"earlyprune train --model resnet20 --dataset {DATA} --epochs 1 --policy never "
                                           f"--precision {precision}{' --channels-last' if cl else ''} --threads "
                                           f"{args.threads}"
                                           + (f" --train-subset {args.subset}" if args.subset < 50_000 else "")}
        print(mode, json.dumps(result["runs"][mode]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
