"""Training-step speed of a CIFAR ResNet-20, dense vs physically pruned, measured side by side (CPU).

One training step = forward + cross-entropy + backward + SGD-momentum step, batch 128 of random 3x32x32 inputs,
train mode, ``torch.set_num_threads(2)``. Variants:

* earlyprune one-shot ``ep.prune(model, x, ratio, criterion="magnitude", round_to=r)`` on a freshly built model
  (seed 0); default: ratios 0.3 / 0.5 / 0.7 with ``round_to`` 1, 8 and 16, plus 4 at ratio 0.5
  (``ratio`` = fraction of *channels* removed), and ``target="flops"`` at 0.75 (about the MACs reduction of the
  torch-pruning reference) with ``round_to`` 1 and 8; see ``--variants``;
* the reference: torch-pruning's ``MetaPruner`` one-shot at ``pruning_ratio=0.5`` (uniform per layer, L2 magnitude,
  ``global_pruning=False``, ``ignored_layers=[model.fc]``);
* precisions fp32 and bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``);
* channels_last memory format (``--cl-variants``), against a channels_last dense model.

Timing is interleaved in one process: for every precision/format mode and every round, the blocks run
``D P1 D P2 D ... Pn D`` (D = dense, Pi = pruned variant i; a block = ``--steps`` timed training steps), so every
pruned block is flanked by two dense blocks measured within a second or so. Per round, the paired ratio is
``median(flanking dense steps) / median(pruned steps)``; the reported ``speedup`` is the **median of the paired
ratios over the rounds** (with their IQR), ``fraction_of_ideal = speedup / (dense MACs / pruned MACs)``. Also kept:
the pooled medians of all dense and pruned step times (and their ratio) and the ratio of the minimum step times —
on a shared machine, rounds where other processes compete run up to ~10x slower, which the paired ratio absorbs
and the pooled medians do not. Every model and mode gets warm-up steps first.
Rounds continue until ``--rounds`` are done or ``--budget-s`` is spent (at least ``--min-rounds``).

    python benchmarks/speed.py [--rounds 40] [--steps 1] [--budget-s 840] [--variants 0.5:1,0.5:8] [--out benchmarks/results/speed.json]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shlex
import statistics
import sys
import time
import warnings
from importlib.metadata import version as _version
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

import earlyprune as ep
from earlyprune.core import timing
from earlyprune.models import create_model

BATCH = 128
DATE = "2026-11-21"
MACHINE = "2-core CPU, no GPU"


def fresh_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet20", num_classes=10)


def widths(model: nn.Module) -> dict:
    """Kept widths of a CIFAR ResNet-20: the 3 residual streams, the 9 block-inner convs, every conv in order."""
    blocks = list(model.layers)
    n = len(blocks) // 3
    return {
        "streams": [blocks[s * n].conv2.out_channels for s in range(3)],
        "inner": [b.conv1.out_channels for b in blocks],
        "convs": [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)],
        "fc_in": model.fc.in_features,
    }


def summarise(w: dict) -> str:
    inner = w["inner"]
    return "streams " + "/".join(map(str, w["streams"])) + "; inner " + "/".join(
        ",".join(map(str, inner[i:i + 3])) for i in range(0, len(inner), 3))


def build_variants(example: torch.Tensor, specs: list[tuple[float, int, str]]) -> list[dict]:
    variants = []
    for ratio, r, target in specs:
        m = fresh_model()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ep.prune(m, example, ratio, criterion="magnitude", round_to=r, target=target)
        suffix = "" if target == "channels" else f" target={target}"
        variants.append({"name": f"ep r={ratio} round_to={r}{suffix}", "kind": "earlyprune", "ratio": ratio,
                         "round_to": r, "target": target, "model": m,
                         "warnings": [str(w.message) for w in caught]})
    m = fresh_model()
    pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=[m.fc], global_pruning=False)
    pruner.step()
    variants.append({"name": "tp MetaPruner 0.5", "kind": "torch-pruning", "ratio": 0.5, "round_to": None,
                     "target": "channels (uniform per layer)",
                     "model": m, "warnings": []})
    return variants


class Runner:
    """A model with its own SGD-momentum optimizer, stepping on fixed random data."""

    def __init__(self, model: nn.Module, channels_last: bool, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model = model.train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.y = x, y
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        self.device = timing.device_of(self.model)
        self._steps = {bf16: timing.train_step(self.model, self.opt, x, y, autocast=torch.bfloat16 if bf16 else None)
                       for bf16 in (False, True)}

    def step(self, bf16: bool) -> float:
        return timing.time_train_step(self._steps[bf16], device=self.device, clock="wall")

    def block(self, bf16: bool, steps: int) -> list[float]:
        return [self.step(bf16) for _ in range(steps)]


def q(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def src_digest() -> str:
    """SHA-256 over earlyprune's source files (the package is developed in place; this pins what was measured)."""
    root = Path(ep.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def markdown(out: dict) -> str:
    """A Markdown table of the results (as pasted into benchmarks/README.md)."""
    lines = ["| mode | variant | MACs ratio (ideal) | params ratio | dense ms | pruned ms | speedup "
             "[IQR] | of ideal | speedup of mins | kept widths |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in out["results"]:
        lo, hi = r["speedup_iqr"]
        lines.append(f"| {r['mode']} | {r['variant']} | {r['macs_ratio']:.2f} | {r['params_ratio']:.2f} "
                     f"| {r['dense_ms']:.0f} | {r['pruned_ms']:.0f} | {r['speedup']:.2f} [{lo:.2f}, {hi:.2f}] "
                     f"| {r['fraction_of_ideal']:.0%} | {r['speedup_of_mins']:.2f} | {r['widths_summary']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40, help="maximum interleaved rounds")
    ap.add_argument("--min-rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1, help="timed training steps per block")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per model and mode before timing")
    ap.add_argument("--budget-s", type=float, default=840.0, help="stop starting new rounds after this many s")
    ap.add_argument("--variants", default="0.3:1,0.3:8,0.3:16,0.5:1,0.5:4,0.5:8,0.5:16,0.7:1,0.7:8,0.7:16,0.75:1:flops,0.75:8:flops",
                    help="earlyprune variants as ratio:round_to[:target],... (target defaults to channels; the "
                         "torch-pruning reference is always added)")
    ap.add_argument("--cl-variants", default="0.5:1,0.5:8,tp",
                    help="variants also timed in channels_last (vs a channels_last dense model); '' for none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/speed.json")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (BATCH,), generator=torch.Generator().manual_seed(3))

    dense = fresh_model()
    d_stats = ep.measure(dense, example)
    specs = [(float(p[0]), int(p[1]), p[2] if len(p) > 2 else "channels")
             for p in (t.split(":") for t in args.variants.split(",") if t)]
    variants = build_variants(example, specs)
    for v in variants:
        s = ep.measure(v["model"], example)
        v["macs"], v["params"] = s.macs, s.params
        v["macs_ratio"], v["params_ratio"] = d_stats.macs / s.macs, d_stats.params / s.params
        v["widths"] = widths(v["model"])
        with torch.no_grad():
            assert v["model"].eval()(x[:4]).shape == (4, 10)
        print(f"built {v['name']:<36} MACs x{v['macs_ratio']:.2f} params x{v['params_ratio']:.2f}  "
              f"{summarise(v['widths'])}", flush=True)

    # modes: (label, bf16, channels_last, variant names in the mode)
    cl_subset = {"tp MetaPruner 0.5" if t == "tp" else "ep r={} round_to={}".format(float(t.split(":")[0]),
                 int(t.split(":")[1])) for t in args.cl_variants.split(",") if t}
    modes = [("fp32", False, False, [v["name"] for v in variants]),
             ("bf16", True, False, [v["name"] for v in variants])]
    if cl_subset:
        sub = [v["name"] for v in variants if v["name"] in cl_subset]
        modes += [("fp32+cl", False, True, sub), ("bf16+cl", True, True, sub)]

    by_name = {v["name"]: v for v in variants}
    runners: dict[tuple[str, bool], Runner] = {}  # (name, channels_last) -> runner; "dense" included
    for cl in sorted({m[2] for m in modes}):
        runners[("dense", cl)] = Runner(copy.deepcopy(dense), cl, x, y)
        for label, bf, mcl, names in modes:
            if mcl == cl:
                for n in names:
                    if (n, cl) not in runners:
                        runners[(n, cl)] = Runner(copy.deepcopy(by_name[n]["model"]), cl, x, y)

    print(f"warm-up ({args.warmup} steps x {sum(len(m[3]) + 1 for m in modes)} model-modes)...", flush=True)
    for label, bf, cl, names in modes:
        for n in ["dense"] + names:
            runners[(n, cl)].block(bf, args.warmup)
    print(f"warm-up done at {time.perf_counter() - t_start:.0f}s", flush=True)

    # raw[mode][name] = list of rounds; each round: {"pruned": [...], "dense_before": [...], "dense_after": [...]}
    raw: dict[str, dict[str, list[dict]]] = {m[0]: {n: [] for n in m[3]} for m in modes}
    dense_raw: dict[str, list[list[float]]] = {m[0]: [] for m in modes}
    rounds_done = 0
    round_load = []
    t_loop = time.perf_counter()
    while rounds_done < args.rounds:
        elapsed = time.perf_counter() - t_start
        per_round = (time.perf_counter() - t_loop) / rounds_done if rounds_done else 0.0
        if rounds_done >= args.min_rounds and elapsed + per_round > args.budget_s:
            break
        for label, bf, cl, names in modes:
            d_runner = runners[("dense", cl)]
            prev = d_runner.block(bf, args.steps)
            dense_raw[label].append(prev)
            for n in names:
                p = runners[(n, cl)].block(bf, args.steps)
                nxt = d_runner.block(bf, args.steps)
                dense_raw[label].append(nxt)
                raw[label][n].append({"pruned": p, "dense_before": prev, "dense_after": nxt})
                prev = nxt
        rounds_done += 1
        round_load.append(os.getloadavg()[0])
        med = statistics.median(t for blk in dense_raw["fp32"] for t in blk)
        print(f"round {rounds_done} done at {time.perf_counter() - t_start:.0f}s "
              f"(dense fp32 median so far {med * 1e3:.0f} ms, load {os.getloadavg()[0]:.2f})", flush=True)

    results = []
    for label, bf, cl, names in modes:
        d_all = [t for blk in dense_raw[label] for t in blk]
        for n in names:
            v = by_name[n]
            rows = raw[label][n]
            p_times = [t for r in rows for t in r["pruned"]]
            d_times = [t for r in rows for t in r["dense_before"] + r["dense_after"]]
            paired = [statistics.median(r["dense_before"] + r["dense_after"]) / statistics.median(r["pruned"])
                      for r in rows]
            p_med, d_med = statistics.median(p_times), statistics.median(d_times)
            speedup = statistics.median(paired)  # robust to rounds where other processes slowed the machine
            results.append({
                "variant": n, "mode": label, "bf16": bf, "channels_last": cl, "kind": v["kind"],
                "ratio": v["ratio"], "round_to": v["round_to"], "target": v["target"],
                "macs": v["macs"], "params": v["params"],
                "macs_ratio": v["macs_ratio"], "params_ratio": v["params_ratio"],
                "dense_ms": d_med * 1e3, "pruned_ms": p_med * 1e3, "speedup": speedup,
                "fraction_of_ideal": speedup / v["macs_ratio"],
                "speedup_of_pooled_medians": d_med / p_med,
                "speedup_iqr": [q(paired, 0.25), q(paired, 0.75)],
                "pruned_min_ms": min(p_times) * 1e3, "dense_min_ms": min(d_times) * 1e3,
                "speedup_of_mins": min(d_times) / min(p_times),
                "fraction_of_ideal_of_mins": min(d_times) / min(p_times) / v["macs_ratio"],
                "raw_round_medians_ms": [{"pruned": statistics.median(r["pruned"]) * 1e3,
                                          "dense_flank": statistics.median(r["dense_before"] + r["dense_after"]) * 1e3}
                                         for r in rows],
                "widths": v["widths"], "widths_summary": summarise(v["widths"]),
            })
        print(f"\n== {label}: dense median {statistics.median(d_all) * 1e3:.0f} ms over {len(d_all)} steps")
        print(f"{'variant':<36} {'MACs x':>6} {'par x':>6} {'dense':>7} {'pruned':>7} {'speedup':>7} "
              f"{'[IQR]':>13} {'pooled':>6} {'of ideal':>8} {'min-spd':>7} {'of ideal':>8}")
        for r in results:
            if r["mode"] != label:
                continue
            lo, hi = r["speedup_iqr"]
            print(f"{r['variant']:<36} {r['macs_ratio']:>6.2f} {r['params_ratio']:>6.2f} {r['dense_ms']:>7.0f} "
                  f"{r['pruned_ms']:>7.0f} {r['speedup']:>7.2f} "
                  f"[{lo:.2f},{hi:.2f}] {r['speedup_of_pooled_medians']:>6.2f} {r['fraction_of_ideal']:>7.0%} {r['speedup_of_mins']:>7.2f} "
                  f"{r['fraction_of_ideal_of_mins']:>7.0%}")

    dense_modes = {}
    for label, bf, cl, names in modes:
        d_all = [t for blk in dense_raw[label] for t in blk]
        dense_modes[label] = {"median_ms": statistics.median(d_all) * 1e3, "min_ms": min(d_all) * 1e3,
                              "n_steps": len(d_all)}
    out = {
        "benchmark": "speed", "date": DATE, "machine": MACHINE,
        "torch": torch.__version__, "torch_pruning": _version("torch-pruning"), "earlyprune": ep.__version__,
        "python": sys.version.split()[0], "threads": torch.get_num_threads(),
        "earlyprune_src_sha256": src_digest(),
        "command": "python " + shlex.join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        "settings": {"batch": BATCH, "input": [3, 32, 32], "model": "resnet20 (CIFAR, 16/32/64)",
                     "optimizer": "SGD(lr=1e-3, momentum=0.9, weight_decay=5e-4)", "steps_per_block": args.steps,
                     "warmup_steps": args.warmup, "rounds": rounds_done, "seed": 0,
                     "schedule": "per mode and round: D P1 D P2 ... Pn D (blocks of steps_per_block steps)"},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "loadavg_1min_after_each_round": round_load,
        "wall_s": time.perf_counter() - t_start,
        "dense": {"macs": d_stats.macs, "params": d_stats.params, "widths": widths(dense), "modes": dense_modes},
        "prune_warnings": {v["name"]: v["warnings"] for v in variants if v["warnings"]},
        "results": results,
    }
    print("\n" + markdown(out))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path} ({rounds_done} rounds, {out['wall_s']:.0f}s, load {load_before[0]:.2f} -> "
          f"{out['loadavg_after'][0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
