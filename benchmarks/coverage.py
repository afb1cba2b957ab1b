"""Coverage: does pruning during training work on every torchvision classification model?

For each name in ``torchvision.models.list_models(module=torchvision.models)``, built with ``weights=None``
(1000 classes) at a small input size, the whole path of ``earlyprune train`` with ``EarlyPruner``:

1. **dense**: 2 training steps (train mode, batch 2, cross-entropy on every output — auxiliary heads included —
   SGD with momentum 0.9), ``pruner.step()`` after each, ``epoch_end()``;
2. **scores → epoch:1**: the policy ``epoch:1`` makes epoch 1 the pruning epoch; the magnitude criterion is
   accumulated over its batches;
3. **iterative removal**: 2 pruning steps inside epoch 1 (PaT's exponential schedule to 50 % of the channels),
   each with optimizer surgery (momentum buffers sliced), the steps of the epoch training in between;
4. **further steps**: 2 training steps of the pruned model (epoch 2), loss finite;
5. **save → load**: ``earlyprune.save`` and ``earlyprune.load`` onto a freshly built original; the loaded model's
   eval-mode outputs must equal the pruned model's bit for bit.

A model passes if every stage runs, the channels of its prunable groups reach 50 % (within rounding), and its
parameters and MACs shrink. Each model runs in its own subprocess with 1 thread, an address-space limit
(``--memory-gb`` above what the imported libraries map) and a wall-clock limit (``--timeout``), so a hang, a crash
or an out-of-memory failure is recorded for that model and nothing is skipped silently.

Input size: 64×64, except where the architecture fixes it: ViT is built for 64 (``image_size=64``; ViT-H/14: 56),
MaxViT needs 224, Inception-v3 299 (its auxiliary head); a model whose dense step fails at 64 falls back to 224
and 299.

    python benchmarks/coverage.py [--timeout 900] [--memory-gb 8] [--only resnet18,vit_b_16] [--out FILE]
    python benchmarks/coverage.py --markdown FILE.json [RERUN.json]   # the tables for benchmarks/README.md
    python benchmarks/coverage.py --oneshot ...             # the older one-shot check (ep.prune + one step)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("build", "dense", "pruning epoch", "sparse steps", "save/load")
#: constructor arguments that set the input size of architectures built for one size
SIZED = {"vit_h_14": {"image_size": 56}, "vit_": {"image_size": 64}}
FIXED_SIZE = {"vit_h_14": 56, "vit_": 64, "maxvit": 224, "inception": 299}


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:600]


def _outputs(out):
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for t in out if isinstance(t, torch.Tensor)]  # GoogLeNet / Inception: (logits, aux…)


def _limit_memory(gb: float) -> None:
    """Address space = what is mapped now (torch, CUDA libraries) + ``gb``: a model that needs more fails with
    MemoryError / a RuntimeError instead of pushing the shared machine into swap or the OOM killer."""
    import torch  # noqa: F401 - mapped before measuring: the limit is what the model may add
    import torchvision  # noqa: F401

    import earlyprune  # noqa: F401

    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = mapped + int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _kwargs(name: str) -> dict:
    return next((kw for prefix, kw in SIZED.items() if name.startswith(prefix)), {})


def _sizes(name: str) -> list[int]:
    fixed = next((s for prefix, s in FIXED_SIZE.items() if name.startswith(prefix)), None)
    return [fixed] if fixed else [64, 224, 299]


def named_fix(error: str) -> list[str] | None:
    """The layer names of the ``ignored_layers=[model.a.b[0], …]`` fix an error message asks for
    (``["a.b.0", …]``), or None when the message does not list them all."""
    import re

    found = re.search(r"ignored_layers=\[([^\]]*(?:\][^\]]*)*?)\] \(", error)
    if found is None or "…" in found.group(1):
        return None
    names = [n.strip() for n in found.group(1).split(", ")]
    if not all(n.startswith("model") for n in names):
        return None
    return [re.sub(r"\[(\d+)\]", r".\1", n[len("model"):]).lstrip(".") for n in names]


def breaking_layers(build, x) -> list[str]:
    """The root layers of the groups whose narrowing alone breaks the forward (each on a freshly built model):
    the ``ignored_layers`` fix that earlyprune's error asks for, found group by group."""
    import gc

    import torch

    from earlyprune.surgery.engine import PruningEngine
    from earlyprune.graph.groups import ChannelGroups
    from earlyprune.planning.selection import Plan

    def groups_of(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ChannelGroups(model, x)

    names = groups_of(build()).names
    broken = []
    for name in names:
        gc.collect()
        trial = build()
        groups = groups_of(trial)
        g = groups[name]
        unit = max(g.width_multiple, 1)
        if g.ch_groups != 1 or g.width <= unit:
            continue
        try:
            PruningEngine(groups).apply(Plan({name: list(range(unit))}, [], [], 0, 0.0, 0.0))
            with torch.no_grad():
                trial.eval()(x)
        except Exception:  # noqa: BLE001 - this group breaks the model
            broken.append(name)
        del trial, groups, g
    gc.collect()
    return broken


def run_one(name: str, memory_gb: float) -> dict:
    """The training path on one model in this process; returns the record — if it fails with earlyprune's
    "keep those channels with ignored_layers=" error, once more with the layers that break the model ignored."""
    _limit_memory(memory_gb)
    rec = _run_path(name, ignored=None)
    if not rec["ok"] and "ignored_layers=" in (rec.get("error") or ""):
        import gc

        import torch
        import torchvision

        gc.collect()  # the first attempt's model and optimizer: a ViT-L twice did not fit the memory limit
        ignored = named_fix(rec["error"])  # what a user does: pass the layers the error names
        if ignored is None:  # the message elided some: find them group by group
            size = rec["input"][2]
            ignored = breaking_layers(lambda: torchvision.models.get_model(name, weights=None, **_kwargs(name)),
                                      torch.randn(2, 3, size, size))
        if ignored:
            retry = _run_path(name, ignored=ignored)
            retry["first_error"] = rec["error"]
            retry["ignored_layers"] = ignored
            retry["seconds"] = round(rec["seconds"] + retry["seconds"], 2)
            return retry
    return rec


def _run_path(name: str, ignored: list[str] | None) -> dict:
    import torch
    import torch.nn.functional as F
    import torchvision

    import earlyprune as ep
    from earlyprune.core import timing

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rec: dict = {"model": name, "ok": False, "stage": None, "error": None}
    t0 = time.perf_counter()
    stage = "build"
    caught: list = []
    try:
        build = lambda: torchvision.models.get_model(name, weights=None, **_kwargs(name))  # noqa: E731
        model = build()
        rec["build_s"] = round(time.perf_counter() - t0, 2)
        params_dense = sum(p.numel() for p in model.parameters())

        stage = "dense"
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, foreach=False)

        def step(x, y):
            optimizer.zero_grad(set_to_none=True)
            loss = sum(F.cross_entropy(o.float(), y) for o in _outputs(model(x)))
            loss.backward()
            optimizer.step()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss {loss.item()}")
            return loss.item()

        gen = torch.Generator().manual_seed(0)
        dense_err = None
        for size in _sizes(name):  # the dense model must train at this size before anything is pruned
            batches = [(torch.randn(2, 3, size, size, generator=gen), torch.randint(0, 1000, (2,), generator=gen))
                       for _ in range(6)]
            try:
                model.train()
                step(*batches[0])
                dense_err = None
                break
            except Exception as exc:  # noqa: BLE001 - try the next size
                dense_err = exc
        if dense_err is not None:
            raise dense_err
        rec["input"] = [2, 3, size, size]
        optimizer.zero_grad(set_to_none=True)  # as a training loop constructs it: no gradients held
        with warnings.catch_warnings(record=True) as caught, timing.Stopwatch() as clock:
            warnings.simplefilter("always")
            pruner = ep.EarlyPruner(model, batches[0][0], 0.5, criterion="magnitude", policy="epoch:1",
                                    optimizer=optimizer, steps=2, steps_per_epoch=2, round_to=1,
                                    record_signals=False,
                                    ignored_layers=[model.get_submodule(n) for n in ignored or []])
        rec["construct_s"] = round(clock.seconds, 2)
        groups = pruner.groups
        rec["groups"] = len(groups)
        rec["kept_layers"] = len(groups.kept)
        rec["traced"] = groups.graph.mode
        before = measure_model(ep, model, batches[0][0])
        for x, y in batches[:2]:
            step(x, y)
            pruner.step()
        pruner.epoch_end()

        stage = "pruning epoch"
        with timing.Stopwatch() as clock:
            for x, y in batches[2:4]:
                step(x, y)
                pruner.step()
            pruner.epoch_end()
        rec["pruning_epoch_s"] = round(clock.seconds, 2)
        if pruner.phase != "sparse" or len(pruner.events) != 2:
            raise AssertionError(f"pruning epoch ended in phase {pruner.phase} after {len(pruner.events)} steps")
        totals = groups.totals()
        rec["channels_kept"] = round(totals["channels"] / groups.baseline["channels"], 4)

        stage = "sparse steps"
        for x, y in batches[4:6]:
            step(x, y)
            pruner.step()
        pruner.epoch_end()
        after = measure_model(ep, model, batches[0][0])
        rec["params_before"], rec["params_after"] = before.params, after.params
        rec["macs_before"], rec["macs_after"] = before.macs, after.macs
        rec["params_kept"] = round(after.params / params_dense, 4)
        rec["macs_kept"] = round(after.macs / before.macs, 4) if before.macs else None

        stage = "save/load"
        del pruner, optimizer
        with tempfile.TemporaryDirectory() as tmp:
            path = ep.save(model, Path(tmp) / "m.safetensors")
            rec["file_mb"] = round(path.stat().st_size / 2**20, 1)
            loaded = ep.load(path, build())
        x = batches[0][0]
        with torch.no_grad():
            a, b = _outputs(model.eval()(x)), _outputs(loaded.eval()(x))
        if len(a) != len(b) or not all(torch.equal(p, q) for p, q in zip(a, b)):
            raise AssertionError("the loaded model's outputs differ from the pruned model's")
        rec["ok"] = (rec["channels_kept"] <= 0.5 + 0.02 and after.params < before.params and after.macs < before.macs)
        if not rec["ok"]:
            rec["error"] = (f"target not reached: {rec['channels_kept']:.0%} of the channels, "
                            f"{rec['params_kept']:.0%} of the parameters, {rec['macs_kept']:.0%} of the MACs left")
    except BaseException as exc:  # noqa: BLE001 - recorded (MemoryError included)
        rec["stage"] = stage
        rec["error"] = _first_line(exc)
        rec["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    rec["warnings"] = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:300]}" for w in caught})
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return rec


