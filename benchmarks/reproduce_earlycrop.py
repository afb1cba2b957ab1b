"""EarlyCroP Tables 1/2 on CIFAR-10: structured and unstructured CroP, CroPit, EarlyCroP, Random, SNIP, GraSP and
LTR at high weight sparsity, with the paper's cost columns. Run through ``reproduce.py --part earlycrop``; writes
``results/reproduction_earlycrop_<profile>.json``, summarised in ``REPRODUCTION.md``.

Profiles:

* ``quick`` — this 2-core CPU, one thread per run: ResNet-18 at width 16 (0.7 M parameters instead of 11 M) on a
  class-balanced CIFAR-10 subset (4,000 training and 2,000 test images, 32 × 32; the same subset as PaT's quick
  profile), 8 epochs of Adam 2e-3 with a one-cycle schedule (EarlyCroP's recipe, scaled down: 80 epochs on the
  full set there), batch 64, bf16 + channels_last; 95 % weight sparsity (Table 1); EarlyCroP's dense phase capped
  at 3 epochs (the paper's m), its Algorithm 1 as 4 halving steps within the first 8 batches of the pruning epoch
  (2 scored batches per step); CroPit as 4 halving steps within the first 4 batches; LTR with 2 rounds rewound to
  epoch 1. Twelve runs: 38 min of one CPU thread (2026-11-30). A plumbing and trend check: at this size and
  length, accuracy differences of a few points are noise.
* ``full`` — a GPU: ResNet-18 (width 64) on all of CIFAR-10, 80 epochs, batch 256, Adam 2e-3 one-cycle, LTR with
  its default rounds (Frankle's 20 % per round, at most 10). Not run (no GPU was lent).
* ``smoke`` — synthetic data, a tiny CNN, 2 epochs, in-process: checks that this part runs.

Structured rows prune to 95 % of the *parameters* (``--target params``) with single-channel widths, so their
weight sparsity is close to the unstructured rows' (the paper shows "results closest to 95 % weight sparsity").
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

#: the paper's Table 1 (ResNet-18 / CIFAR-10, 95 %; mean of three runs) — the numbers our rows stand beside
PAPER_TABLE1 = {
    "Dense": {"acc": 91.5, "train_h": 0.78, "batch_ms": 109, "disk_mb": 398},
    "Random-S": {"acc": 86.3, "weight_sp": 93.7, "node_sp": 75.0, "train_h": 0.68, "batch_ms": 82, "disk_mb": 24.9},
    "CroP-S": {"acc": 87.5, "weight_sp": 93.6, "node_sp": 72.3, "train_h": 0.67, "batch_ms": 91, "disk_mb": 25.4},
    "CroPit-S": {"acc": 87.8, "weight_sp": 95.0, "node_sp": 74.5, "train_h": 0.52, "batch_ms": None, "disk_mb": 19.6},
    "EarlyCroP-S": {"acc": 91.0, "weight_sp": 95.1, "node_sp": 65.8, "train_h": 0.52, "batch_ms": 66, "disk_mb": 19.2},
    "Random-U": {"acc": 84.9, "weight_sp": 95.0, "train_h": 0.78, "batch_ms": 102, "disk_mb": 12.0},
    "SNIP-U": {"acc": 88.2, "weight_sp": 95.0, "train_h": 0.79, "batch_ms": 105, "disk_mb": 12.0},
    "GraSP-U": {"acc": 88.4, "weight_sp": 95.0, "train_h": 0.79, "batch_ms": 106, "disk_mb": 12.0},
    "CroP-U": {"acc": 87.9, "weight_sp": 95.0, "train_h": 0.75, "batch_ms": 107, "disk_mb": 12.0},
    "CroPit-U": {"acc": 89.1, "weight_sp": 95.0, "train_h": 0.80, "batch_ms": 113, "disk_mb": 12.0},
    "EarlyCroP-U": {"acc": 91.1, "weight_sp": 95.0, "train_h": 0.74, "batch_ms": 97, "disk_mb": 12.0},
    "LTR": {"acc": 91.5, "weight_sp": 95.0, "train_h": 1.94, "batch_ms": 111, "disk_mb": 12.0},
}
#: the claims of the paper's text that the table checks
CLAIMS = [
    ("early", "Pruning early (in the lazy-kernel regime) beats pruning before training with the same criterion: "
              "EarlyCroP-S/U above CroP and CroPit (§5.1; Table 1: 91.0 vs 87.5/87.8 structured, 91.1 vs "
              "87.9/89.1 unstructured)"),
    ("ltr", "EarlyCroP-U matches LTR's accuracy (91.1 vs 91.5) at a fraction of its cost: \"about 5 times less "
            "expensive than the LTH\" (§1); Table 1: LTR 1.94 h vs EarlyCroP-U 0.74 h (2.6×)"),
    ("structured", "Structured pruning cuts training time and batch time (EarlyCroP-S: −33 % training time, −39 % "
                   "batch time, Table 1), unstructured pruning saves neither (batch time 97–113 ms vs 109 dense)"),
    ("disk", "Disk size: all 95 %-sparse models are a few percent of the dense one (398 MB → 12–25 MB); \"for the "
             "model size on disk we do not find a significant difference among pruning methods\""),
]


def profile(args: Any, prepare_subset: Any) -> dict[str, Any]:
    """The base configuration and settings of the profile."""
    from earlyprune.training import TrainConfig

    if args.profile == "smoke":
        base = TrainConfig(model="small_cnn", model_args={"width": 8}, dataset="synthetic:64", image_size=8, epochs=3,
                           batch_size=16, steps=2, progress="none", device=args.device, round_to=1, optimizer="adam",
                           lr=2e-3, schedule="onecycle", weight_decay=0.0)
        return dict(base=base, ratio=0.9, cap=1, lottery=(1, 1), isolate=False, batch_reps=3)
    if args.profile == "quick":
        data = prepare_subset(Path(args.data), args.root / "data", train_per_class=400, test_per_class=200)
        base = TrainConfig(model="resnet18", model_args={"width": 16}, dataset=f"folder:{data}", epochs=8,
                           batch_size=64, optimizer="adam", lr=2e-3, weight_decay=0.0, schedule="onecycle",
                           precision="bf16", channels_last=True, device=args.device, threads=args.threads or 1,
                           progress="log", round_to=1)
        return dict(base=base, ratio=0.95, cap=3, lottery=(2, 1), isolate=True, batch_reps=20)
    base = TrainConfig(model="resnet18", dataset=f"folder:{args.data}", epochs=80, batch_size=256, optimizer="adam",
                       lr=2e-3, weight_decay=0.0, schedule="onecycle", precision="bf16", channels_last=True,
                       device=args.device, threads=args.threads, progress="log", round_to=1)
    return dict(base=base, ratio=0.95, cap=30, lottery=(None, 1), isolate=True, batch_reps=50)


def specs(settings: dict[str, Any], root: Path) -> list[tuple[str, Any]]:
    """``(row label, RunSpec)`` of every row of the table."""
    from earlyprune.experiments.compare import lottery_options
    from earlyprune.experiments.plan import make_spec

    base, ratio, cap = settings["base"], settings["ratio"], settings["cap"]
    structured = replace(base, granularity="channels", target="params")
    unstructured = replace(base, granularity="weights")
    halving = {"schedule": "halving"}
    rows: list[tuple[str, Any, dict[str, Any]]] = [
        ("Dense", base, dict(criterion="magnitude", policy="never", what="dense")),
        ("Random-S", structured, dict(criterion="random", policy="before:1", what="before", steps=1)),
        ("CroP-S", structured, dict(criterion="crop", policy="before:1", what="before", steps=1)),
        ("CroPit-S", structured, dict(criterion="crop", policy="before:4", what="before-it", steps=4)),
        ("EarlyCroP-S", structured, dict(criterion="crop", policy=f"earlycrop:cap={cap},batches=8",
                                         what="earlycrop", steps=4, pruner_args=halving)),
        ("Random-U", unstructured, dict(criterion="random", policy="before:1", what="before", steps=1)),
        ("SNIP-U", unstructured, dict(criterion="snip", policy="before:1", what="before", steps=1)),
        ("GraSP-U", unstructured, dict(criterion="grasp", policy="before:1", what="before", steps=1)),
        ("CroP-U", unstructured, dict(criterion="crop", policy="before:1", what="before", steps=1)),
        ("CroPit-U", unstructured, dict(criterion="crop", policy="before:4", what="before-it", steps=4)),
        ("EarlyCroP-U", unstructured, dict(criterion="crop", policy=f"earlycrop:cap={cap},batches=8",
                                           what="earlycrop", steps=4, pruner_args=halving)),
    ]
    rounds, rewind = settings["lottery"]
    if rounds is None:
        rounds, rewind = lottery_options("ltr", ratio)
    rows.append(("LTR", replace(unstructured, lottery_rounds=rounds, lottery_rewind=rewind),
                 dict(criterion="magnitude", policy="never", what=f"ltr{rounds}-k{rewind}")))
    out = []
    for label, cfg, kw in rows:
        cfg = replace(cfg, steps=kw.pop("steps", cfg.steps), pruner_args=kw.pop("pruner_args", {}))
        level = "S" if label.endswith("-S") else "U" if label.endswith("-U") or label == "LTR" else "dense"
        name_level = {"S": "channels", "U": "weights", "dense": ""}[level]
        what = kw.pop("what")
        out.append((label, make_spec(cfg, root, ratio=ratio, what=f"{what}{'-' if name_level else ''}{name_level}",
                                     with_ratio=label != "Dense", **kw)))
    return out


def batch_ms(run_path: Path, config: dict[str, Any], batch_size: int, reps: int) -> float | None:
    """Median milliseconds of one training step (forward, cross-entropy, backward, SGD step) of the run's final
    model on one CPU thread, fp32, batch ``batch_size`` of 32 × 32 images — EarlyCroP's batch time, on this CPU.
    Timed by the thread's CPU time (``time.thread_time``): on a shared machine the wall clock also counts the time
    other jobs hold the core. A masked model is timed with its masks (dense kernels)."""
    import earlyprune
    from earlyprune.models import create_model

    path = run_path / "model.safetensors"
    if not path.is_file():
        return None
    model = earlyprune.load(path, create_model(config["model"], num_classes=10, in_channels=3,
                                               **(config.get("model_args") or {}))).train()
    size = config.get("image_size") or 32
    x, y = torch.randn(batch_size, 3, size, size), torch.randint(0, 10, (batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for i in range(reps + 2):
            t0 = time.thread_time()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if i >= 2:  # warm-up
                times.append(time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1000 * statistics.median(times)


def rows(labelled: list[tuple[str, Any]], batch_reps: int) -> list[dict[str, Any]]:
    """One result row per method: accuracy, sparsities, times, memory, disk, emissions."""
    from earlyprune.reports import load_run

    out = []
    for label, spec in labelled:
        run = load_run(spec.path)
        s = run.summary or {}
        disk = s.get("disk") or {}
        out.append({
            "method": label, "run": spec.name, "complete": run.complete, "top1": run.final_accuracy,
            "weight_sparsity": s.get("weight_sparsity"), "node_sparsity": s.get("node_sparsity"),
            "prune_epoch": run.prune_epoch, "epochs_trained": len(run.rows),
            "train_seconds": run.train_seconds,
            "batch_ms": batch_ms(spec.path, run.config, spec.config.batch_size, batch_reps) if run.complete else None,
            "peak_memory_bytes": run.peak_memory_bytes, "params": (s.get("params") or {}).get("final"),
            "csr_bytes": disk.get("csr_bytes"), "reference_disk": disk.get("reference_size"),
            "file_bytes": s.get("model_bytes"), "dense_bytes": disk.get("dense_bytes"),
            "co2_g": 1000 * run.energy["co2_kg"] if run.energy else None,
            "energy_wh": 1000 * run.energy["kwh"] if run.energy else None})
    return out


def run(args: Any, prepare_subset: Any) -> dict[str, Any]:
    """Train what is missing (resumable) and collect the rows."""
    from earlyprune.experiments.runner import run_all

    settings = profile(args, prepare_subset)
    labelled = specs(settings, args.root / "earlycrop")
    if args.dry_run:
        for label, spec in labelled:
            print(f"{label:12} {spec.path}")
        return {}
    energy = importlib.util.find_spec("codecarbon") is not None
    t0 = time.time()
    run_all([s for _, s in labelled], isolate=settings["isolate"], energy=energy)
    result = rows(labelled, settings["batch_reps"])
    return {"rows": result, "wall_seconds": time.time() - t0, "energy_measured": energy,
            "ratio": settings["ratio"], "earlycrop_cap": settings["cap"], "lottery": settings["lottery"],
            "root": str(args.root / "earlycrop")}


# -- the Markdown ------------------------------------------------------------------------------------------------
def _f(value: Any, spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


def markdown(res: dict[str, Any], title: str, markdown_table: Any) -> str:
    """The EarlyCroP section of REPRODUCTION.md: our rows, the paper's beside them, and each claim."""
    rows_ = {r["method"]: r for r in res["rows"]}
    dense = rows_.get("Dense") or {}
    header = ["method", "top-1 (paper)", "weight sp.", "node sp.", "epochs", "train s (× dense) [paper h]",
              "batch ms (× dense) [paper]", "peak RSS MiB", "CSR KiB", "ref. formula /1e6 [paper MB]",
              "file KiB", "CO₂ g"]
    table = []
    for r in res["rows"]:
        paper = PAPER_TABLE1.get(r["method"], {})
        rel_t = r["train_seconds"] / dense["train_seconds"] if r["train_seconds"] and dense.get("train_seconds") \
            else None
        rel_b = r["batch_ms"] / dense["batch_ms"] if r["batch_ms"] and dense.get("batch_ms") else None
        table.append([
            r["method"], f"{_f(r['top1'], '.1f', 100)} ({_f(paper.get('acc'), '.1f')})",
            _f(r["weight_sparsity"], ".1%") if r["method"] != "Dense" else "–",
            _f(r["node_sparsity"], ".1%") if r["method"] != "Dense" else "–", str(r["epochs_trained"]),
            f"{_f(r['train_seconds'], ',.0f')} ({_f(rel_t, '.2f')}) [{_f(paper.get('train_h'), '.2f')}]",
            f"{_f(r['batch_ms'], '.0f')} ({_f(rel_b, '.2f')}) [{_f(paper.get('batch_ms'), '.0f')}]",
            _f(r["peak_memory_bytes"], ",.0f", 2 ** -20), _f(r["csr_bytes"], ",.0f", 2 ** -10),
            f"{_f(r['reference_disk'], '.2f', 1e-6)} [{_f(paper.get('disk_mb'), '.1f')}]",
            _f(r["file_bytes"], ",.0f", 2 ** -10), _f(r["co2_g"], ".1f")])
    parts = [f"## EarlyCroP Tables 1/2, {title}",
             f"Our rows at {100 * res['ratio']:g} % weight sparsity, the paper's Table 1 (ResNet-18 / CIFAR-10, 95 %, "
             "GPU) in brackets. "
             "Train s: the run's training seconds, wall clock (evaluation excluded; LTR: all its rounds) — on this "
             "shared 2-core machine (load average ≈ 11 while these ran) differences of ±20 % between runs are noise; "
             "batch ms: the CPU time of one fp32 training step of the final model at the run's batch size on one "
             "thread (median of 20, after the runs), masks included — the speed comparison to read; peak RSS: "
             "the run's process (a CPU has no GPU RAM; the dataset is included). **Weight "
             "masks run on dense kernels: the U rows save neither time nor memory — only disk.** CSR: the "
             "weights in compressed sparse rows with fp32 values and the narrowest integer indices; ref. formula: "
             "the EarlyCroP reference code's `Σ nnz·34 + 2·(min(rows, cols)+1)` / 10⁶, the paper's \"Disk (MB)\"; "
             "file: the `earlyprune.save` file (masked weights stored sparse). CO₂ needs codecarbon "
             + ("(measured)." if res.get("energy_measured") else "(not installed here: not measured)."),
             markdown_table(header, table)]
    parts.append(_claims(rows_))
    return "\n\n".join(parts)


