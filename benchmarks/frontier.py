""""I have half the training time. Is pruning early better than the obvious alternatives?" — accuracy vs measured
training time on CIFAR-10 (issue 10).

For each model (ResNet-56, VGG-16) and seed, a dense reference run trains ``E`` epochs; its measured training time
``T`` (process CPU time of the training loop, the pruner and every measurement a run makes for itself; evaluation
excluded) defines the budgets ``B·T`` for ``B`` in 50 % and 30 %. Each method sets its own knob to the budget and
trains; its accuracy and measured time (pruning epoch included) go on one plot:

* (a) ``dense-short`` — the dense model for ``round(B·E)`` epochs, the LR schedule compressed to them;
* (b) ``narrow`` — a dense model with a uniform width multiplier whose measured step time is closest to ``B`` of
  the dense step (paired timings, below), ``E`` epochs;
* (c) ``tp-uniform`` — torch-pruning's ``MetaPruner`` at initialisation (L2 magnitude, the same ratio in every
  layer, ``global_pruning=False``), the ratio whose measured step time is closest to ``B`` of dense, ``E`` epochs;
* (d) ``3sp`` / ``3sp-ca`` — 3SP before training: ``snip`` on the first batch, ``1 − B`` of the MACs removed
  (3SP's own target), without and with compute-aware scores (λ = 0.05);
* (e) ``epi-channels`` — earlyprune's ``epi`` policy with PaT's channel target;
* (f) ``epi-time`` — ``epi`` with the time target (``target="latency"``);
* (g) ``init-time`` — pruning from initialisation (``init``) with the time target.

(e)–(g) use ``--time-budget B``: when the policy triggers, the ratio becomes the fraction of the step time that makes
the whole run fit ``B`` given the dense epochs already spent (:func:`earlyprune.training.speed.budget_ratio`); (e)
applies that fraction to channels, as a user of the channel target would. Every earlyprune run uses the trainer's
defaults otherwise (``round_to="auto"``, ``max_group_ratio=0.8``, magnitude criterion for (e)–(g)).

All runs: bf16 autocast + channels_last (what ``--precision auto`` / ``--channels-last auto`` choose on the machine
this was written on, fixed here so that every run is the same mode), one thread per run, ``--jobs`` runs in
parallel (one per core), each run in its own process. Times are recorded as process CPU time (the budgets and the
plot use it: it does not count the time other processes hold the cores) and wall time. The report divides by the
dense reference's training loop and charges the methods that do not prune their loop only (:data:`PRUNING`): the
alternatives a user weighs are plain training, without the signals ``earlyprune train`` records by default.

    python benchmarks/frontier.py --profile tiny            # smoke test (minutes)
    python benchmarks/frontier.py --profile full --jobs 2   # ~4-5 h on a shared 2-core CPU; resumable
    python benchmarks/frontier.py --profile full --report   # tables + plot from what has finished
    python benchmarks/frontier.py --profile long --jobs 2   # ResNet-56, 30 epochs, 50 % budget, 5 methods (~30 min a seed)

Writes ``benchmarks/results/frontier[_PROFILE].json``, ``.md`` and ``.png``; run directories under
``--runs-dir`` (default ``runs/frontier_PROFILE``, not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from earlyprune.core import timing
from earlyprune.models import create_model, register_model

HERE = Path(__file__).parent
SOURCE = Path(os.environ.get("EARLYPRUNE_CIFAR_ZIP", HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.zip"))
if not SOURCE.exists():
    SOURCE = Path("/work/shared/data/cifar10-jpeg.zip")

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"models": {"resnet56": {"train": 256, "epochs": 3}, "vgg16": {"train": 256, "epochs": 3}},
             "test": 200, "seeds": [0], "budgets": [0.5], "calibration_rounds": 1},
    "full": {"models": {"resnet56": {"train": 4000, "epochs": 10},
                        # with COMMON's lr 0.1 the dense VGG-16 stayed at chance in 10 epochs (11.6 %, 2026-11-30)
                        "vgg16": {"train": 2500, "epochs": 10, "recipe": {"lr": 0.02}}},
             "test": 2000, "seeds": [0, 1], "budgets": [0.5, 0.3], "calibration_rounds": 5},
    # full's ResNet-56 for 30 epochs instead of 10, so that the dense epochs before EPI fires are a tenth of the
    # run, not a third (PaT's runs are 90-200 epochs): does (f) beat the small models trained from the start then?
    "long": {"models": {"resnet56": {"train": 4000, "epochs": 30}}, "test": 2000, "seeds": [0, 1], "budgets": [0.5],
             "calibration_rounds": 5, "methods": ["dense-short", "narrow", "tp-uniform", "epi-time", "init-time"]},
}
#: candidate widths of (b) and torch-pruning ratios of (c), timed once per model
WIDTHS = {"resnet56": ("width", [5, 6, 7, 8, 9, 10, 11, 12, 13]),
          "vgg16": ("width_mult", [0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75])}
TP_RATIOS = [0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65]
COMMON = {"batch_size": 128, "eval_batch_size": 500, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
          "weight_decay": 5e-4, "precision": "bf16", "channels_last": "on", "compile": "off", "threads": 1,
          "progress": "log", "device": "cpu"}
METHODS = ["dense-short", "narrow", "tp-uniform", "3sp", "3sp-ca", "epi-channels", "epi-time", "init-time"]
#: the methods that prune: charged everything their run spends; the others (and the dense reference) are charged
#: their training loop only — what plain PyTorch training of that model would cost, without the signals that
#: ``earlyprune train`` records by default (with the time target they include measuring the step-time predictor)
PRUNING = {"3sp", "3sp-ca", "epi-channels", "epi-time", "init-time"}
LABELS = {"dense": "dense (reference)", "dense-short": "(a) dense, fewer epochs", "narrow": "(b) narrower dense",
          "tp-uniform": "(c) torch-pruning uniform at init", "3sp": "(d) 3SP (snip, MACs)",
          "3sp-ca": "(d) 3SP + compute-aware", "epi-channels": "(e) epi, channel target",
          "epi-time": "(f) epi, time target", "init-time": "(g) init, time target"}


# -- (c): torch-pruning's uniform pruning at initialisation, as a model of the zoo ------------------------------
@register_model("frontier_tp", "a zoo model pruned at initialisation by torch-pruning's uniform MetaPruner "
                               "(kwargs: base, ratio; benchmarks/frontier.py)")
def frontier_tp(num_classes: int = 10, in_channels: int = 3, base: str = "resnet56", ratio: float = 0.5):
    import torch_pruning as tp

    model = create_model(base, num_classes=num_classes, in_channels=in_channels)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(model, torch.randn(1, in_channels, 32, 32),
                                  importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                                  global_pruning=False, ignored_layers=[head])
    pruner.step()
    return model


# -- data ---------------------------------------------------------------------------------------------------
def subset_zip(n_train: int, n_test: int) -> Path:
    """A class-balanced CIFAR-10 subset of the shared zip (seed 0), written once."""
    out = Path.home() / ".cache" / "earlyprune" / "frontier" / f"cifar10-{n_train}-{n_test}.zip"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    with zipfile.ZipFile(SOURCE) as src:
        names = [n for n in src.namelist() if n.endswith(".jpg")]
        chosen = []
        for split, n in (("train", n_train), ("test", n_test)):
            by_class: dict[str, list[str]] = {}
            for name in names:
                if name.startswith(split + "/"):
                    by_class.setdefault(name.split("/")[1], []).append(name)
            for cls in sorted(by_class):
                files = sorted(by_class[cls])
                chosen += rng.sample(files, n // len(by_class))
        tmp = out.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
            for name in chosen:
                dst.writestr(name, src.read(name))
        tmp.replace(out)
    return out


# -- matching a step time: (b) and (c) ----------------------------------------------------------------------
def step_ratio(model: torch.nn.Module, dense: torch.nn.Module, rounds: int = 5) -> float:
    """Median over rounds of t(model) / t(dense), one bf16 + channels_last training step each, process CPU time."""
    x = torch.randn(COMMON["batch_size"], 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (COMMON["batch_size"],))
    nets = [m.to(memory_format=torch.channels_last) for m in (model, dense)]
    opts = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9) for n in nets]
    steps = [timing.train_step(n, o, x, y, autocast=torch.bfloat16) for n, o in zip(nets, opts)]
    for step in steps:
        step()
    ratios = []
    for _ in range(rounds):
        t = [timing.time_train_step(step, clock="cpu") for step in steps]
        ratios.append(t[0] / t[1])
    return statistics.median(ratios)


def calibrate(model_name: str, rounds: int = 5) -> dict[str, Any]:
    """Measured step-time ratio vs dense of every candidate width (b) and torch-pruning ratio (c)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dense = create_model(model_name, num_classes=10)
    key, widths = WIDTHS[model_name]
    out: dict[str, Any] = {"width_key": key, "narrow": {}, "tp": {}}
    for w in widths:
        out["narrow"][str(w)] = step_ratio(create_model(model_name, num_classes=10, **{key: w}), dense, rounds)
        print(f"calibrate {model_name} {key}={w}: {out['narrow'][str(w)]:.3f} of the dense step", flush=True)
    for r in TP_RATIOS:
        out["tp"][str(r)] = step_ratio(frontier_tp(base=model_name, ratio=r), dense, rounds)
        print(f"calibrate {model_name} tp ratio {r}: {out['tp'][str(r)]:.3f} of the dense step", flush=True)
    return out


