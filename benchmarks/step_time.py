"""How well does the step-time predictor of ``target="latency"`` predict the measured training step?

For each model (CIFAR shapes, batch 128, one thread) and setting (memory format, alignment = ``round_to``), the
script builds the predictor exactly as a run does (:class:`earlyprune.StepTime`, calibrated on the dense model and
a uniformly halved copy, in the setting's mode: fp32 or bf16 autocast, NCHW or channels_last; then refitted on the
structure of the time target at 50 %, as a run at that ratio does), then prunes copies of the model to structures the predictor never saw — uniform at ¼ and
¾, PaT's channel target at 50 %, MACs targets at 50 % and 75 %, a random ranking at 30 %, and the time target at
30 % and 50 % — and compares the predicted step with the measured one. Measurements are interleaved: every round
times one step of every structure (dense included), the median over rounds is kept; the clock is the process CPU
time (one thread), which other processes on a shared machine do not inflate. Two errors per structure: of the step
time (predicted / measured − 1) and of the speedup (predicted T/T_dense over the median paired measured ratio − 1),
the one the time target relies on.

    python benchmarks/step_time.py [--models resnet20 resnet56 vgg16 vgg19 mobilenet_v1] [--modes fp32 bf16-cl]
                                   [--aligns 8 16] [--rounds 5] [--out benchmarks/results/step_time.json]

Resumable: settings already in ``--out`` are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import earlyprune as ep
from earlyprune.criteria import CRITERIA
from earlyprune.models import create_model
from earlyprune.planning.targets import select
from earlyprune.speed.steptime import batched, pruned_copy, time_step, uniform_removal

BATCH = 128


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            name = platform.processor()
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
        keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f" {f}" in flags]
        return f"{name} ({', '.join(keep)})"
    except OSError:
        return platform.processor()


def structures(groups: ep.ChannelGroups, predictor: ep.StepTimePredictor, align: int) -> dict[str, dict[str, int]]:
    """The structures to check, as channels removed per group."""
    magnitude = CRITERIA.build("magnitude").compute(groups)
    random = CRITERIA.build("random:1").compute(groups)
    out = {f"uniform {f}": uniform_removal(groups, f, align) for f in (0.25, 0.5, 0.75)}
    specs = [("channels 0.5", magnitude, 0.5, "channels"), ("flops 0.5", magnitude, 0.5, "flops"),
             ("flops 0.75", magnitude, 0.75, "flops"), ("random channels 0.3", random, 0.3, "channels"),
             ("latency 0.3", magnitude, 0.3, "latency"), ("latency 0.5", magnitude, 0.5, "latency")]
    for name, scores, ratio, target in specs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = select(groups, scores, ratio, target=target, round_to=align, predictor=predictor)
        out[name] = {n: w0 - w for n, w0, w in zip(groups.names, groups.widths(), plan.structure) if w0 != w}
    return out


def run_setting(name: str, mode: str, align: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    channels_last = mode.endswith("-cl")
    autocast = torch.bfloat16 if mode.startswith("bf16") else None
    groups = ep.ChannelGroups(model, x)
    t0 = time.perf_counter()
    settings = ep.StepTime(batch_size=BATCH, channels_last=channels_last, autocast=autocast, repeats=3)
    predictor = settings.measure(groups, align=align)
    # as a run at ratio 0.5 does: refit on the structure its first plan reaches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = select(groups, CRITERIA.build("magnitude").compute(groups), 0.5, target="latency", round_to=align,
                      predictor=predictor)
    settings.refit(predictor, groups, np.array(predictor.widths) - np.array(plan.structure))
    build_s = time.perf_counter() - t0
    variants = {"dense": {}, **structures(groups, predictor, align)}
    models = {k: (pruned_copy(model, x, v) if v else model) for k, v in variants.items()}
    xb = batched(x, BATCH)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
        for m in models.values():
            m.to(memory_format=torch.channels_last)
    for m in models.values():       # warm-up
        time_step(m, xb, repeats=1, warmup=1, autocast=autocast)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            times[k].append(time_step(m, xb, repeats=1, warmup=0, autocast=autocast))
    dense_macs = ep.measure(model, x).macs
    rows = {}
    for k, removed in variants.items():
        measured = statistics.median(times[k])
        vec = predictor.vector(removed)
        predicted = predictor.predict(vec)
        paired = statistics.median(t / d for t, d in zip(times[k], times["dense"]))
        rows[k] = {"removed": removed, "measured_s": measured, "measured_all_s": times[k], "predicted_s": predicted,
                   "error": predicted / measured - 1,
                   "ratio_error": (predicted / predictor.predict()) / paired - 1 if k != "dense" else 0.0,
                   "layer_s": predictor.layer_seconds(vec),
                   "activations": predictor._partial(vec, range(len(predictor.curves)))[1] / predictor._a0,
                   "macs_fraction": ep.measure(models[k], x).macs / dense_macs}
        print(f"{name:13s} {mode:8s} align {align:2d} {k:20s} measured {measured * 1e3:8.1f} ms predicted "
              f"{predicted * 1e3:8.1f} ms error {rows[k]['error']:+6.1%} (of the speedup {rows[k]['ratio_error']:+6.1%}) "
              f"MACs {rows[k]['macs_fraction']:.2f}",
              flush=True)
    return {"model": name, "mode": mode, "align": align, "batch_size": BATCH, "rounds": rounds,
            "predictor_build_s": build_s, "predictor_info": predictor.info, "rho0": predictor.rho0,
            "rho1": predictor.rho1, "alpha": predictor.alpha, "variants": rows}


CALIBRATION = ("dense", "uniform 0.5", "latency 0.5")   # measured while fitting (latency 0.5: the refit)


def markdown(data: dict) -> str:
    """Per setting: the speedup over dense predicted vs measured (median paired ratio) of every structure."""
    settings = data["settings"]
    names = list(next(iter(settings.values()))["variants"])[1:]
    lines = ["| model | mode | dense step (measured / predicted) | " + " | ".join(names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    for s in settings.values():
        v = s["variants"]
        cells = []
        for k in names:
            paired = statistics.median(t / d for t, d in zip(v[k]["measured_all_s"], v["dense"]["measured_all_s"]))
            predicted = v[k]["predicted_s"] / v["dense"]["predicted_s"]
            mark = "*" if k in CALIBRATION else ""
            cells.append(f"{1 / paired:.2f}× / {1 / predicted:.2f}× ({v[k]['ratio_error']:+.0%}){mark}")
        lines.append(f"| {s['model']} | {s['mode']} | {1e3 * v['dense']['measured_s']:.0f} / "
                     f"{1e3 * v['dense']['predicted_s']:.0f} ms | " + " | ".join(cells) + " |")
    errors = np.array([abs(v["ratio_error"]) for s in settings.values() for k, v in s["variants"].items()
                       if k not in CALIBRATION])
    steps = np.array([abs(v["error"]) for s in settings.values() for k, v in s["variants"].items()])
    lines += ["", f"Unseen structures ({len(errors)}): speedup error median {np.median(errors):.1%}, "
                  f"{np.mean(errors <= 0.10):.0%} within ±10 %, max {errors.max():.0%}. Step time (all "
                  f"{len(steps)}, dense included): median {np.median(steps):.1%}, {np.mean(steps <= 0.10):.0%} "
                  f"within ±10 %."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "vgg16", "vgg19", "mobilenet_v1"])
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16-cl"], choices=["fp32", "fp32-cl", "bf16-cl"])
    parser.add_argument("--aligns", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/step_time.json")
    parser.add_argument("--markdown", action="store_true", help="print the results as Markdown tables and stop")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return
    torch.set_num_threads(1)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu": cpu_model(), "torch": torch.__version__, "threads": 1, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"), "settings": {}}
    for name in args.models:
        for mode in args.modes:
            for align in args.aligns:
                key = f"{name}|{mode}|{align}"
                if key in data["settings"]:
                    continue
                data["settings"][key] = run_setting(name, mode, align, args.rounds)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(data, indent=1))
    for key in ("error", "ratio_error"):
        errors = [abs(v[key]) for s in data["settings"].values() for k, v in s["variants"].items() if k != "dense"]
        print(f"{key}: {len(errors)} pruned structures, median |error| {statistics.median(errors):.1%}, max "
              f"{max(errors):.1%}, within ±10 %: {np.mean(np.array(errors) <= 0.10):.0%}")


if __name__ == "__main__":
    main()
