"""The fair benchmark (issue 20): all of CIFAR-10, 30 epochs, the papers' own baselines — resumable across sessions.

All 50,000 training images of ``../shared/data/cifar10-jpeg.zip`` (decoded once into earlyprune's data cache), the
full 10,000-image test set, CIFAR ResNet-20, a standard recipe (:data:`RECIPE`: SGD momentum 0.9, lr 0.1 with PaT's
linear warm-up then cosine, weight decay 5e-4, batch 128, pad-4 random crop + flip), one thread per run, each run
``earlyprune train`` in its own process. Methods (:data:`METHODS`; the issue's letters):

* (a) ``dense`` — the reference; its per-epoch signals (EPI at 10-90 %, weight change, Early-Bird distance, rank
  correlations) are the evidence for when the structure settles;
* (b) ``epi`` — EPI (magnitude, PaT's τ) removing 50 % of the channels;  (c) ``epi-la`` — the same with PaT's
  latency-aware saliency;  (d) ``init-3sp-ca`` / ``init-magnitude`` — pruning at initialisation to the same target;
* (e) ``tpf`` — train–prune–fine-tune: (a)'s final model pruned to 50 % of its channels and fine-tuned 15 epochs;
* (f) ``scratch-e`` — (b)'s final architecture, re-initialised, trained 30 epochs;  (g) ``narrow`` — a uniformly
  narrower ResNet-20 with (b)'s final MACs;  (h) ``earlycrop`` / ``earlybird`` with their triggers;
* ``epoch-K`` — the fixed-epoch grid (K in 1, 2, 4, 6, 8, 10) that EPI's prune moment is judged against;
* ``signals-taylor`` — a dense run recording the signals of PaT's gradient (Taylor) criterion (evidence only).

A run takes about 3.3 h of one core of an AVX2 EPYC (fp32), longer than a session: ``run`` starts a run or resumes
it from its last checkpoint, so killing the script loses at most the epoch in progress. Run directories live in
``benchmarks/results/cifar10_full/runs/`` and are committed with their latest checkpoint (≈ 3.5 MB) so that the
next session — possibly on another CPU kind — continues them; a finished run writes
``benchmarks/results/cifar10_full/<run>.json`` and drops its checkpoint.

Time. Each epoch's process CPU time is recorded by the trainer (training loop; the pruner's own time apart). A run
that spans machines is charged in *dense-step units*: each time a run (re)starts, this script times 10 training
steps of the dense ResNet-20 on that machine (``calibration``), and an epoch's cost is its CPU seconds divided by
the calibration of the machine that ran it. Time fractions are over the same seed's dense run, so on one machine
they are plain CPU-time ratios. Inference latency (batch 1 and 128) is measured at ``report`` time, each model
interleaved with the dense one, median of paired ratios.

    python benchmarks/cifar10_full.py run dense epi --seed 0 --jobs 2   # start or resume; writes results as runs end
    python benchmarks/cifar10_full.py status                             # epochs done per run
    python benchmarks/cifar10_full.py report                             # table + plot from the finished runs
    python benchmarks/cifar10_full.py run dense --seed 0 --tiny          # smoke test (512 images, 2 epochs)

Precision and layout are pinned (fp32, channels_last): a run resumed on another CPU kind must keep them, and
bf16 is 12-17x slower than fp32 on AVX2-only CPUs (measured on this project's Zen 3, see docs/speed.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cifar10_full"
RUNS = RESULTS / "runs"
SOURCE = Path(os.environ.get("EARLYPRUNE_CIFAR_ZIP", HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.zip"))

EPOCHS = 30
RATIO = 0.5
#: the recipe of every run (``earlyprune train`` flags); fine-tuning (e) overrides epochs / lr / schedule
RECIPE: dict[str, Any] = {
    "model": "resnet20", "epochs": EPOCHS, "batch_size": 128, "eval_batch_size": 500, "optimizer": "sgd", "lr": 0.1,
    "momentum": 0.9, "weight_decay": 5e-4, "schedule": "pat", "augment": "standard", "precision": "fp32",
    "channels_last": "on", "compile": "off", "threads": 1, "device": "cpu", "progress": "log",
}
#: what every pruning method shares: PaT's channel target at 50 %, widths rounded to 8 (the CLI default); at least 8
#: channels per group, pinned (the trainer raises it to 8 only on CPUs whose channels_last kernels crash below)
PRUNE = {"target": "channels", "ratio": RATIO, "round_to": 8, "min_channels": 8, "max_group_ratio": 0.8, "steps": 8}
#: the signal policies' cap: PaT's pre-defined epoch (30 of 90) scaled to the run
CAP = EPOCHS // 3
GRID = (1, 2, 4, 6, 8, 10)
FINETUNE = {"epochs": 15, "lr": 0.01, "schedule": "cosine", "warmup_epochs": 0}


def _method(args: dict[str, Any], needs: tuple[str, ...] = (), prunes: bool = True) -> dict[str, Any]:
    return {"args": args, "needs": needs, "prunes": prunes}


METHODS: dict[str, dict[str, Any]] = {
    # a dense run still records the signals at PRUNE's target; its loop time is the reference
    "dense": _method({"policy": "never", **PRUNE}, prunes=False),
    "epi": _method({"policy": f"epi:cap={CAP}", **PRUNE}),
    "epi-la": _method({"policy": f"epi:cap={CAP}", **PRUNE, "pruner_args": {"latency_aware": True}}),
    "init-magnitude": _method({"policy": "init", **PRUNE}),
    "init-3sp-ca": _method({"policy": "before", "criterion": "snip", **PRUNE, "steps": 1,
                            "pruner_args": {"compute_aware": 0.05}}),
    "tpf": _method({"policy": "never", **PRUNE, **FINETUNE}, needs=("dense",)),
    "scratch-e": _method({"policy": "never", **PRUNE}, needs=("epi",), prunes=False),
    "narrow": _method({"policy": "never", **PRUNE}, needs=("epi",), prunes=False),
    "earlycrop": _method({"policy": f"earlycrop:cap={CAP}", "criterion": "crop", **PRUNE}),
    "earlybird": _method({"policy": f"earlybird:cap={CAP}", **PRUNE}),
    **{f"epoch-{k}": _method({"policy": f"epoch:{k}", **PRUNE}) for k in GRID},
    # evidence, not a method: the signals of a dense run scored with PaT's gradient criterion
    "signals-taylor": _method({"policy": "never", "criterion": "taylor", **PRUNE}, prunes=False),
}
LABELS = {"dense": "(a) dense", "epi": "(b) EPI, 50 % channels", "epi-la": "(c) EPI, latency-aware saliency",
          "init-magnitude": "(d) init, magnitude", "init-3sp-ca": "(d) 3SP compute-aware, before training",
          "tpf": "(e) train-prune-fine-tune (30+15)", "scratch-e": "(f) Scratch-E of (b)'s architecture",
          "narrow": "(g) uniformly narrower, (b)'s MACs", "earlycrop": "(h) EarlyCroP-S",
          "earlybird": "(h) Early-Bird", **{f"epoch-{k}": f"fixed epoch {k}" for k in GRID},
          "signals-taylor": "dense, Taylor signals recorded"}


# -- models that depend on other runs (registered in the worker process) -------------------------------------
def _source(source: str) -> Path:
    """A dependency's run directory: as recorded, or by name under RUNS (a clone at another path resumes too)."""
    path = Path(source)
    return path if path.exists() else RUNS / path.name