def closest(measured: dict[str, float], budget: float) -> str:
    return min(measured, key=lambda k: abs(measured[k] - budget))


# -- the plan -----------------------------------------------------------------------------------------------
def plan(profile: str, calibration: dict[str, Any]) -> list[dict[str, Any]]:
    prof = PROFILES[profile]
    runs = []
    for seed, (model, spec) in [(s, item) for s in prof["seeds"] for item in prof["models"].items()]:
        data = f"folder:{subset_zip(spec['train'], prof['test'])}"
        # seed-major: every model's first seed is done before any second seed starts
        base = {**COMMON, **spec.get("recipe", {}), "model": model, "dataset": data, "epochs": spec["epochs"],
                "seed": seed}
        runs.append({"id": f"{model}-s{seed}-dense", "model": model, "seed": seed, "method": "dense",
                     "budget": 1.0, "config": {**base, "policy": "never"}})
        for b in prof["budgets"]:
            tag = f"{model}-s{seed}-b{int(b * 100)}"
            cal = calibration.get(model)
            width = closest(cal["narrow"], b) if cal else None
            tp_ratio = closest(cal["tp"], b) if cal else None
            configs = {
                "dense-short": {**base, "policy": "never", "epochs": max(1, round(b * spec["epochs"]))},
                "narrow": {**base, "policy": "never",
                           "model_args": {WIDTHS[model][0]: (int(width) if WIDTHS[model][0] == "width"
                                                             else float(width))} if width else {}},
                "tp-uniform": {**base, "model": "frontier_tp", "policy": "never",
                               "model_args": {"base": model, "ratio": float(tp_ratio or 0.5)}},
                "3sp": {**base, "policy": "before:1", "criterion": "snip", "target": "flops", "ratio": 1 - b,
                        "steps": 1},
                "3sp-ca": {**base, "policy": "before:1", "criterion": "snip", "target": "flops", "ratio": 1 - b,
                           "steps": 1, "pruner_args": {"compute_aware": 0.05}},
                "epi-channels": {**base, "policy": "epi", "target": "channels", "time_budget": b},
                "epi-time": {**base, "policy": "epi", "target": "latency", "time_budget": b},
                "init-time": {**base, "policy": "init", "target": "latency", "time_budget": b},
            }
            for method in prof.get("methods", METHODS):
                runs.append({"id": f"{tag}-{method}", "model": model, "seed": seed, "method": method, "budget": b,
                             "config": configs[method],
                             "knob": {"narrow": width, "tp-uniform": tp_ratio}.get(method)})
    return runs


