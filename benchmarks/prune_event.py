"""Cost of one pruning event on torchvision ResNet-50 (CPU): graph build, removal, optimizer surgery.

Per repetition, on a freshly built ``resnet50(weights=None)`` with a 1x3xSxS input:

* ``graph_build`` — ``ChannelGroups(model, x)`` (torch-pruning dependency graph + earlyprune's groups/cost model);
* ``event_sgd`` / ``event_adam`` — ``PruningEngine(groups).apply(plan, optimizer)`` only, with an SGD-momentum
  or an Adam optimizer whose state was populated by one training step; the plan is
  ``select(groups, magnitude_scores, 0.5)`` made beforehand (not timed);
* ``event_none`` — the same with ``optimizer=None``: the difference is the optimizer-state surgery;
* ``iterative_8_sgd`` — a PaT-style iterative event: 8 exponentially scheduled steps
  (``iterative_amounts(0.5, 8)``), each rescoring (magnitude), selecting and applying with the SGD optimizer;
  total time of the 8 steps (scoring + selection + removal + surgery), graph already built.

Reports the median (and the minimum) over ``--reps`` repetitions, each on a fresh model; the graph-build
median pools the three optimizer variants (3 x reps builds).

    python benchmarks/prune_event.py [--reps 3] [--size 224] [--threads 1] [--out benchmarks/results/prune_event.json]
"""

from __future__ import annotations

import argparse
from importlib.metadata import version as _version
import datetime as _dt
import json
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import earlyprune as ep
from earlyprune.core import timing
from earlyprune.criteria import CRITERIA
from earlyprune.surgery.engine import PruningEngine
from earlyprune.planning.selection import iterative_amounts, select

HERE = Path(__file__).resolve().parent
RATIO = 0.5


def fresh(size: int, opt_kind: str | None, seed: int = 0):
    import torchvision
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None)
    x = torch.randn(2, 3, size, size)  # batch 2: BatchNorm trains on it; tracing is per example anyway
    y = torch.randint(0, 1000, (2,))
    opt = None
    if opt_kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    elif opt_kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if opt is not None:  # populate the state with one step
        model.train()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, x[:1], opt


def one_event(size: int, opt_kind: str | None) -> dict:
    model, x, opt = fresh(size, opt_kind)
    with timing.Stopwatch() as clock:
        groups = ep.ChannelGroups(model, x)
    graph_s = clock.seconds
    crit = CRITERIA.build("magnitude")
    plan = select(groups, crit.scores(groups), RATIO)
    params_before = sum(p.numel() for p in model.parameters())
    engine = PruningEngine(groups)
    with timing.Stopwatch() as clock:
        engine.apply(plan, opt)
    event_s = clock.seconds
    if opt is not None:  # sanity: the surgery left a consistent optimizer
        current = {id(p) for p in model.parameters()}
        for g in opt.param_groups:
            for p in g["params"]:
                assert id(p) in current
                for v in opt.state[p].values():
                    assert not torch.is_tensor(v) or v.dim() == 0 or v.shape == p.shape
    return {"graph_build_s": graph_s, "event_s": event_s, "groups": len(groups),
            "channels_removed": plan.n_removed,
            "params_before": params_before, "params_after": sum(p.numel() for p in model.parameters())}


def iterative_event(size: int, steps: int = 8) -> dict:
    model, x, opt = fresh(size, "sgd")
    groups = ep.ChannelGroups(model, x)
    engine = PruningEngine(groups)
    crit = CRITERIA.build("magnitude")
    per_step = []
    with timing.Stopwatch() as total:
        for amount in iterative_amounts(RATIO, steps):
            with timing.Stopwatch() as clock:
                plan = select(groups, crit.scores(groups), amount)
                engine.apply(plan, opt)
                crit.reset()
            per_step.append(clock.seconds)
    return {"total_s": total.seconds, "per_step_s": per_step,
            "amounts": iterative_amounts(RATIO, steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=224, help="input height/width used to trace the model")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--out", default=str(HERE / "results" / "prune_event.json"))
    args = ap.parse_args()

    import torch_pruning  # noqa: F401
    import torchvision

    if args.threads:
        torch.set_num_threads(args.threads)

    raw: dict[str, list[dict]] = {"none": [], "sgd": [], "adam": [], "iterative_8_sgd": []}
    for rep in range(args.reps):
        for kind in ("none", "sgd", "adam"):
            r = one_event(args.size, None if kind == "none" else kind)
            raw[kind].append(r)
            print(f"rep {rep} optimizer={kind:<5} graph {r['graph_build_s']:.3f}s  event {r['event_s']:.3f}s",
                  flush=True)
        r = iterative_event(args.size)
        raw["iterative_8_sgd"].append(r)
        print(f"rep {rep} iterative 8 steps (sgd) {r['total_s']:.3f}s", flush=True)

    med = statistics.median
    graph = [r["graph_build_s"] for k in ("none", "sgd", "adam") for r in raw[k]]
    summary = {
        "graph_build_s": med(graph),
        "event_none_s": med(r["event_s"] for r in raw["none"]),
        "event_sgd_s": med(r["event_s"] for r in raw["sgd"]),
        "event_adam_s": med(r["event_s"] for r in raw["adam"]),
        "iterative_8_sgd_total_s": med(r["total_s"] for r in raw["iterative_8_sgd"]),
    }
    best = {
        "graph_build_s": min(graph),
        "event_none_s": min(r["event_s"] for r in raw["none"]),
        "event_sgd_s": min(r["event_s"] for r in raw["sgd"]),
        "event_adam_s": min(r["event_s"] for r in raw["adam"]),
        "iterative_8_sgd_total_s": min(r["total_s"] for r in raw["iterative_8_sgd"]),
    }
    summary["surgery_overhead_sgd_s"] = summary["event_sgd_s"] - summary["event_none_s"]
    summary["surgery_overhead_adam_s"] = summary["event_adam_s"] - summary["event_none_s"]
    first = raw["none"][0]
    result = {
        "date": _dt.date.today().isoformat(), "machine": "2-core CPU", "torch": torch.__version__,
        "torchvision": torchvision.__version__, "torch_pruning": _version("torch-pruning"),
        "python": sys.version.split()[0], "threads": torch.get_num_threads(),
        "load_avg_1m_at_end": os.getloadavg()[0],  # other processes on the 2 cores inflate the times
        "model": "resnet50", "input": [1, 3, args.size, args.size], "ratio": RATIO, "criterion": "magnitude",
        "reps": args.reps, "groups": first["groups"], "channels_removed": first["channels_removed"],
        "params_before": first["params_before"], "params_after": first["params_after"],
        "median": summary, "min": best, "raw": raw,
        "command": f"python benchmarks/prune_event.py --reps {args.reps} --size {args.size} --threads {args.threads}",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
