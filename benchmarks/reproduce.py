"""Reproduce PaT's comparison on CIFAR-10: the oracle grid, every when-to-prune policy, both criterion families
(magnitude, taylor = gradient), ratios 0.3 / 0.5 / 0.7, plus a 3SP Table-2-style table at 50 % and 80 % MACs
removed. Writes ``results/reproduction_<profile>.json`` and (quick / full) ``REPRODUCTION.md``. With
``--part earlycrop``: EarlyCroP's Tables 1/2 instead (structured and unstructured CroP, CroPit, EarlyCroP, SNIP,
GraSP, random, LTR at 95 % weight sparsity; :mod:`reproduce_earlycrop`), ``results/reproduction_earlycrop_<profile>
.json``.

Profiles:

* ``quick`` — this 2-core CPU: ResNet-20 on a class-balanced CIFAR-10 subset (4,000 training and 2,000 test
  images cut from ``cifar10-jpeg.zip``), 10 epochs, bf16 + channels_last, grid 0-4, policies capped at epoch 4,
  ``random:0-4`` x 3; 53 + 5 runs, one thread each: TIME_QUICK on 2026-11-21 with the other core busy. A plumbing
  and trend check: at this size the accuracy differences between policies are of the order of the noise.
* ``full`` — a GPU: ResNet-56 (``--model resnet20`` for the smaller one) on the whole training set, 90 epochs of
  PaT's recipe (linear warm-up 8/90, cosine, SGD 0.1, batch 128), bf16; grid 0,1,2,4,8,12,16,20,30, ``random:0-30``
  x 10, ``before`` with ``snip`` and ``crop``: 116 + 5 runs of 90 epochs. Not run yet (no GPU was lent); its
  duration is unmeasured — on the order of GPU-days, so split it with ``--model resnet20`` or run it in parts
  (it resumes).
* ``smoke`` — synthetic data, a tiny CNN, 2 epochs, in-process: checks that this script runs (seconds).

Both real profiles prune single channels (``round_to=1``, as PaT does); what rounding buys is measured by
``round_to.py``.

Every run is an ``earlyprune compare`` run directory, so an interrupted profile continues where it stopped when
the same command is run again; ``earlyprune report benchmarks/runs/<profile>/compare`` redraws the tables and
figures at any time.

    python benchmarks/reproduce.py --profile quick --threads 1 [--data /work/shared/data/cifar10-jpeg.zip] [--dry-run]
    python benchmarks/reproduce.py --profile full --device cuda [--model resnet20]
    python benchmarks/reproduce.py --profile smoke --root /tmp/smoke
    nice python benchmarks/reproduce.py --part earlycrop --profile quick --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import zipfile
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import torch

from earlyprune.experiments.compare import compare
from earlyprune.experiments.plan import make_spec
from earlyprune.experiments.runner import run_all
from earlyprune.reports import Run, load_comparison, load_run
from earlyprune.reports.comparison import Comparison
from earlyprune.reports.tables import markdown_table, oracle_table, pct, policy_table, summary_table
from earlyprune.training import TrainConfig

HERE = Path(__file__).resolve().parent
DEFAULT_ZIP = Path("/work/shared/data/cifar10-jpeg.zip")
CRITERIA = ["magnitude", "taylor"]
RATIOS = [0.3, 0.5, 0.7]
#: PaT's claims that the results are set against (ImageNet; §4, Tables 1/4/5, Figure 5, cost paragraph)
CLAIMS = {
    "epi_gap": "EPI's average top-1 gap to the oracle: 0.132 (magnitude) / 0.155 (gradient) points over "
               "ResNet-50/34 and MobileNet-V1 (Table 1), 0.13-0.16 points (Tables 4/5)",
    "baselines": "Init (prune at initialisation) 1.38-2.02 points, pre-defined epoch 0.20-0.21, random 2.2-2.5 "
                 "(Tables 1, 4, 5); EPI is automatic and best on average",
    "speed": "up to 30 % training-time reduction at 50 % of the channels, 2.4x training-cost reduction against "
             "train-prune-finetune (§4.3); EPI prunes later than Init yet trains faster (Figure 5)",
}


#: the papers' definitions, whatever the trainer's defaults: PaT's ratio counts channels, no per-group limit, no
#: compile (bit-exact resumes)
PAPER = {"target": "channels", "max_group_ratio": 1.0, "compile": "off"}


def profiles(args: argparse.Namespace) -> dict[str, Any]:
    """The three profiles: base configuration, comparison and 3SP settings."""
    device = args.device
    if args.profile == "smoke":
        base = TrainConfig(model="small_cnn", model_args={"width": 4}, dataset="synthetic:64", image_size=8,
                           epochs=2, batch_size=16, steps=2, progress="none", device=device, round_to=1,
                           **PAPER)
        return dict(base=base, oracle=[0, 1], repeats=2, isolate=False,
                    policies=["init", "epoch:1", "random:0-1", "epi:r=1,cap=1", "earlycrop:cap=1",
                              "earlybird:cap=1", "before@snip"],
                    three_sp={"epi": "epi:r=1,cap=1", "lambda": 0.05}, latency_reps=3)
    if args.profile == "quick":
        data = prepare_subset(Path(args.data), args.root / "data", train_per_class=400, test_per_class=200)
        base = TrainConfig(model=args.model or "resnet20", dataset=f"folder:{data}", epochs=10, batch_size=64,
                           lr=0.05, precision="bf16", channels_last=True, device=device, threads=args.threads,
                           progress="log", round_to=1, **PAPER)
        return dict(base=base, oracle=[0, 1, 2, 3, 4], repeats=3, isolate=True,
                    policies=["init", "epoch:4", "random:0-4", "epi:r=2,cap=4", "earlycrop:cap=4",
                              "earlybird:cap=4", "before@snip"],
                    three_sp={"epi": "epi:r=2,cap=4", "lambda": 0.05}, latency_reps=50)
    base = TrainConfig(model=args.model or "resnet56", dataset=f"folder:{args.data}", epochs=90, batch_size=128,
                       lr=0.1, precision="bf16", channels_last=True, device=device, threads=args.threads,
                       progress="log", round_to=1, **PAPER)
    return dict(base=base, oracle=[0, 1, 2, 4, 8, 12, 16, 20, 30], repeats=10, isolate=True,
                policies=["init", "epoch:30", "random:0-30", "epi", "earlycrop", "earlybird", "before@snip",
                          "before@crop"],
                three_sp={"epi": "epi", "lambda": 0.05}, latency_reps=100)


def prepare_subset(source: Path, out_dir: Path, *, train_per_class: int, test_per_class: int) -> Path:
    """A class-balanced CIFAR-10 subset zip (the first N images of every class of each split), made once."""
    target = out_dir / f"cifar10-{train_per_class}x{test_per_class}.zip"
    if target.is_file():
        return target
    if not source.is_file():
        raise SystemExit(f"reproduce.py: {source} not found; pass --data PATH/TO/cifar10-jpeg.zip")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[tuple[str, str], int] = {}
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for name in sorted(src.namelist()):
            parts = name.split("/")
            if len(parts) != 3 or not parts[2] or parts[0] not in ("train", "test"):
                continue
            key = (parts[0], parts[1])
            limit = train_per_class if parts[0] == "train" else test_per_class
            if counts.get(key, 0) < limit:
                counts[key] = counts.get(key, 0) + 1
                dst.writestr(name, src.read(name))
    tmp.replace(target)
    return target


# -- the 3SP Table-2 part ----------------------------------------------------------------------------------------
def three_sp_specs(base: TrainConfig, root: Path, settings: dict[str, Any]) -> list[tuple[str, Any]]:
    """At 50 % and 80 % of the MACs removed: 3SP (snip before training; compute-aware at 80 %) and PaT (epi,
    magnitude), plus the dense run for reference."""
    flops = replace(base, target="flops")
    lam = settings["lambda"]
    out = [("dense", make_spec(flops, root, criterion="magnitude", ratio=0.5, policy="never", what="dense",
                               with_ratio=False))]
    for ratio in (0.5, 0.8):
        snip_base = replace(flops, pruner_args={"compute_aware": lam}) if ratio == 0.8 else flops
        label = f"3SP snip before training{' + compute-aware λ=' + str(lam) if ratio == 0.8 else ''}"
        out.append((label, make_spec(snip_base, root, criterion="snip", ratio=ratio, policy=f"before:{base.steps}",
                                     what="before" + ("-ca" if ratio == 0.8 else ""))))
        out.append((f"PaT {settings['epi']} (magnitude)", make_spec(flops, root, criterion="magnitude", ratio=ratio,
                                                                  policy=settings["epi"], what="epi")))
    return out


def latency_ms(run: Run, reps: int) -> float | None:
    """Median batch-1 CPU inference latency of the run's final model (one thread, eval mode, fp32)."""
    import earlyprune
    from earlyprune.models import create_model

    path = run.path / "model.safetensors"
    if not path.is_file():
        return None
    cfg = run.config
    size = cfg.get("image_size") or 32
    model = earlyprune.load(path, create_model(cfg["model"], num_classes=10, in_channels=3,
                                               **(cfg.get("model_args") or {}))).eval()
    x = torch.randn(1, 3, size, size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1000 * statistics.median(times)


def three_sp_rows(specs: list[tuple[str, Any]], reps: int) -> list[dict[str, Any]]:
    rows = []
    for label, spec in specs:
        run = load_run(spec.path)
        s = run.summary or {}
        rows.append({"method": label, "run": spec.name, "target_macs_removed": None if label == "dense" else
                     spec.config.ratio, "macs_removed": (s.get("macs") or {}).get("reduction"),
                     "top1": run.final_accuracy, "prune_epoch": run.prune_epoch,
                     "dense_epoch_seconds": s.get("dense_epoch_seconds"),
                     "sparse_epoch_seconds": s.get("sparse_epoch_seconds"), "train_seconds": run.train_seconds,
                     "pruning_seconds": run.pruning_seconds, "latency_ms_batch1_cpu": latency_ms(run, reps),
                     "model_bytes": s.get("model_bytes"), "complete": run.complete})
    return rows


# -- results -----------------------------------------------------------------------------------------------------
def comparison_results(c: Comparison) -> dict[str, Any]:
    """The numbers that matter, per criterion / ratio / policy: accuracy, gap, epoch, speedup, MACs-ideal."""
    cells = []
    for cell in c.cells:
        cells.append({"kind": cell.kind, "policy": cell.label, "criterion": cell.criterion, "ratio": cell.ratio,
                      "top1": cell.accuracy, "prune_epochs": cell.prune_epochs, "gap_points": c.gap(cell),
                      "speedup": cell.mean(c.speedup), "macs_ideal_speedup": cell.mean(lambda r: r.ideal_speedup),
                      "train_seconds": cell.mean(lambda r: r.train_seconds),
                      "macs_reduction": cell.mean(lambda r: r.nested("macs", "reduction")),
                      "runs": [r.name for r in cell.runs], "problems": [str(p) for p, _ in cell.problems]})
    avg_gap = {crit: {label: _avg(c.gap(x) for x in c.policy_cells(crit, label)) for label in c.labels}
               for crit in c.criteria}
    return {"dense_top1": c.dense_accuracy(), "dense_train_seconds": c.dense_seconds(), "avg_gap_points": avg_gap,
            "oracle": {f"{crit}@{r:g}": c.oracle(crit, r) for crit in c.criteria for r in c.ratios},
            "cells": cells, "missing": [f"{p}: {why}" for p, why in c.problems()],
            "tables": {"summary": summary_table(c), "speed": speed_table(c),
                       "policy": {crit: policy_table(c, crit) for crit in c.criteria},
                       "oracle": {crit: oracle_table(c, crit) for crit in c.criteria}}}


def speed_table(c: Comparison) -> str:
    """Training-time speedup over the dense run per policy and ratio (mean over the criteria and repeats), with
    the MACs-ideal speedup and the fraction of the ideal time saving achieved: (1 − 1/s) / (1 − 1/s_ideal)."""
    rows = []
    kinds = [("oracle grid (all epochs)", lambda crit, r: c.oracle_points(crit, r))] + [
        (label, (lambda lb: lambda crit, r: [x for x in [c.find("policy", lb, crit, r)] if x is not None])(label))
        for label in c.labels]
    for name, cells_of in kinds:
        row = [name]
        for ratio in c.ratios:
            cells = [x for crit in c.criteria for x in cells_of(crit, ratio)]
            actual = _avg(x.mean(c.speedup) for x in cells)
            ideal = _avg(x.mean(lambda r: r.ideal_speedup) for x in cells)
            frac = (1 - 1 / actual) / (1 - 1 / ideal) if actual and ideal and ideal > 1 else None
            row.append("–" if actual is None else f"{actual:.2f}x / {ideal:.2f}x"
                       + ("" if frac is None else f" ({frac:.0%})"))
        rows.append(row)
    return markdown_table(["policy"] + [f"{100 * r:g}% of channels" for r in c.ratios], rows)


def _avg(values: Any) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def machine(threads: int | None) -> dict[str, Any]:
    import torch_pruning

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_pruning": getattr(torch_pruning, "__version__", "?"), "cpu": platform.processor() or
            platform.machine(), "threads_per_run": threads or torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


#: which form of each seed's rule the committed rows used (the defaults changed in issue 20)
FORMS = (
    "**Which form of each seed's rule these rows used** (issue 20). Every row on this page was made before "
    "2026-12-07 and used the forms that were then the defaults: EarlyCroP's trigger with Eq. 11's "
    "normalisation `|Δ_t − Δ_{t−1}| / |Δ_1|` (`earlycrop:norm=eq11` today; the default is now the authors' "
    'Algorithm 1, `(Δ_t − Δ_{t−1}) / ‖Θ_0‖²`), 3SP\'s compute-aware score with `cost="removed"` (the compute a '
    "channel's removal saves, next-layer input slices and coupled producers included; the default is now the "
    'paper\'s per-filter cost, `cost="filter"`), EPI\'s `N_t` under the run\'s `min_channels` / `round_to` / '
    "`max_group_ratio` (now PaT's unconstrained top-k) and no `min_steps` wait (now 1,000 optimizer steps). "
    'Rerunning with the old forms: `earlycrop:norm=eq11`, `compute_aware` with `ComputeAware(..., '
    'cost="removed")`, `epi:min_steps=0`.'
)


def reproduction_md(results: dict[str, dict[str, Any]]) -> str:
    """REPRODUCTION.md from the results of the profiles that have run: each claim next to what was measured."""
    parts = ["# Reproduction of PaT (and 3SP Table 2) on CIFAR-10",
             "Generated by `python benchmarks/reproduce.py --profile quick|full` from "
             "`results/reproduction_<profile>.json`; the reading at the end is written by hand in "
             "`reproduction_notes.md` and appended. Numbers are never edited.", FORMS]
    for profile, res in results.items():
        comp, cfg = res["comparison"], res["config"]
        parts.append(f"## Profile `{profile}` ({res['date']}; {cfg['model']}, {cfg['dataset']}, {cfg['epochs']} "
                     f"epochs, {cfg['precision']}; {res['machine']['gpu'] or res['machine']['cpu']})")
        gaps = comp["avg_gap_points"]
        labels = list(next(iter(gaps.values())).keys()) if gaps else []
        rows = [[crit] + [("–" if gaps[crit][lb] is None else f"{gaps[crit][lb]:.2f}") for lb in labels]
                for crit in gaps]
        parts += [f"**Claim** — {CLAIMS['epi_gap']}; {CLAIMS['baselines']}.",
                  "Measured: average gap to the oracle in points (lower is better):",
                  markdown_table(["criterion"] + labels, rows)]
        tables = comp.get("tables") or {}
        for crit, table in (tables.get("policy") or {}).items():
            parts += [f"Top-1 per policy, `{crit}` (prune epoch in brackets; PaT Tables 4/5 layout):", table]
        for crit, table in (tables.get("oracle") or {}).items():
            parts += [f"Oracle grid, `{crit}`: final top-1 by pruning epoch (best in bold):", table]
        speed_rows = []
        for cell in comp["cells"]:
            if cell["kind"] == "policy" and cell["policy"].startswith("epi") and cell["top1"] is not None:
                ideal, actual = cell["macs_ideal_speedup"], cell["speedup"]
                frac = ((1 - 1 / actual) / (1 - 1 / ideal)) if actual and ideal and ideal > 1 else None
                speed_rows.append([cell["criterion"], f"{100 * cell['ratio']:g}%", pct(cell["top1"]),
                                   ", ".join(map(str, cell["prune_epochs"])),
                                   "–" if actual is None else f"{actual:.2f}x",
                                   "–" if ideal is None else f"{ideal:.2f}x", "–" if frac is None else f"{frac:.0%}"])
        parts += [f"**Claim** — {CLAIMS['speed']}.",
                  f"Measured (dense run: {pct(comp['dense_top1'])} top-1, {comp['dense_train_seconds'] or 0:,.0f} s "
                  f"of training): training-time speedup of `epi` over dense, the MACs-ideal speedup and the "
                  f"fraction of the ideal time saving achieved:",
                  markdown_table(["criterion", "ratio", "top-1", "prune epoch", "speedup", "MACs-ideal",
                                  "of ideal"], speed_rows)]
        if tables.get("speed"):
            parts += ["Every policy: measured speedup over dense / MACs-ideal speedup (fraction of the ideal time "
                      "saving), mean over both criteria:", tables["speed"]]
        sp_rows = [[r["method"], "–" if r["macs_removed"] is None else f"{r['macs_removed']:.0%}", pct(r["top1"]),
                    _fmt(r["dense_epoch_seconds"], ".1f"), _fmt(r["sparse_epoch_seconds"], ".1f"),
                    _fmt(r["latency_ms_batch1_cpu"], ".2f"), _fmt((r["model_bytes"] or 0) / 1024 or None, ",.0f"),
                    _fmt(r["pruning_seconds"], ".2f")] for r in res["three_sp"]]
        parts += ["3SP Table-2 style, at 50 % and 80 % of the MACs removed (compute-aware 3SP at 80 %):",
                  markdown_table(["method", "MACs removed", "top-1", "s/epoch dense", "s/epoch pruned",
                                  "batch-1 CPU latency (ms)", "model (KiB)", "pruning time (s)"], sp_rows)]
        if comp["missing"]:
            parts.append("Missing or unfinished runs: " + "; ".join(comp["missing"]))
        figures = HERE / "results" / f"reproduction_{profile}"
        parts.append(f"Tables and figures of every run: `earlyprune report {res['root']}`"
                     + (f" (committed: [`results/reproduction_{profile}/`](results/reproduction_{profile}/report.md))."
                        if figures.is_dir() else "."))
    return "\n\n".join(parts) + "\n"


def write_markdown() -> Path:
    """REPRODUCTION.md from every committed ``results/reproduction_<profile>.json`` (and
    ``reproduction_earlycrop_<profile>.json``) plus the notes."""
    done = {pr: json.loads((HERE / "results" / f"reproduction_{pr}.json").read_text()) for pr in ("quick", "full")
            if (HERE / "results" / f"reproduction_{pr}.json").is_file()}
    markdown = reproduction_md(done)
    for pr in ("quick", "full"):
        path = HERE / "results" / f"reproduction_earlycrop_{pr}.json"
        if path.is_file():
            markdown += "\n" + earlycrop_md(json.loads(path.read_text())) + "\n"
    path = HERE / "REPRODUCTION.md"
    path.write_text(with_notes(markdown, HERE / "reproduction_notes.md"), encoding="utf-8")
    return path


def earlycrop_md(res: dict[str, Any]) -> str:
    """The EarlyCroP section of REPRODUCTION.md from one results file."""
    import reproduce_earlycrop

    cfg = res["config"]
    title = (f"profile `{res['profile']}` ({res['date']}; {cfg['model']} {cfg.get('model_args') or ''}, "
             f"{cfg['dataset']}, {cfg['epochs']} epochs, {cfg['precision']}; "
             f"{res['machine']['gpu'] or res['machine']['cpu']}, "
             f"{res['machine']['threads_per_run']} thread(s) per run; {res['run_seconds'] / 60:.0f} min of runs)")
    return reproduce_earlycrop.markdown(res, title, markdown_table)


def with_notes(markdown: str, notes: Path) -> str:
    """The generated tables followed by the hand-written reading of them (``reproduction_notes.md``), which
    survives regeneration."""
    if not notes.is_file():
        return markdown
    return markdown + "\n" + notes.read_text(encoding="utf-8")


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=("quick", "full", "smoke"), required=True)
    p.add_argument("--part", choices=("pat", "earlycrop"), default="pat",
                   help="pat: PaT's comparison and 3SP's table; earlycrop: EarlyCroP's Tables 1/2")
    p.add_argument("--data", default=str(DEFAULT_ZIP), help="cifar10-jpeg.zip (train/<class>, test/<class>)")
    p.add_argument("--root", type=Path, default=None, help="where run directories go (default "
                                                           "benchmarks/runs/<profile>)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--model", default=None, help="override the profile's model (e.g. resnet20 for full)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default results/reproduction_<profile>"
                                                          ".json; smoke: under --root)")
    p.add_argument("--markdown-only", action="store_true", help="rewrite REPRODUCTION.md from the committed "
                                                               "results JSON and reproduction_notes.md; run nothing")
    args = p.parse_args()
    if args.markdown_only:
        write_markdown()
        return 0
    args.root = args.root or HERE / "runs" / args.profile
    if args.part == "earlycrop":
        return earlycrop_main(args)
    settings = profiles(args)
    base: TrainConfig = settings["base"]
    compare_base = replace(base, out_dir=str(args.root), name="compare")
    t0 = time.time()
    compare(compare_base, policies=settings["policies"], ratios=RATIOS, criteria=CRITERIA,
            repeats=settings["repeats"], oracle_epochs=settings["oracle"], isolate=settings["isolate"],
            dry_run=args.dry_run, plots=True)
    specs = three_sp_specs(base, args.root / "3sp", settings["three_sp"])
    if args.dry_run:
        for label, spec in specs:
            print(f"3SP table: {spec.path} ({label})")
        return 0
    run_all([s for _, s in specs], isolate=settings["isolate"])
    comparison = load_comparison(args.root / "compare")
    runs = [r for c in comparison.cells for r in c.complete_runs] + [load_run(s.path) for _, s in specs]
    results = {"profile": args.profile, "date": date.today().isoformat(), "machine": machine(args.threads),
               "wall_seconds": time.time() - t0,  # of this invocation (a rerun skips finished runs)
               "run_seconds": sum((r.train_seconds or 0) + ((r.summary or {}).get("eval_seconds") or 0)
                                  for r in {r.path: r for r in runs}.values()),
               "root": str(args.root / "compare"),
               "config": json.loads(json.dumps(base.resolved().to_dict())),
               "comparison": comparison_results(comparison),
               "three_sp": three_sp_rows(specs, settings["latency_reps"])}
    out = args.out or (args.root / "reproduction_smoke.json" if args.profile == "smoke"
                       else HERE / "results" / f"reproduction_{args.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.profile == "smoke":
        md_path = args.root / "REPRODUCTION.md"
        md_path.write_text(reproduction_md({"smoke": results}), encoding="utf-8")
    else:
        md_path = write_markdown()
    print(f"results: {out}\nsummary: {md_path}")
    return 0


def earlycrop_main(args: argparse.Namespace) -> int:
    """``--part earlycrop``: train the EarlyCroP rows (resumable), write their results JSON and REPRODUCTION.md."""
    import reproduce_earlycrop

    res = reproduce_earlycrop.run(args, prepare_subset)
    if args.dry_run:
        return 0
    settings = reproduce_earlycrop.profile(args, prepare_subset)
    from earlyprune.reports import load_run as _load

    runs = [_load(Path(res["root"]) / r["run"]) for r in res["rows"]]
    res.update(profile=args.profile, date=date.today().isoformat(), machine=machine(settings["base"].threads),
               config=json.loads(json.dumps(settings["base"].resolved().to_dict())),
               run_seconds=sum((r.train_seconds or 0) + ((r.summary or {}).get("eval_seconds") or 0) for r in runs))
    out = args.out or (args.root / "reproduction_earlycrop_smoke.json" if args.profile == "smoke"
                       else HERE / "results" / f"reproduction_earlycrop_{args.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    if args.profile == "smoke":
        md_path = args.root / "REPRODUCTION_earlycrop.md"
        md_path.write_text(earlycrop_md(res) + "\n", encoding="utf-8")
    else:
        md_path = write_markdown()
    print(f"results: {out}\nsummary: {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