# -- running ------------------------------------------------------------------------------------------------
def child(spec_path: str) -> None:
    """Train one run (or resume it) in this process and record its process CPU and wall time."""
    from earlyprune.training import TrainConfig, train
    from earlyprune.training.rundir import is_run_dir

    spec = json.loads(Path(spec_path).read_text())
    run_dir = Path(spec["run_dir"])
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    if is_run_dir(run_dir) and (run_dir / "checkpoint.json").exists():
        result = train(resume=run_dir)
    else:
        cfg = TrainConfig(**{**spec["config"], "out_dir": str(run_dir.parent), "name": run_dir.name})
        result = train(cfg)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    record = {"process_wall_s": time.perf_counter() - t0,
              "process_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
              "complete": result.summary["complete"]}
    (run_dir / "frontier_run.json").write_text(json.dumps(record))


def finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.exists() and json.loads(summary.read_text()).get("complete", False) \
        and (run_dir / "frontier_run.json").exists()


def execute(runs: list[dict[str, Any]], runs_dir: Path, jobs: int) -> None:
    pending = [r for r in runs if not finished(runs_dir / r["id"])]
    print(f"{len(runs) - len(pending)} of {len(runs)} runs done; {len(pending)} to go, {jobs} at a time", flush=True)
    active: list[tuple[subprocess.Popen, dict[str, Any], float]] = []
    while pending or active:
        while pending and len(active) < jobs:
            run = pending.pop(0)
            run_dir = runs_dir / run["id"]
            spec = runs_dir / f"{run['id']}.spec.json"
            runs_dir.mkdir(parents=True, exist_ok=True)
            spec.write_text(json.dumps({"run_dir": str(run_dir), "config": run["config"]}))
            log = open(runs_dir / f"{run['id']}.log", "a")
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",   # layer timings shared by runs
                   "EARLYPRUNE_LATENCY_CACHE": str(runs_dir / "latency_cache.json")}
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(spec)], stdout=log, stderr=log, env=env)
            active.append((proc, run, time.time()))
            print(f"start {run['id']}", flush=True)
        time.sleep(5)
        for item in list(active):
            proc, run, start = item
            if proc.poll() is not None:
                active.remove(item)
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {run['id']}.log)"
                print(f"{state} {run['id']} after {time.time() - start:.0f} s", flush=True)


