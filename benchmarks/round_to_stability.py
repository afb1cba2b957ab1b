"""Does ``round_to="auto"`` give the same answer whatever else the machine is doing? CIFAR ResNet-20.

The same choice is made ``--repeats`` times in each of two conditions — the machine as found, and with
``--busy`` extra processes hammering the CPU with matrix products (a run started next to another job) — and
each time decided by two rules from the same interleaved timings:

* **new** (:func:`earlyprune.planning.rounding.decide`, what ``"auto"`` does): keep the default multiple 8 unless another is
  faster by more than 5 % in three rounds of four (paired by round);
* **old rule** on the same timings: the smallest multiple whose median time is within 1 % of the fastest median;
* **old method** (before issue 13, measured separately): each plan's layers timed one after the other (3 repeats
  + 1 warm-up per layer, the median), then the old rule.

A stable rule gives one answer across repeats and conditions. Prints and writes the choices with the paired
ratios (``benchmarks/results/round_to_stability.json``).

    python benchmarks/round_to_stability.py [--repeats 8] [--busy 2] [--rounds 5] [--batch 64]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import platform
import statistics
from datetime import date
from pathlib import Path

import torch

import earlyprune as ep
from earlyprune.criteria import CRITERIA, LatencyTable
from earlyprune.criteria.latency import clear_cache, input_shapes
from earlyprune.planning.selection import select
from earlyprune.graph.groups import ChannelGroups
from earlyprune.models import create_model
from earlyprune.core.timing import Stopwatch

HERE = Path(__file__).resolve().parent


def old_rule(seconds: dict[int, float], tolerance: float = 0.01) -> int:
    best = min(seconds.values())
    return min(r for r, t in seconds.items() if t <= best * (1 + tolerance))


def burn(stop: mp.Event) -> None:  # a competing job: one thread of matrix products until told to stop
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def old_method(args: argparse.Namespace, groups: ChannelGroups, scores: dict) -> int:
    """What round_to="auto" did before: per-candidate plans timed layer by layer (median of 3), smallest within
    1 % of the fastest."""
    clear_cache()
    table = LatencyTable(repeats=3, warmup=1, batch_size=args.batch)
    shapes = input_shapes(groups)
    seconds = {}
    for r in ep.AutoRoundTo().usable(groups):
        plan = select(groups, scores, args.ratio, round_to=r)
        seconds[r] = table.structure_latency(groups, {k: len(v) for k, v in plan.remove.items()}, shapes)
    return old_rule(seconds)


def choices(args: argparse.Namespace, groups: ChannelGroups, scores: dict) -> list[dict]:
    out = []
    for _ in range(args.repeats):
        auto = ep.AutoRoundTo(rounds=args.rounds, table=LatencyTable(warmup=1, batch_size=args.batch))
        with Stopwatch() as clock:
            choice = auto.choose(groups, scores, args.ratio)
        out.append({"new": choice.value, "rule": choice.rule, "old": old_rule(choice.seconds),
                    "old_method": old_method(args, groups, scores), "seconds": clock.seconds,
                    "median_ratio_vs_8": {str(r): round(v["median"], 4) for r, v in choice.ratios.items()},
                    "q3_ratio_vs_8": {str(r): round(v["q3"], 4) for r, v in choice.ratios.items()}})
        print(f"  new {choice.value:2d} ({choice.rule}), old rule {out[-1]['old']:2d}, old method "
              f"{out[-1]['old_method']:2d}; median t/t8 "
              + ", ".join(f"{r}: {v['median']:.3f}" for r, v in choice.ratios.items())
              + f"  ({clock.seconds:.1f} s)", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--busy", type=int, default=2, help="competing processes in the loaded condition")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=HERE / "results" / "round_to_stability.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    groups = ChannelGroups(model, torch.randn(2, 3, 32, 32))
    scores = CRITERIA.build("magnitude").scores(groups)
    results = {}
    for condition in ("as found", f"+{args.busy} busy processes"):
        print(condition, flush=True)
        stop, workers = mp.Event(), []
        if condition != "as found":
            workers = [mp.Process(target=burn, args=(stop,)) for _ in range(args.busy)]
            for w in workers:
                w.start()
        try:
            runs = choices(args, groups, scores)
        finally:
            stop.set()
            for w in workers:
                w.join()
        results[condition] = {"runs": runs,
                              "new": dict(collections.Counter(str(r["new"]) for r in runs)),
                              "old": dict(collections.Counter(str(r["old"]) for r in runs)),
                              "old_method": dict(collections.Counter(str(r["old_method"]) for r in runs)),
                              "median_choose_seconds": statistics.median(r["seconds"] for r in runs)}
        print(f"  → new: {results[condition]['new']}, old rule: {results[condition]['old']}, old method: "
              f"{results[condition]['old_method']}", flush=True)
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()} CPU, 1 thread, shared",
           "torch": torch.__version__, "command": "python benchmarks/round_to_stability.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
