"""Tables, EPI evidence and the plot of ``benchmarks/cifar10_full.py``, regenerated from its per-run result files.

Time is process CPU time of the training loop, reported as a fraction of the same seed's dense run (in dense-step
units — each epoch's CPU seconds over the calibration of the machine that ran it, see ``cifar10_full.py`` — when
the two runs span several CPU kinds): the dense reference and the
methods that do not prune are charged their training loop; pruning methods also their pruner's time (scores,
signals, pruning steps); train-prune-fine-tune (e) is charged the dense run it starts from plus its fine-tuning.
Inference latency (batch 1 and 128, fp32, one thread) is timed here, each final model interleaved with the dense
ResNet-20, median of paired ratios; the ratios are cached per machine in ``latency.json``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

#: the order of the table
ORDER = ["dense", "epi", "epi-la", "init-magnitude", "init-3sp-ca", "tpf", "scratch-e", "narrow", "earlycrop",
         "earlybird", "epoch-1", "epoch-2", "epoch-4", "epoch-6", "epoch-8", "epoch-10"]
TAU = {"magnitude": 0.983, "gradient": 0.944}


def load_results(results: Path) -> list[dict[str, Any]]:
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))
               if p.name not in ("summary.json", "latency.json")]
    return sorted(records, key=lambda r: (r["seed"], ORDER.index(r["method"]) if r["method"] in ORDER else 99))


def _kinds(record: dict[str, Any]) -> set[str]:
    return {s["machine"].get("cpu", "?") + " " + "/".join(s["machine"].get("cpu_flags", []))
            for s in record["segments"]}


def units(record: dict[str, Any], *, with_pruner: bool, calibrated: bool) -> float:
    """The run's training cost: process CPU seconds, or (``calibrated``) dense-step units of the machines that ran
    it. The calibration is a few steps timed when a segment starts, so it carries that moment's load (+47 % under
    a concurrent run and the test suite on the 2-core EPYC): used only where a run spans CPU kinds."""
    calib = [s["calibration_step_seconds"] for s in record["segments"]] or [1.0]
    total = 0.0
    for e in record["epochs"]:
        seconds = (e.get("cpu_seconds") or 0.0) + ((e.get("pruner_cpu_seconds") or 0.0) if with_pruner else 0.0)
        total += seconds / (calib[min(e.get("segment", 0), len(calib) - 1)] if calibrated else 1.0)
    return total


def time_fraction(record: dict[str, Any], dense: dict[str, Any] | None) -> float | None:
    """Training cost over the same seed's dense run: plain CPU time where both ran on one CPU kind, calibrated
    units otherwise."""
    if dense is None:
        return None
    calibrated = len(_kinds(record) | _kinds(dense)) > 1
    base = units(dense, with_pruner=False, calibrated=calibrated)
    from cifar10_full import METHODS   # which methods prune (charged their pruner's time)
    own = units(record, with_pruner=METHODS.get(record["method"], {}).get("prunes", True), calibrated=calibrated)
    if record["method"] == "tpf":
        own += base
    return own / base if base else None


def _machine_key() -> str:
    from cifar10_full import machine
    m = machine()
    return f"{m.get('cpu')} {'/'.join(m.get('cpu_flags', []))} torch {m.get('torch')}"


_REGISTERED = False


def final_model(record: dict[str, Any], runs: Path) -> torch.nn.Module:
    """The run's final model: its configured model built as the trainer built it, the saved structure and
    weights loaded into it."""
    global _REGISTERED
    from earlyprune import load
    from earlyprune.models import create_model

    if not _REGISTERED:
        from cifar10_full import _register_models
        _register_models()
        _REGISTERED = True
    config = record["config"]
    if config["model"].startswith("c10full_"):   # pruned when built: the file's history starts at ResNet-20
        model = create_model("resnet20", num_classes=10)
    else:
        model = create_model(config["model"], num_classes=10, **config.get("model_args", {}))
    return load(runs / f"{record['method']}-s{record['seed']}" / "model.safetensors", model)


def inference_latency(model: torch.nn.Module, dense: torch.nn.Module, batch: int, rounds: int = 15) -> dict[str, float]:
    from earlyprune.core.timing import paired_ratio

    torch.set_num_threads(1)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    model = model.eval().to(memory_format=torch.channels_last)
    dense = dense.eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        r = paired_ratio(lambda: model(x), lambda: dense(x), rounds=rounds, warmup=3,
                         number=max(1, 32 // batch))
    return {"ratio": r.ratio, "iqr": list(r.iqr), "model_s": r.a_seconds, "dense_s": r.b_seconds}


def latencies(records: list[dict[str, Any]], results: Path) -> dict[str, Any]:
    from earlyprune.models import create_model

    path = results / "latency.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    key = _machine_key()
    table = cache.setdefault(key, {})
    dense = create_model("resnet20")
    for record in records:
        name = f"{record['method']}-s{record['seed']}"
        if name in table:
            continue
        model = final_model(record, results / "runs")
        table[name] = {str(b): inference_latency(model, dense, b) for b in (1, 128)}
        path.write_text(json.dumps(cache, indent=1))
    return table


def epi_evidence(dense: dict[str, Any]) -> list[str]:
    """The EPI curve of a dense run (every ratio, per epoch, with the optimizer steps taken) and where it first
    reaches PaT's magnitude τ."""
    rows = [e for e in dense["epochs"] if e.get("epi")]
    if not rows:
        return []
    ratios = sorted(rows[0]["epi"], key=float)
    steps = 0
    lines = ["| epoch | steps | " + " | ".join(f"EPI {float(r):.0%}" for r in ratios) + " | weight-change (Eq. 11) | "
             "Early-Bird distance |", "|" + "---|" * (len(ratios) + 4)]
    for e in rows:
        steps += e.get("batches") or 0
        cells = ["" if e["epi"][r] is None else f"{e['epi'][r]:.3f}" for r in ratios]
        wc = e.get("weight_change_score")
        eb = e.get("earlybird_distance")
        lines.append(f"| {e['epoch']} | {steps} | " + " | ".join(cells) +
                     f" | {'' if wc is None else f'{wc:.3f}'} | {'' if eb is None else f'{eb:.3f}'} |")
    first = {r: next((e["epoch"] for e in rows if e["epi"][r] is not None and e["epi"][r] >= TAU["magnitude"]),
                     None) for r in ratios}
    lines.append("")
    lines.append("First epoch whose EPI reaches τ = 0.983 (the policy then prunes in the next epoch): " +
                 ", ".join(f"{float(r):.0%}: {'never' if v is None else v}" for r, v in first.items()) + ".")
    return lines


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f} %"