# -- results ------------------------------------------------------------------------------------------------
def collect(runs: list[dict[str, Any]], runs_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        d = runs_dir / run["id"]
        if not finished(d):
            continue
        s = json.loads((d / "summary.json").read_text())
        proc = json.loads((d / "frontier_run.json").read_text())
        epochs = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        loop_cpu = sum(e["cpu_seconds"] for e in epochs)
        # what the run spent outside its training loop: pruner epoch ends (scores, signals, step-time predictor,
        # round_to=auto) and the trainer's measurements for its user (speed settings, per-step gain)
        side_cpu = sum(e.get("pruner_cpu_seconds", 0.0) + e.get("overhead_cpu_seconds", 0.0) for e in epochs)
        gain = s.get("gain") or {}
        rows.append({**{k: run[k] for k in ("id", "model", "seed", "method", "budget")}, "knob": run.get("knob"),
                     "accuracy": s["final_test_accuracy"], "train_cpu_s": s.get("train_cpu_seconds"),
                     "loop_cpu_s": loop_cpu, "side_cpu_s": side_cpu,
                     "charged_cpu_s": s.get("train_cpu_seconds") if run["method"] in PRUNING else loop_cpu,
                     "train_wall_s": s["train_seconds"], "process_cpu_s": proc["process_cpu_s"],
                     "process_wall_s": proc["process_wall_s"], "prune_epoch": s.get("prune_epoch"),
                     "ratio": s.get("ratio") if s.get("prune_epoch") is not None else None,
                     "macs": s["macs"]["final"],
                     "measured_step_speedup": gain.get("measured_speedup"),
                     "asked_step_speedup": gain.get("asked_speedup"),
                     "predicted_step_speedup": gain.get("predicted_speedup"),
                     "macs_ideal_speedup": gain.get("macs_ideal_speedup"),
                     "time_budget": s.get("time_budget"), "round_to": (s.get("round_to") or {}).get("value")
                     if isinstance(s.get("round_to"), dict) else s.get("round_to"), "epochs": s["epochs"]})
    dense = {(r["model"], r["seed"]): r for r in rows if r["method"] == "dense"}
    for r in rows:
        ref = dense.get((r["model"], r["seed"]))
        if ref:
            r["time_fraction"] = r["charged_cpu_s"] / ref["loop_cpu_s"]
            r["side_fraction"] = r["side_cpu_s"] / ref["loop_cpu_s"] if r["method"] in PRUNING else None
            r["run_fraction"] = r["train_cpu_s"] / ref["train_cpu_s"]
            r["wall_fraction"] = r["train_wall_s"] / ref["train_wall_s"]
            r["macs_kept"] = r["macs"] / ref["macs"]   # per example, against the reference dense model
    return rows


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (model, method, budget)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if "time_fraction" in r:
            groups.setdefault((r["model"], r["method"], r["budget"]), []).append(r)
    out = []
    for (model, method, budget), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][2],
                                                                                 (["dense"] + METHODS).index(kv[0][1]))):
        mean = lambda k: statistics.mean(r[k] for r in rs) if all(r.get(k) is not None for r in rs) else None
        out.append({"model": model, "method": method, "budget": budget, "seeds": len(rs),
                    "accuracy": mean("accuracy"), "accuracy_all": [r["accuracy"] for r in rs],
                    "time_fraction": mean("time_fraction"), "run_fraction": mean("run_fraction"),
                    "side_fraction": mean("side_fraction"),
                    "wall_fraction": mean("wall_fraction"),
                    "train_cpu_s": mean("train_cpu_s"), "macs_kept": mean("macs_kept"),
                    "measured_step_speedup": mean("measured_step_speedup"),
                    "asked_step_speedup": mean("asked_step_speedup"),
                    "predicted_step_speedup": mean("predicted_step_speedup"),
                    "prune_epochs": [r["prune_epoch"] for r in rs], "ratios": [r["ratio"] for r in rs],
                    "knob": rs[0].get("knob")})
    return out