def _claims(r: dict[str, dict[str, Any]]) -> str:
    def acc(m: str) -> float | None:
        return None if m not in r or r[m]["top1"] is None else 100 * r[m]["top1"]

    def secs(m: str) -> float | None:
        return r.get(m, {}).get("train_seconds")

    def ratio(a: float | None, b: float | None) -> str:
        return "–" if a is None or not b else f"{a / b:.2f}×"

    measured = {
        "early": f"EarlyCroP-S {_f(acc('EarlyCroP-S'), '.1f')} vs CroP-S {_f(acc('CroP-S'), '.1f')} / CroPit-S "
                 f"{_f(acc('CroPit-S'), '.1f')}; EarlyCroP-U {_f(acc('EarlyCroP-U'), '.1f')} vs CroP-U "
                 f"{_f(acc('CroP-U'), '.1f')} / CroPit-U {_f(acc('CroPit-U'), '.1f')}",
        "ltr": f"LTR {_f(acc('LTR'), '.1f')} vs EarlyCroP-U {_f(acc('EarlyCroP-U'), '.1f')}; LTR's training time "
               f"{ratio(secs('LTR'), secs('EarlyCroP-U'))} EarlyCroP-U's, {ratio(secs('LTR'), secs('Dense'))} "
               f"dense (its {r.get('LTR', {}).get('epochs_trained', '–')} epochs against "
               f"{r.get('Dense', {}).get('epochs_trained', '–')})",
        "structured": f"training time vs dense: EarlyCroP-S {ratio(secs('EarlyCroP-S'), secs('Dense'))}, "
                      f"CroPit-S {ratio(secs('CroPit-S'), secs('Dense'))}, EarlyCroP-U "
                      f"{ratio(secs('EarlyCroP-U'), secs('Dense'))}, CroP-U {ratio(secs('CroP-U'), secs('Dense'))}; "
                      f"batch time vs dense: EarlyCroP-S "
                      f"{ratio(r.get('EarlyCroP-S', {}).get('batch_ms'), r.get('Dense', {}).get('batch_ms'))}, "
                      f"EarlyCroP-U "
                      f"{ratio(r.get('EarlyCroP-U', {}).get('batch_ms'), r.get('Dense', {}).get('batch_ms'))}",
        "disk": "CSR size / the dense model's CSR size (the paper's comparison): " + ", ".join(
            f"{m} {ratio(v.get('csr_bytes'), r.get('Dense', {}).get('csr_bytes'))}" for m, v in r.items()
            if m != "Dense") + "; saved file / dense file: " + ", ".join(
            f"{m} {ratio(v.get('file_bytes'), r.get('Dense', {}).get('file_bytes'))}" for m, v in r.items()
            if m != "Dense"),
    }
    lines = ["| claim (EarlyCroP) | measured here |", "|---|---|"]
    lines += [f"| {text} | {measured[key]} |" for key, text in CLAIMS]
    return "\n".join(lines)