def _register_models() -> None:
    from earlyprune import load, prune
    from earlyprune.models import create_model, register_model
    from earlyprune.models.init import kaiming_init_

    @register_model("c10full_finetune", "(e): a finished dense run's final model, pruned (benchmarks/cifar10_full.py)")
    def finetune(num_classes: int = 10, in_channels: int = 3, source: str = "", seed: int = 0):
        model = create_model("resnet20", num_classes=num_classes, in_channels=in_channels)
        load(_source(source) / "model.safetensors", model)
        prune(model, torch.randn(2, in_channels, 32, 32), RATIO, criterion="magnitude", target=PRUNE["target"],
              round_to=PRUNE["round_to"], max_group_ratio=PRUNE["max_group_ratio"], min_channels=8)
        return model

    @register_model("c10full_arch", "(f): a finished run's final architecture, re-initialised")
    def architecture(num_classes: int = 10, in_channels: int = 3, source: str = "", seed: int = 0):
        model = load(_source(source) / "model.safetensors",
                     create_model("resnet20", num_classes=num_classes, in_channels=in_channels))
        torch.manual_seed(seed)
        for m in model.modules():     # the zoo's rule at the pruned shapes: PyTorch defaults, He for convolutions
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return kaiming_init_(model)



# -- what a run is -----------------------------------------------------------------------------------------------
def run_name(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def result_path(method: str, seed: int) -> Path:
    return RESULTS / f"{run_name(method, seed)}.json"


def _flags(args: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if key in ("pruner_args", "model_args"):
            single = "--pruner-arg" if key == "pruner_args" else "--model-arg"
            for k, v in value.items():
                out += [single, f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
        else:
            out += [flag, str(value)]
    return out


def train_args(method: str, seed: int, tiny: bool = False) -> list[str]:
    """The ``earlyprune train`` arguments of a new run (the dependencies of (e)-(g) must have finished)."""
    spec = METHODS[method]
    args: dict[str, Any] = {**RECIPE, "seed": seed, "dataset": f"folder:{SOURCE}", **spec["args"]}
    if tiny:
        args.update({"train_subset": 512, "test_subset": 200, "epochs": 2 if method != "tpf" else 1})
        for key in ("policy",):
            if "cap=" in str(args[key]):
                args[key] = str(args[key]).split(":")[0] + ":cap=1"
            elif str(args[key]).startswith("epoch:"):
                args[key] = "epoch:1"
    if method == "tpf":
        args["model"] = "c10full_finetune"
        args["model_args"] = {"source": str(RUNS / run_name("dense", seed))}
    elif method == "scratch-e":
        args["model"] = "c10full_arch"
        args["model_args"] = {"source": str(RUNS / run_name("epi", seed)), "seed": seed}
    elif method == "narrow":
        args["model_args"] = {"width": narrow_width(json.loads(result_path("epi", seed).read_text())["macs"])}
    return _flags(args) + ["--out-dir", str(RUNS), "--name", run_name(method, seed)]


def narrow_width(macs: float) -> int:
    """The ResNet-20 width (channels of the first stage) whose MACs are closest to ``macs``."""
    from earlyprune import measure
    from earlyprune.models import create_model

    costs = {w: measure(create_model("resnet20", width=w), torch.randn(1, 3, 32, 32)).macs for w in range(4, 17)}
    return min(costs, key=lambda w: abs(costs[w] - macs))


# -- the machine -------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU model and the flags that select its kernels (or the GPU), for every number this script writes."""
    info: dict[str, Any] = {"platform": platform.platform(), "torch": torch.__version__}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["cpu"] = model
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def calibrate(steps: int = 10, warmup: int = 3) -> float:
    """Process CPU seconds per training step of the dense ResNet-20 (batch 128, fp32, channels_last, 1 thread)."""
    from earlyprune.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("resnet20").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    from earlyprune.core import timing

    return timing.time_train_step(timing.train_step(model, opt, x, y), repeats=steps, warmup=warmup, clock="cpu")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


# -- running -----------------------------------------------------------------------------------------------------
def epochs_done(run_dir: Path) -> int:
    path = run_dir / "checkpoint.json"
    if not path.exists():
        return 0
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (ValueError, KeyError):
        return 0


def _segments_path(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".segments.json")   # beside the run directory the trainer owns


def _segments(run_dir: Path) -> list[dict[str, Any]]:
    path = _segments_path(run_dir)
    return json.loads(path.read_text()) if path.exists() else []


def start(method: str, seed: int, tiny: bool) -> subprocess.Popen | None:
    """Start the run, or resume it from its last checkpoint; None when its result exists or a dependency has not
    finished."""
    if result_path(method, seed).exists() and not tiny:
        print(f"{run_name(method, seed)}: finished (result file exists)")
        return None
    missing = [d for d in METHODS[method]["needs"] if not result_path(d, seed).exists()]
    if missing:
        print(f"{run_name(method, seed)}: waits for {', '.join(run_name(d, seed) for d in missing)}")
        return None
    run_dir = RUNS / run_name(method, seed)
    done = epochs_done(run_dir)
    from earlyprune.training.environment import capture
    if (run_dir / "config.json").exists():
        args = ["--resume", str(run_dir), "--progress", "log"]
        stored = json.loads((run_dir / "environment.json").read_text())["environment"] \
            if (run_dir / "environment.json").exists() else {}
        changed = [k for k, v in capture(1, torch.device(RECIPE["device"])).items() if k in stored and stored[k] != v and k != "data"]
        if changed:   # another CPU kind or torch: continue, said in summary.json and in segments.json
            args += ["--allow-changed", ",".join(changed)]
    else:
        args = train_args(method, seed, tiny)
    segments = _segments(run_dir)
    segments.append({"from_epoch": done, "started": datetime.datetime.now().isoformat(timespec="seconds"),
                     "commit": _commit(), "machine": machine(), "calibration_step_seconds": calibrate()})
    _segments_path(run_dir).write_text(json.dumps(segments, indent=1))
    log = open(run_dir.with_name(run_dir.name + ".log"), "a")
    print(f"{run_name(method, seed)}: {f'resumes after {done} epochs' if done else 'starts'}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "worker", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def worker(args: list[str]) -> int:
    """One run in this process: the benchmark's models registered, then ``earlyprune train``."""
    from earlyprune.cli import main

    _register_models()
    return main(["train", *args]) or 0


def collect(method: str, seed: int) -> dict[str, Any] | None:
    """The result record of a finished run (None if it has not finished); drops its checkpoints."""
    run_dir = RUNS / run_name(method, seed)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    if not summary.get("complete"):
        return None
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    segments = _segments(run_dir)
    starts = [s["from_epoch"] for s in segments]
    epochs = []
    for row in rows:
        seg = max((i for i, s in enumerate(starts) if s <= row["epoch"]), default=0)
        pruner = row.get("pruner") or {}
        epochs.append({"epoch": row["epoch"], "phase": row.get("phase"), "cpu_seconds": row.get("cpu_seconds"),
                       "pruner_cpu_seconds": row.get("pruner_cpu_seconds"), "batches": row.get("batches"),
                       "overhead_cpu_seconds": row.get("overhead_cpu_seconds"),
                       "bn_recalibration": row.get("bn_recalibration"), "test_accuracy": row.get("test_accuracy"),
                       "train_loss": row.get("train_loss"), "segment": seg, "macs": row.get("macs"),
                       "epi": pruner.get("epi"), "weight_change_score": pruner.get("weight_change_score"),
                       "earlybird_distance": pruner.get("earlybird_distance"),
                       "kendall_tau": pruner.get("kendall_tau"), "trigger": pruner.get("trigger"),
                       "subnetwork": pruner.get("subnetwork")})
    # (a)'s model file is what (e) prunes and (b)'s what (f) rebuilds: kept; the resume state is not needed
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    record = {
        "method": method, "seed": seed, "label": LABELS[method], "args": METHODS[method]["args"],
        "config": json.loads((run_dir / "config.json").read_text()),
        "final_test_accuracy": summary["final_test_accuracy"], "best_test_accuracy": summary["best_test_accuracy"],
        "prune_epoch": summary.get("prune_epoch"), "pruning": summary.get("pruning"),
        "macs": summary["macs"]["final"], "params": summary["params"]["final"],
        "dense_macs": summary["macs"]["dense"], "train_cpu_seconds": summary.get("train_cpu_seconds"),
        "epochs": epochs, "segments": segments, "bn_recalibration": summary.get("bn_recalibration"),
    }
    result_path(method, seed).write_text(json.dumps(record, indent=1))
    return record


def live_worker(method: str, seed: int) -> int | None:
    """The pid of a worker process already running this run (started by another ``run``), or None.

    Two processes training one run directory would overwrite each other's checkpoints, so a run that is alive is
    watched, never started twice."""
    name = run_name(method, seed)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if not _alive(int(proc.name)):
            continue
        if "worker" not in argv or not any(a.endswith("cifar10_full.py") for a in argv):
            continue
        for flag, value in zip(argv, argv[1:]):
            if (flag == "--name" and value == name) or (flag == "--resume" and Path(value).name == name):
                return int(proc.name)
    return None


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().split(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def run(methods: list[str], seeds: list[int], jobs: int, tiny: bool) -> None:
    """Run the queue, ``jobs`` at a time; a run whose dependency is queued or running waits for it (the others go
    first), and a run already alive in another process is watched and collected, not started again."""
    queue = [(m, s) for s in seeds for m in methods]
    active: list[tuple[str, int, subprocess.Popen | int]] = []
    while queue or active:
        for item in list(active):
            method, seed, proc = item
            done = proc.poll() is not None if isinstance(proc, subprocess.Popen) else not _alive(proc)
            if done:
                active.remove(item)
                record = collect(method, seed)
                code = proc.returncode if isinstance(proc, subprocess.Popen) else "?"
                state = "finished" if record else f"stopped (exit {code}; see its .log)"
                print(f"{run_name(method, seed)}: {state}", flush=True)
        pending = {(m, s) for m, s in queue} | {(m, s) for m, s, _ in active}
        for item in list(queue):
            if len(active) >= jobs:
                break
            method, seed = item
            if not tiny and collect(method, seed):
                queue.remove(item)
                print(f"{run_name(method, seed)}: finished", flush=True)
                continue
            pid = None if tiny else live_worker(method, seed)
            if pid is not None:
                queue.remove(item)
                active.append((method, seed, pid))
                print(f"{run_name(method, seed)}: already running (pid {pid}); watching it", flush=True)
                continue
            missing = [d for d in METHODS[method]["needs"] if not result_path(d, seed).exists()]
            if any((d, seed) in pending or live_worker(d, seed) for d in missing):
                continue   # its dependency is queued or running: later
            queue.remove(item)
            proc = start(method, seed, tiny)
            if proc is not None:
                active.append((method, seed, proc))
        if queue and not active:
            for method, seed in queue:
                print(f"{run_name(method, seed)}: cannot start (a dependency is neither finished nor queued)")
            break
        time.sleep(5)


def status() -> None:
    for run_dir in sorted(p for p in RUNS.glob("*") if p.is_dir()):
        done = "finished" if (RESULTS / f"{run_dir.name}.json").exists() else f"{epochs_done(run_dir)} epochs done"
        print(f"{run_dir.name:24s} {done}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="start or resume runs")
    p_run.add_argument("methods", nargs="+", choices=list(METHODS))
    p_run.add_argument("--seed", type=int, nargs="+", default=[0])
    p_run.add_argument("--jobs", type=int, default=2)
    p_run.add_argument("--tiny", action="store_true", help="smoke test: 512 images, 2 epochs, under /tmp")
    sub.add_parser("status", help="epochs done per run, and progress.md (accuracy, CPU time, EPI per epoch)")
    p_rep = sub.add_parser("report", help="table and plot from the finished runs")
    p_rep.add_argument("--no-latency", action="store_true", help="skip the inference-latency measurement")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.tiny:
            global RESULTS, RUNS
            RESULTS = Path("/tmp/earlyprune-cifar10_full-tiny")
            RUNS = RESULTS / "runs"
        RUNS.mkdir(parents=True, exist_ok=True)
        run(args.methods, args.seed, args.jobs, args.tiny)
    elif args.command == "status":
        status()
        from cifar10_full_report import progress
        progress(RESULTS)
    else:
        from cifar10_full_report import report   # the table, the plot and the latency measurement
        report(RESULTS, latency=not args.no_latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
