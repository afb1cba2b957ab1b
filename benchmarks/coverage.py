"""Coverage: does ``ep.prune(model, x, 0.5)`` work on every torchvision classification model?

For each name in ``torchvision.models.list_models(module=torchvision.models)``:

1. build it with ``weights=None`` (default ``num_classes``);
2. dense forward + backward in train mode (batch 2, so BatchNorm on 1x1 maps can train) at HxW, H=W=64 first (224 for ViT/Swin/MaxViT, which
   need it), falling back to 224 and then 299 (Inception-v3's aux head) if the dense model itself fails;
3. ``ep.prune(model, x, 0.5)`` with x of shape 1x3xHxW (magnitude, 50 % of channels);
4. forward in train mode (batch 2) (output shape must equal the dense one) and backward.

Every model runs in its own subprocess with a wall-clock limit (``--timeout``), so a hang, a crash or an
out-of-memory kill is recorded as a failure of that model and nothing is skipped silently.

    python benchmarks/coverage.py [--timeout 300] [--only resnet18,vit_b_16] [--out benchmarks/results/coverage.json]
"""

from __future__ import annotations

import argparse
from importlib.metadata import version as _version
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: models whose architecture needs a 224x224 input (fixed positional embeddings / window partitions)
NEEDS_224 = ("vit_", "swin", "maxvit")
STAGES = ("build", "dense forward", "prune", "forward", "backward")


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:500]


def _loss(out):
    import torch
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    if isinstance(out, dict):
        out = list(out.values())
    tensors = [t for t in out if isinstance(t, torch.Tensor)]  # Inception/GoogLeNet aux outputs
    return sum(t.float().mean() for t in tensors)


def _logits(out):
    import torch
    if isinstance(out, torch.Tensor):
        return out
    return next(t for t in (out.values() if isinstance(out, dict) else out) if isinstance(t, torch.Tensor))


def run_one(name: str) -> dict:
    """Build, prune and train-step one model in this process; returns the record."""
    import torch
    import torchvision

    import earlyprune as ep
    from earlyprune import timing

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rec: dict = {"model": name, "ok": False, "stage": None, "error": None}
    t0 = time.perf_counter()
    stage = "build"
    try:
        model = torchvision.models.get_model(name, weights=None)
        rec["build_s"] = round(time.perf_counter() - t0, 2)

        stage = "dense forward"
        sizes = [224, 299] if name.startswith(NEEDS_224) else [64, 224, 299]  # 299: Inception-v3 aux head
        dense_err = None
        for size in sizes:
            x = torch.randn(1, 3, size, size)
            xb = torch.randn(2, 3, size, size)  # train-mode steps: batch 2, so BatchNorm on 1x1 maps works
            try:
                model.train()
                out = model(xb)
                _loss(out).backward()
                model.zero_grad(set_to_none=True)
                dense_shape = tuple(_logits(out).shape)
                del out
                dense_err = None
                break
            except Exception as exc:  # noqa: BLE001 - try the next size
                dense_err = exc
                model.zero_grad(set_to_none=True)
        if dense_err is not None:
            raise dense_err
        rec["input"] = [1, 3, size, size]

        stage = "prune"
        with warnings.catch_warnings(record=True) as caught, timing.Stopwatch() as clock:
            warnings.simplefilter("always")
            res = ep.prune(model, x, 0.5)
        rec["prune_s"] = round(clock.seconds, 2)
        rec["warnings"] = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught})
        rec["groups"] = len(res.group_names)
        rec["params_before"], rec["params_after"] = res.before.params, res.after.params
        rec["macs_before"], rec["macs_after"] = res.before.macs, res.after.macs
        rec["macs_kept"] = round(res.after.macs / res.before.macs, 4) if res.before.macs else None
        rec["params_kept"] = round(res.after.params / res.before.params, 4) if res.before.params else None

        stage = "forward"
        model.train()
        out = model(xb)
        shape = tuple(_logits(out).shape)
        if shape != dense_shape:
            raise AssertionError(f"pruned output shape {shape} != dense {dense_shape}")

        stage = "backward"
        _loss(out).backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.shape != p.shape]
        if bad:
            raise AssertionError(f"gradient shape mismatch at {bad[:3]}")
        rec["ok"] = True
        rec["stage"] = None
        rec["reduced"] = rec["macs_after"] < rec["macs_before"] and rec["params_after"] < rec["params_before"]
    except Exception as exc:  # noqa: BLE001 - recorded
        rec["stage"] = stage
        rec["error"] = _first_line(exc)
        rec["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=300.0, help="wall-clock seconds per model (subprocess)")
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "coverage.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # worker mode
    args = ap.parse_args()

    if args.one:
        print("@@RESULT@@" + json.dumps(run_one(args.one)), flush=True)
        return

    import torch
    import torch_pruning
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if args.only:
        wanted = args.only.split(",")
        names = [n for n in names if n in wanted]
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": _dt.date.today().isoformat(),
        "machine": "2-core CPU",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_pruning": _version("torch-pruning"),
        "ratio": 0.5,
        "criterion": "magnitude",
        "timeout_s": args.timeout,
        "command": "python benchmarks/coverage.py" + (f" --only {args.only}" if args.only else ""),
    }
    results = []
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                  timeout=args.timeout)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")), None)
            if line is not None:
                rec = json.loads(line[len("@@RESULT@@"):])
            else:  # crashed (segfault, OOM kill, …)
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                rec = {"model": name, "ok": False, "stage": "crash",
                       "error": f"worker exited with code {proc.returncode}: {tail[:300]}"}
        except subprocess.TimeoutExpired:
            rec = {"model": name, "ok": False, "stage": "timeout",
                   "error": f"did not finish within {args.timeout:.0f} s"}
        rec.setdefault("seconds", round(time.perf_counter() - t0, 2))
        results.append(rec)
        status = "ok  " if rec["ok"] else f"FAIL [{rec['stage']}] {rec['error']}"
        extra = f" MACs kept {rec['macs_kept']}" if rec.get("macs_kept") is not None else ""
        print(f"[{i:3d}/{len(names)}] {name:<28} {rec['seconds']:7.1f}s {status}{extra}", flush=True)
        summary = {"ok": sum(r["ok"] for r in results), "total": len(results)}
        out_path.write_text(json.dumps({**meta, "summary": summary, "results": results,
                                        "complete": i == len(names)}, indent=1))
    n_ok = sum(r["ok"] for r in results)
    n_red = sum(bool(r.get("reduced")) for r in results)
    print(f"\n{n_ok} of {len(results)} torchvision classification models pruned at 0.5 and trained a step "
          f"({n_red} with MACs and params reduced); {time.perf_counter() - start:.0f} s total -> {out_path}")


if __name__ == "__main__":
    main()