def dominated(point: dict[str, Any], others: list[dict[str, Any]]) -> list[str]:
    """The points (method at budget) at least as fast and more accurate than ``point`` (the frontier test)."""
    return [f"{o['method']} {o['budget']:.0%}" for o in others if o["time_fraction"] <= point["time_fraction"] + 1e-9
            and o["accuracy"] > point["accuracy"]]


def markdown(data: dict[str, Any], agg: list[dict[str, Any]]) -> str:
    lines = [f"# Accuracy vs training time on CIFAR-10 (`benchmarks/frontier.py --profile {data['profile']}`)", "",
             f"Command: `{data['command']}`; machine: {data['machine']['cpu']}, torch {data['machine']['torch']}, "
             f"one thread per run, {data['jobs']} runs in parallel; date {data['date']}. **Time** = process CPU time "
             f"of training (evaluation excluded) as a fraction of the dense reference's training loop: a method "
             f"that prunes is charged everything its run spent (loop, pruning steps, every measurement: speed "
             f"settings, step-time predictor, per-step gain), the others only their training loop (plain training "
             f"does not record earlyprune's signals). *as run*: both sides with everything `earlyprune train` "
             f"spent; *of which outside the loop*: for the methods that prune, the part of *time* spent in the pruner's epoch ends (scores, signals, the step-time predictor, `round_to=auto`) and the trainer's measurements (speed settings, per-step gain), mostly one-time costs that a longer run amortises; *wall*: wall-time fractions, distorted by the load of other jobs on the shared machine (see "
             f"benchmarks/README.md). Mean over seeds. Accuracy = final top-1 on "
             f"{PROFILES[data['profile']]['test']} CIFAR-10 test images. *Beaten by*: the points (method and "
             f"budget) at most as slow and more accurate.", ""]
    if data.get("note"):
        lines += [data["note"], ""]
    for model in sorted({a["model"] for a in agg}):
        spec = PROFILES[data["profile"]]["models"][model]
        lines += [f"## {model} ({spec['train']} training images, {spec['epochs']} epochs)", "",
                  "| budget | method | accuracy (seeds) | time | of which outside the loop | as run | wall | MACs kept "
                  "| per-step speedup measured / asked / predicted | ratio used | prune epoch | beaten by |",
                  "|---|---|---|---:|---:|---:|---:|---:|---|---|---|---|"]
        for a in [x for x in agg if x["model"] == model]:
            others = [o for o in agg if o["model"] == model and o["method"] != "dense" and o is not a
                      and o["accuracy"] is not None and o["time_fraction"] is not None]
            beat = dominated(a, others) if a["accuracy"] is not None and a["method"] != "dense" else []
            f = lambda v, fmt: "—" if v is None else format(v, fmt)
            speed = " / ".join(f(a[k], ".2f") for k in ("measured_step_speedup", "asked_step_speedup",
                                                        "predicted_step_speedup"))
            ratios = ", ".join("—" if r is None else f"{r:.2f}" for r in a["ratios"])
            lines.append(f"| {a['budget']:.0%} | {LABELS[a['method']]}{' (' + str(a['knob']) + ')' if a['knob'] else ''}"
                         f" | {a['accuracy']:.2%} ({', '.join(f'{x:.1%}' for x in a['accuracy_all'])}) "
                         f"| {a['time_fraction']:.2f} | {f(a.get('side_fraction'), '.2f')} | {f(a['run_fraction'], '.2f')} "
                         f"| {f(a['wall_fraction'], '.2f')} "
                         f"| {f(a['macs_kept'], '.2f')} "
                         f"| {speed} | {ratios} | {', '.join(str(p) for p in a['prune_epochs'])} "
                         f"| {', '.join(beat) if beat else '—'} |")
        lines.append("")
    return "\n".join(lines)