def measure_model(ep, model, x):
    return ep.measure(model, x[:1])


def run_oneshot(name: str, memory_gb: float) -> dict:
    """The older check: ``ep.prune(model, x, 0.5)`` then one train-mode forward + backward."""
    _limit_memory(memory_gb)
    import torch
    import torchvision

    import earlyprune as ep

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rec: dict = {"model": name, "ok": False, "stage": "build", "error": None}
    t0 = time.perf_counter()
    try:
        model = torchvision.models.get_model(name, weights=None, **_kwargs(name))
        size = _sizes(name)[0]
        x = torch.randn(2, 3, size, size)
        rec["stage"] = "prune"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ep.prune(model, x, 0.5)
        rec["stage"] = "train step"
        model.train()
        sum(o.float().mean() for o in _outputs(model(x))).backward()
        rec.update(ok=True, stage=None, macs_kept=round(res.after.macs / res.before.macs, 4))
    except BaseException as exc:  # noqa: BLE001 - recorded
        rec["error"] = _first_line(exc)
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return rec


def markdown(paths: list[Path]) -> str:
    """The failure table and the pass table of a results file (later files replace the models they hold: a
    rerun of some models, e.g. with more memory)."""
    docs = [json.loads(p.read_text()) for p in paths]
    by_model = {r["model"]: r for doc in docs for r in doc["results"]}
    rows = [by_model[n] for n in sorted(by_model)]
    ok = [r for r in rows if r["ok"]]
    fixed = [r for r in ok if r.get("ignored_layers")]
    lines = [f"**{len(ok)} of {len(rows)} pass** ({len(ok) - len(fixed)} as built, {len(fixed)} with the "
             f"`ignored_layers` fix that earlyprune's error asks for); {docs[0]['date']}, {docs[0]['machine']}.", "",
             "| model | stage | error |", "|---|---|---|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['model']} | {r.get('stage') or 'result'} | `{(r.get('error') or '')[:300]}` |")
    lines += ["", "| model | first error | ignored_layers (the groups that break the model when narrowed) |",
              "|---|---|---|"]
    for r in fixed:
        lines.append(f"| {r['model']} | `{r['first_error'][:160]}` | {', '.join(r['ignored_layers'])} |")
    lines += ["", "| model | H=W | traced | groups | layers kept whole | channels kept | params (M) before → after "
              "| MACs (G) before → after | MACs kept | s | memory limit (GB) |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in ok:
        lines.append(f"| {r['model']} | {r['input'][2]} | {r['traced']} | {r['groups']} | {r['kept_layers']} | "
                     f"{r['channels_kept']:.2f} | {r['params_before'] / 1e6:.2f} → {r['params_after'] / 1e6:.2f} | "
                     f"{r['macs_before'] / 1e9:.3f} → {r['macs_after'] / 1e9:.3f} | {r['macs_kept']:.2f} | "
                     f"{r['seconds']:.0f} | {r.get('memory_gb', '')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=900.0, help="wall-clock seconds per model (subprocess)")
    ap.add_argument("--memory-gb", type=float, default=8.0, help="address space per model beyond the libraries")
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--oneshot", action="store_true", help="the older one-shot check instead of the training path")
    ap.add_argument("--out", default=None, help="results JSON (default: results/coverage_training.json, or "
                                                "results/coverage.json with --oneshot)")
    ap.add_argument("--markdown", default=None, nargs="+", metavar="JSON",
                    help="print the Markdown tables of results files (later files replace the models they hold)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # worker mode
    args = ap.parse_args()

    if args.markdown:
        print(markdown([Path(p) for p in args.markdown]))
        return
    if args.one:
        work = run_oneshot if args.oneshot else run_one
        print("@@RESULT@@" + json.dumps({**work(args.one, args.memory_gb), "memory_gb": args.memory_gb}), flush=True)
        return

    import torch
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if args.only:
        wanted = args.only.split(",")
        names = [n for n in names if n in wanted]
    default = "coverage.json" if args.oneshot else "coverage_training.json"
    out_path = Path(args.out or HERE / "results" / default)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "?")
    meta = {
        "date": _dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core {cpu}, no GPU, 1 thread per model, shared with other jobs",
        "python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
        "torch_pruning": _version("torch-pruning"), "ratio": 0.5, "criterion": "magnitude", "policy": "epoch:1",
        "steps": 2, "timeout_s": args.timeout, "memory_gb": args.memory_gb,
        "path": "oneshot" if args.oneshot else "training",
        "command": "python benchmarks/coverage.py" + (" --oneshot" if args.oneshot else "")
                   + f" --timeout {args.timeout:g} --memory-gb {args.memory_gb:g}"
                   + (f" --only {args.only}" if args.only else ""),
    }
    results = []
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--one", name, "--memory-gb", str(args.memory_gb)]
        if args.oneshot:
            cmd.append("--oneshot")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
            if line is not None:
                rec = json.loads(line[len("@@RESULT@@"):])
            else:  # crashed (segfault, killed, …)
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                rec = {"model": name, "ok": False, "stage": "crash",
                       "error": f"worker exited with code {proc.returncode}: {tail[:300]}"}
        except subprocess.TimeoutExpired:
            rec = {"model": name, "ok": False, "stage": "timeout",
                   "error": f"did not finish within {args.timeout:.0f} s"}
        rec.setdefault("seconds", round(time.perf_counter() - t0, 2))
        results.append(rec)
        status = "ok  " if rec["ok"] else f"FAIL [{rec.get('stage')}] {rec['error']}"
        extra = f" MACs kept {rec['macs_kept']}" if rec.get("macs_kept") is not None else ""
        print(f"[{i:3d}/{len(names)}] {name:<28} {rec['seconds']:7.1f}s {status}{extra}", flush=True)
        summary = {"ok": sum(r["ok"] for r in results), "total": len(results)}
        out_path.write_text(json.dumps({**meta, "summary": summary, "results": results,
                                        "complete": i == len(names)}, indent=1))
    n_ok = sum(r["ok"] for r in results)
    print(f"\n{n_ok} of {len(results)} torchvision classification models passed; "
          f"{time.perf_counter() - start:.0f} s total -> {out_path}")


if __name__ == "__main__":
    main()
