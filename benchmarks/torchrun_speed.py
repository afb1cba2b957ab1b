"""`earlyprune train` under torchrun on this CPU: images/s with 1 and 2 processes, and the share of an epoch
spent in the pruner's score all-reduce.

Each configuration is a real `earlyprune train` run launched by torchrun (gloo, one thread per process, the same
per-process batch, so 2 processes train a global batch twice as large): CIFAR ResNet-20 on synthetic 32×32
images, pruned to 50 % of its channels (magnitude, 8 steps) during epoch 1 of 3. The two launches alternate for
``--rounds`` rounds (1, 2, 1, 2, …) so that the load of the shared machine hits both alike. Inside each rank the
pruner's ``average_scores`` (the one all-reduce of scores, at every pruning step and every dense epoch end) is
timed; its share is reported against the epoch's training time. DDP's own gradient all-reduce is part of the
step time and not separated.

    python benchmarks/torchrun_speed.py [--rounds 2] [--images 2048] [--out benchmarks/results/torchrun_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DATE = "2026-11-30"


def worker(out: str, images: int, batch: int) -> None:
    """One rank of a launch: train, time the score all-reduce, rank 0 writes the rows."""
    import earlyprune.pruner as pruner_module
    from earlyprune.core.timing import Stopwatch
    from earlyprune.training.config import TrainConfig
    from earlyprune.training.trainer import train

    spent = {"seconds": 0.0, "calls": 0}
    reduce = pruner_module.average_scores

    def timed(scores):
        with Stopwatch() as clock:
            result = reduce(scores)
        spent["seconds"] += clock.seconds
        spent["calls"] += 1
        return result

    pruner_module.average_scores = timed
    cfg = TrainConfig(model="resnet20", dataset=f"synthetic:{images}", image_size=32, epochs=3, batch_size=batch,
                      policy="epoch:1", ratio=0.5, steps=8, round_to=1, threads=1, progress="none", seed=0)
    result = train(cfg, write=False)
    if int(os.environ.get("RANK", "0")) == 0:  # (train() has closed the process group by now)
        rows = [{k: r[k] for k in ("epoch", "phase", "seconds", "images", "images_per_second")} for r in result.rows]
        Path(out).write_text(json.dumps({"rows": rows, "allreduce_seconds": spent["seconds"],
                                         "allreduce_calls": spent["calls"],
                                         "world_size": result.summary["world_size"],
                                         "agree": result.summary["ranks"]["agree"]}))


def launch(n: int, images: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), __file__,
               "--worker", out, "--images", str(images), "--batch-size", str(batch)]
        done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/torchrun_speed.json")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.images, args.batch_size)
        return
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for n in (1, 2):
            runs[n].append(launch(n, args.images, args.batch_size))
    summary = {}
    for n, results in runs.items():
        per_phase = {}
        for phase in ("dense", "pruning", "sparse"):
            per_phase[phase] = statistics.median(r["images_per_second"] for res in results for r in res["rows"]
                                                 if r["phase"] == phase)
        train_seconds = [sum(r["seconds"] for r in res["rows"]) for res in results]
        share = [res["allreduce_seconds"] / t for res, t in zip(results, train_seconds)]
        summary[n] = {"images_per_second": per_phase, "allreduce_share_of_training": statistics.median(share),
                      "allreduce_calls": results[0]["allreduce_calls"],
                      "allreduce_seconds": statistics.median(res["allreduce_seconds"] for res in results),
                      "ranks_agree": all(res["agree"] for res in results)}
        print(f"{n} process(es): images/s dense {per_phase['dense']:.0f}, pruning epoch {per_phase['pruning']:.0f}, "
              f"sparse {per_phase['sparse']:.0f}; score all-reduce {summary[n]['allreduce_seconds'] * 1e3:.1f} ms in "
              f"{summary[n]['allreduce_calls']} calls = {summary[n]['allreduce_share_of_training']:.3%} of training")
    doc = {"date": DATE, "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "images": args.images, "batch_per_process": args.batch_size, "rounds": args.rounds, "summary": summary,
           "runs": runs}
    Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