def report(results: Path, latency: bool = True) -> None:
    records = load_results(results)
    if not records:
        print(f"no finished run in {results}")
        return
    dense_by_seed = {r["seed"]: r for r in records if r["method"] == "dense"}
    table = latencies(records, results) if latency else {}
    rows = []
    for r in records:
        name = f"{r['method']}-s{r['seed']}"
        lat = table.get(name, {})
        rows.append({"run": name, "method": r["method"], "label": r["label"], "seed": r["seed"],
                     "final_test_accuracy": r["final_test_accuracy"], "best_test_accuracy": r["best_test_accuracy"],
                     "prune_epoch": r.get("prune_epoch"), "time_fraction": time_fraction(r, dense_by_seed.get(r["seed"])),
                     "macs": r["macs"], "params": r["params"],
                     # over the dense ResNet-20's (the starting model of (e)-(g) is already smaller)
                     "macs_fraction": r["macs"] / dense_by_seed.get(r["seed"], r)["dense_macs"],
                     "latency_b1": (lat.get("1") or {}).get("ratio"), "latency_b128": (lat.get("128") or {}).get("ratio"),
                     "machines": sorted(_kinds(r))})
    lines = ["# CIFAR-10, all 50,000 images, ResNet-20, 30 epochs (`benchmarks/cifar10_full.py`)", "",
             "Time: training cost over the same seed's dense run (dense-step units, see the script). Latency: "
             "inference time of the final model over the dense ResNet-20's, fp32, one thread, interleaved "
             "(machine: " + (_machine_key() if latency else "not measured") + ").", "",
             "| method | seed | final acc. | best acc. | prune epoch | time | MACs | params | latency b1 | latency b128 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        tf = row["time_fraction"]
        lines.append(f"| {row['label']} | {row['seed']} | {_pct(row['final_test_accuracy'])} | "
                     f"{_pct(row['best_test_accuracy'])} | {'' if row['prune_epoch'] is None else row['prune_epoch']} | "
                     f"{_num(tf)} | {row['macs_fraction']:.2f} | {row['params']:,} | "
                     f"{_num(row['latency_b1'])} | {_num(row['latency_b128'])} |")
    for seed, dense in sorted(dense_by_seed.items()):
        evidence = epi_evidence(dense)
        if evidence:
            lines += ["", f"## When the structure settles (dense run, seed {seed}): EPI per epoch", ""] + evidence
    (results / "summary.md").write_text("\n".join(lines) + "\n")
    (results / "summary.json").write_text(json.dumps(rows, indent=1))
    _plot(rows, results / "summary.png")
    print("\n".join(lines))


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for row in rows:
        if row["time_fraction"] is None:
            continue
        size = 40 + 260 * (row["latency_b128"] if row["latency_b128"] is not None else row["macs_fraction"])
        ax.scatter(row["time_fraction"], 100 * row["final_test_accuracy"], s=size, alpha=0.6)
        ax.annotate(f"{row['method']} s{row['seed']}", (row["time_fraction"], 100 * row["final_test_accuracy"]),
                    fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("training time / dense run's (same seed)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("CIFAR-10 ResNet-20, 30 epochs (marker size: inference latency at batch 128)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def progress(results: Path) -> str:
    """Runs still in progress (or finished): epochs done, test accuracy, CPU seconds per epoch, and the signals each
    dense epoch recorded — written to ``progress.md`` so that a benchmark spanning sessions shows where it is."""
    lines = ["# CIFAR-10 full benchmark: runs in progress", "",
             "Per run, from its `metrics.jsonl` (the trainer's log). CPU s: process CPU time of the epoch's training "
             "loop (+ the pruner's). EPI: the dense epoch's EPI at 50 % (PaT's τ = 0.983 for magnitude scores).", ""]
    for run_dir in sorted(p for p in (results / "runs").glob("*") if p.is_dir()):
        metrics = run_dir / "metrics.jsonl"
        if not metrics.exists():
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        segments_path = run_dir.with_name(run_dir.name + ".segments.json")
        segments = json.loads(segments_path.read_text()) if segments_path.exists() else []
        machines = sorted({s["machine"].get("cpu", "?") + " (" + "/".join(s["machine"].get("cpu_flags", [])) + ")"
                           for s in segments})
        lines += [f"## {run_dir.name}: {len(rows)} epochs done", "", f"Machines: {', '.join(machines) or '?'}; "
                  f"segments started at epochs {[s['from_epoch'] for s in segments]} (commits "
                  f"{[s['commit'] for s in segments]}).", "",
                  "| epoch | steps | phase | test acc. | CPU s | pruner CPU s | EPI 30 % | EPI 50 % | EPI 70 % | "
                  "weight change (Eq. 11) | events |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        steps = 0
        for r in rows:
            steps += r.get("batches") or 0
            epi = (r.get("pruner") or {}).get("epi") or {}
            cells = [_num3(epi.get(k)) for k in ("0.3", "0.5", "0.7")]
            wc = (r.get("pruner") or {}).get("weight_change_score")
            events = len(r.get("events") or [])
            lines.append(f"| {r['epoch']} | {steps} | {r.get('phase')} | {_pct(r.get('test_accuracy'))} | "
                         f"{r.get('cpu_seconds', 0):.0f} | {r.get('pruner_cpu_seconds', 0):.1f} | " + " | ".join(cells) +
                         f" | {_num3(wc)} | {events or ''} |")
        lines.append("")
    text = "\n".join(lines)
    (results / "progress.md").write_text(text)
    return text


def _num3(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"