def plot(agg: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({a["model"] for a in agg})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5.2), squeeze=False)
    markers = dict(zip(["dense"] + METHODS, "*osD^vPXh"))
    for ax, model in zip(axes[0], models):
        for method in ["dense"] + METHODS:
            pts = [a for a in agg if a["model"] == model and a["method"] == method and a["accuracy"] is not None]
            if not pts:
                continue
            xs, ys = [p["time_fraction"] for p in pts], [100 * p["accuracy"] for p in pts]
            size = 140 if method == "epi-time" else 60
            ax.scatter(xs, ys, marker=markers[method], s=size, label=LABELS[method], zorder=3,
                       edgecolors="black" if method == "epi-time" else None)
            seeds = [r for r in rows if r["model"] == model and r["method"] == method and "time_fraction" in r]
            ax.scatter([r["time_fraction"] for r in seeds], [100 * r["accuracy"] for r in seeds],
                       marker=markers[method], s=12, alpha=0.35, color=ax.collections[-1].get_facecolor()[0])
        for b in sorted({a["budget"] for a in agg if a["budget"] < 1}):
            ax.axvline(b, color="grey", ls=":", lw=1)
        ax.set_title(model)
        ax.set_xlabel("training time / dense training loop's (process CPU time)")
        ax.set_ylabel("final test accuracy (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=120)


def report(profile: str, runs_dir: Path, out: Path, data: dict[str, Any]) -> None:
    rows = collect(plan(profile, data.get("calibration", {})), runs_dir)
    agg = aggregate(rows)
    data.update(rows=rows, aggregate=agg)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    if agg:
        out.with_suffix(".md").write_text(markdown(data, agg))
        plot(agg, rows, out.with_suffix(".png"))
    print(f"{len(rows)} runs finished → {out.with_suffix('.md')}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="tiny")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--out", default=None, help="results path without suffix (default "
                                                    "benchmarks/results/frontier[_tiny])")
    parser.add_argument("--report", action="store_true", help="only write the tables and the plot")
    parser.add_argument("--note", help="a line recorded with the results and printed under the table's header "
                                       "(e.g. how the runs were made, what is missing)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    sys.path.insert(0, str(HERE))
    from step_time import cpu_model

    runs_dir = Path(args.runs_dir or f"runs/frontier_{args.profile}")
    out = Path(args.out or HERE / "results" / ("frontier" if args.profile == "full" else f"frontier_{args.profile}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    data.setdefault("command", "python benchmarks/frontier.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    data.update(profile=args.profile, jobs=args.jobs, date=data.get("date", time.strftime("%Y-%m-%d")),
                machine={"cpu": cpu_model(), "torch": torch.__version__})
    if args.note:
        data["note"] = args.note
    calibration = data.setdefault("calibration", {})
    if not args.report:
        for model in PROFILES[args.profile]["models"]:
            if model not in calibration:
                calibration[model] = calibrate(model, PROFILES[args.profile]["calibration_rounds"])
                out.with_suffix(".json").write_text(json.dumps(data, indent=1))
        execute(plan(args.profile, calibration), runs_dir, args.jobs)
    report(args.profile, runs_dir, out, data)


if __name__ == "__main__":
    main()
