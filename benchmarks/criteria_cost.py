"""Cost of computing each importance criterion, relative to one training step of the same model and batch.

For each model (CIFAR ResNet-20 and the small CNN, 32×32 inputs, batch ``--batch``), one *round* times, side by
side on the same machine state:

* ``train_step`` — ``zero_grad``, forward, cross-entropy, backward, SGD-momentum step;
* every criterion's per-batch cost as the pruner pays it:
  ``taylor`` — ``observe()`` after the training step's backward (reads ``.grad``: no pass of its own);
  ``snip``, ``crop``, ``crop:mixed``, ``grasp`` — ``observe(groups, batch)`` (their own forward/backward passes);
  ``magnitude``, ``l1``, ``bn_scale``, ``random`` — ``compute(groups)`` (weights only);
  ``snip+ca`` — ``ComputeAware(snip)``: observe + ``scores()`` (the division by costs included);
* ``latency_table`` — building :class:`LatencyTable` for the model from an empty cache (a one-time cost of
  ``latency_aware=True``), timed once per model after the rounds.

Every criterion is timed right after a training step of its own, and its ratio to that step is taken; the
median over ``--rounds`` rounds (after ``--warmup`` untimed rounds) is reported: ratios of adjacent measurements
survive a noisy, shared machine better than absolute times.

    python benchmarks/criteria_cost.py [--rounds 5] [--warmup 1] [--batch 64] [--threads 1]
                                       [--out benchmarks/results/criteria_cost.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
from importlib.metadata import version as _version
from pathlib import Path

import torch
import torch.nn.functional as F

from earlyprune.criteria import CRITERIA, Batch, ComputeAware, LatencyTable
from earlyprune.criteria.latency import clear_cache
from earlyprune.graph.groups import ChannelGroups
from earlyprune.core import timing
from earlyprune.models import create_model

HERE = Path(__file__).resolve().parent
GRADIENT_OWN = ("snip", "crop", "crop:mixed", "grasp")
WEIGHT_ONLY = ("magnitude", "l1", "bn_scale", "random")


def build(name: str):
    torch.manual_seed(0)
    if name == "resnet20":
        return create_model("resnet20", num_classes=10)
    return create_model("small_cnn", num_classes=10, in_channels=3, width=32)


def bench_model(name: str, batch_size: int, rounds: int, warmup: int) -> dict:
    model = build(name).train()
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    groups = ChannelGroups(model, x[:2])
    batch = Batch(x, y, F.cross_entropy)
    crits = {n: CRITERIA.build(n) for n in ("taylor",) + GRADIENT_OWN + WEIGHT_ONLY}
    crits["snip+ca"] = ComputeAware("snip", 0.05)
    for c in crits.values():
        c.attach(groups)

    train_step = timing.train_step(model, opt, x, y)
    device = timing.device_of(model)

    def timed(fn) -> float:
        return timing.time_once(fn, device=device)

    # each criterion is timed right after its own training step (which also leaves the .grad taylor reads), and
    # its ratio is taken to that step: adjacent measurements share the machine's momentary load
    jobs = {"taylor": lambda: crits["taylor"].observe(groups)}
    jobs.update({n: (lambda n=n: crits[n].observe(groups, batch)) for n in GRADIENT_OWN})
    jobs.update({n: (lambda n=n: crits[n].compute(groups)) for n in WEIGHT_ONLY})
    jobs["snip+ca"] = lambda: (crits["snip+ca"].observe(groups, batch), crits["snip+ca"].scores(groups))
    raw: dict[str, list[float]] = {"train_step": []}
    ratios: dict[str, list[float]] = {}
    for r in range(warmup + rounds):
        for n, job in jobs.items():
            step = timing.time_train_step(train_step, device=device, clock="wall")
            t = timed(job)
            crits[n].reset()
            if r < warmup:
                continue
            raw["train_step"].append(step)
            raw.setdefault(n, []).append(t)
            ratios.setdefault(n, []).append(t / step)
    for c in crits.values():
        c.detach()
    clear_cache()
    table = LatencyTable(repeats=3, warmup=1, batch_size=batch_size)
    with timing.Stopwatch(device) as clock:
        table.savings(groups)
    latency_s = clock.seconds
    med_step = statistics.median(raw["train_step"])
    return {
        "model": name, "batch": batch_size, "groups": len(groups), "channels": sum(groups.widths()),
        "train_step_s": med_step,
        "ratio_to_train_step": {n: statistics.median(v) for n, v in ratios.items()},
        "median_s": {n: statistics.median(v) for n, v in raw.items()},
        "latency_table": {"seconds": latency_s, "train_steps": latency_s / med_step, "layer_timings": table.measured},
        "raw_s": raw,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["resnet20", "small_cnn"])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (1: fewer clashes on a shared CPU)")
    ap.add_argument("--out", default=str(HERE / "results" / "criteria_cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        res = bench_model(name, args.batch, args.rounds, args.warmup)
        results.append(res)
        lat = res["latency_table"]
        print(f"{name}: train step {res['train_step_s'] * 1e3:.1f} ms; latency table {lat['seconds']:.1f} s "
              f"({lat['train_steps']:.0f} steps)")
        for n, v in res["ratio_to_train_step"].items():
            print(f"  {n:<11} {v:6.3f} × train step")
    out = {
        "date": _dt.date.today().isoformat(),
        "machine": "2-core CPU, no GPU, shared with other work (noisy timings; ratios side by side)",
        "torch": torch.__version__, "torch_pruning": _version("torch-pruning"), "python": sys.version.split()[0],
        "threads": torch.get_num_threads(), "rounds": args.rounds, "warmup": args.warmup,
        "command": f"python benchmarks/criteria_cost.py --rounds {args.rounds} --warmup {args.warmup} "
                   f"--batch {args.batch} --threads {args.threads} "
                   f"--models {' '.join(args.models)}",
        "results": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
