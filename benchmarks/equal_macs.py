"""Accuracy at equal MACs reduction for pruning before training (issue 3's benchmark; 3SP's compute-aware claim).

Drives ``earlyprune train`` (one subprocess per run, so a crash or the peak memory of one run stays its own) on
CIFAR-10 from the shared JPEG zip with a CPU-sized quick profile (CIFAR ResNet-20, a training subset, a few
epochs, bf16 autocast + channels_last), for

* criteria ``snip``, ``snip`` + ``compute_aware=λ`` (3SP Eq. 3-4), ``crop`` (CroP-S), ``random`` (uniform),
* MACs reductions 0.5 and 0.8 (``--target flops --ratio R``),
* pruning before training with the ``before:K`` policy (3SP: scored on ``K`` = 1 minibatch, pruned in one step
  after the first optimizer step of epoch 0), then the pruned model trained for the whole run,

plus one dense reference (``--policy never``). Every run writes its own run directory under ``--out-dir``; this
script reads each run's ``summary.json`` (final / best test accuracy, MACs and parameters dense → final, training
seconds) and ``metrics.jsonl`` (the pruning events: seconds spent selecting and removing channels, channels left)
and writes one JSON file. Finished runs are skipped and interrupted ones resumed when the script is run again
(``--fresh`` retrains them). A failed run is recorded with its exit status and the tail of its output, and the
other runs go on.

    python benchmarks/equal_macs.py [--epochs 4] [--train-subset 5000] [--seed 0] [--threads 2]
        [--lam 0.05] [--ratios 0.5 0.8] [--out-dir /tmp/equal_macs_runs]
        [--out benchmarks/results/equal_macs.json] [--only dense snip-r0.5 ...] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA = "folder:/work/shared/data/cifar10-jpeg.zip"
CLI = [sys.executable, "-c", "import sys; from earlyprune.cli import main; sys.exit(main(sys.argv[1:]))", "train"]


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs: one dense reference, then every (criterion, ratio) pair."""
    common = ["--model", args.model, "--dataset", args.dataset, "--epochs", str(args.epochs),
              "--precision", "bf16", "--channels-last", "--threads", str(args.threads), "--seed", str(args.seed),
              "--device", "cpu", "--progress", "log", "--out-dir", str(args.out_dir),
              "--round-to", "1"]  # the committed results prune single channels (the trainer's default is auto)
    if args.train_subset:
        common += ["--train-subset", str(args.train_subset)]
    runs = [{"name": "dense", "criterion": None, "compute_aware": None, "ratio": None,
             "args": common + ["--policy", "never", "--name", "dense"]}]
    criteria = [("snip", "snip", None), (f"snip+ca{args.lam:g}", "snip", args.lam), ("crop", "crop", None),
                ("random", "random", None)]
    for ratio in args.ratios:
        for label, criterion, lam in criteria:
            name = f"{label}-r{ratio:g}"
            extra = ["--criterion", criterion, "--policy", f"before:{args.batches}", "--steps", str(args.steps),
                     "--target", "flops", "--ratio", str(ratio), "--name", name]
            if lam is not None:
                extra += ["--pruner-arg", f"compute_aware={lam:g}"]
            runs.append({"name": name, "criterion": criterion, "compute_aware": lam, "ratio": ratio,
                         "args": common + extra})
    return runs


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _complete(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.exists() and bool(_read_json(summary).get("complete"))


def execute(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Bring one run to completion (skip / resume / train); returns how, the exit status and the output tail."""
    run_dir = args.out_dir / run["name"]
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if _complete(run_dir):
        return {"action": "skipped (already complete)", "returncode": 0, "wall_seconds": None, "output_tail": ""}
    if (run_dir / "config.json").exists():
        cmd, action = CLI + ["--resume", str(run_dir), "--progress", "log"], "resumed"
    else:
        cmd, action = CLI + run["args"], "trained"
    print(f"[equal_macs] {action} {run['name']}: earlyprune train {' '.join(run['args'])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"  [{run['name']}] {line}", end="", flush=True)
        lines.append(line)
    code = proc.wait()
    return {"action": action, "returncode": code, "wall_seconds": time.perf_counter() - t0,
            "output_tail": "".join(lines[-15:]) if code != 0 else ""}


def collect(run: dict[str, Any], outcome: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    run_dir = args.out_dir / run["name"]
    row: dict[str, Any] = {"name": run["name"], "criterion": run["criterion"], "compute_aware": run["compute_aware"],
                           "target": None if run["ratio"] is None else "flops", "ratio": run["ratio"],
                           "run_dir": str(run_dir),
                           "command": "earlyprune train " + " ".join(run["args"]), **outcome}
    if outcome["returncode"] != 0 or not (run_dir / "summary.json").exists():
        row["error"] = (f"exit status {outcome['returncode']}" if outcome["returncode"] != 0
                        else "no summary.json written")
        return row
    s = _read_json(run_dir / "summary.json")
    metrics = _read_metrics(run_dir)
    events = [e for r in metrics for e in r.get("events", [])]
    row.update({
        "complete": s["complete"], "epochs": s["epochs"],
        "final_test_accuracy": s["final_test_accuracy"], "best_test_accuracy": s["best_test_accuracy"],
        "best_epoch": s["best_epoch"],
        "macs_dense": s["macs"]["dense"], "macs": s["macs"]["final"], "macs_reduction": s["macs"]["reduction"],
        "params_dense": s["params"]["dense"], "params": s["params"]["final"],
        "params_reduction": s["params"]["reduction"],
        "node_sparsity": s["node_sparsity"], "weight_sparsity": s["weight_sparsity"],
        "train_seconds": s["train_seconds"], "eval_seconds": s["eval_seconds"],
        "epoch_seconds": [r["seconds"] + r.get("pruner_seconds", 0.0) for r in metrics],
        "images_per_second": [r["images_per_second"] for r in metrics],
        "test_accuracy_per_epoch": [r["test_accuracy"] for r in metrics],
        "prune_epoch": s["prune_epoch"],
        # the pruning events' seconds: scores → selection → physical removal (+ optimizer-state slicing); the
        # criterion's scoring pass on the batch (snip's extra backward, crop's double backprop) runs in
        # criterion.observe() before the event's clock starts and is not included (it is inside train_seconds)
        "pruning_seconds": sum(e["seconds"] for e in events) if events else None,
        "pruning_events": [{k: e.get(k) for k in ("epoch", "batch", "step", "amount", "removed", "channels",
                                                  "macs", "params", "seconds")} for e in events],
        "channels_left": events[-1]["channels"] if events else None,
        # kept width of every channel group after pruning (the pruner's history; group names below)
        "structure": next((r["pruner"]["structure"] for r in reversed(metrics)
                           if r.get("pruner", {}).get("structure") is not None), None),
    })
    return row


def compare_to_dense(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Accuracy difference and training speedup of every run against the dense reference (read from its run
    directory, so that it works with ``--only`` too)."""
    summary = args.out_dir / "dense" / "summary.json"
    if not summary.exists():
        return
    dense = _read_json(summary)
    for row in rows:
        if "error" in row or row["name"] == "dense":
            continue
        row["final_accuracy_vs_dense"] = row["final_test_accuracy"] - dense["final_test_accuracy"]
        row["best_accuracy_vs_dense"] = row["best_test_accuracy"] - dense["best_test_accuracy"]
        row["train_speedup_vs_dense"] = (dense["train_seconds"] / row["train_seconds"]
                                         if row["train_seconds"] else None)


def _group_names(model_name: str) -> list[str] | None:
    """The channel groups of the dense model, in the order of each run's ``structure``."""
    import torch

    from earlyprune import ChannelGroups
    from earlyprune.models import create_model

    try:
        return list(ChannelGroups(create_model(model_name, num_classes=10, in_channels=3),
                                  torch.randn(2, 3, 32, 32)).names)
    except Exception:  # noqa: BLE001 - informative only
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default=DATA)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-subset", type=int, default=5000, help="0 = the whole training set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lam", type=float, default=0.05, help="Laplace smoothing λ of compute_aware (3SP Eq. 4)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.8], help="fractions of MACs to remove")
    ap.add_argument("--batches", type=int, default=1, help="K of the before:K policy (3SP: one minibatch)")
    ap.add_argument("--steps", type=int, default=1, help="pruning steps (1 = one shot; ≤ K for snip / crop)")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/equal_macs_runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/equal_macs.json"))
    ap.add_argument("--only", nargs="+", help="run only these names (dense, snip-r0.5, snip+ca0.05-r0.8, ...)")
    ap.add_argument("--fresh", action="store_true", help="delete and retrain runs that exist")
    args = ap.parse_args(argv)
    args.out_dir = args.out_dir.expanduser().resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    runs = plan(args)
    if args.only:
        unknown = set(args.only) - {r["name"] for r in runs}
        if unknown:
            ap.error(f"unknown run names {sorted(unknown)}; known: {[r['name'] for r in runs]}")
        runs = [r for r in runs if r["name"] in args.only]
    import torch

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for run in runs:
        outcome = execute(run, args)
        row = collect(run, outcome, args)
        rows.append(row)
        if "error" in row:
            print(f"[equal_macs] {run['name']} FAILED: {row['error']}\n{row['output_tail']}", flush=True)
        else:
            print(f"[equal_macs] {run['name']}: final {row['final_test_accuracy']:.2%} best "
                  f"{row['best_test_accuracy']:.2%}, MACs -{row['macs_reduction']:.1%}, params "
                  f"-{row['params_reduction']:.1%}, train {row['train_seconds']:.0f}s", flush=True)
    compare_to_dense(rows, args)
    groups = _group_names(args.model)

    result = {
        "benchmark": "equal_macs", "date": "2026-11-21",
        "machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), no GPU, shared with "
                   f"other engineers' jobs (times are noisy); runs under nice",
        "python": platform.python_version(), "torch": torch.__version__,
        "command": "python benchmarks/equal_macs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "profile": {"model": args.model, "dataset": args.dataset, "epochs": args.epochs,
                    "train_subset": args.train_subset or None, "test_images": "all (10,000)", "batch_size": 128,
                    "optimizer": "sgd momentum 0.9, lr 0.1, wd 5e-4, pat schedule (trainer defaults)",
                    "precision": "bf16 autocast + channels_last", "threads": args.threads, "seed": args.seed,
                    "policy": f"before:{args.batches}", "steps": args.steps, "target": "flops",
                    "compute_aware_lambda": args.lam},
        "total_wall_seconds": time.perf_counter() - t_start,
        "group_names": groups,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"[equal_macs] wrote {args.out}", flush=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
