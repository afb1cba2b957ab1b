"""Which speed settings pay on this machine: precision, memory format, torch.compile, and the width steps.

Part 1 — training step (zero_grad, forward, cross-entropy, backward, SGD-momentum step; batch 128 of CIFAR-shaped
inputs, one thread) of each model in each mode: ``fp32``, ``fp32-cl`` (channels_last), ``bf16`` (CPU autocast),
``bf16-cl``, and optionally ``compile`` / ``compile-cl`` (``torch.compile`` of the model, fp32). Every round times
one step of every mode, back to back; per mode the reported speedup is the median over rounds of
``t(fp32) / t(mode)`` (paired within the round), on the process CPU time and on the wall time. ``torch.compile``
also reports its compile time (the first calls).

Part 2 — width steps: forward + backward of one 3×3 convolution C → C at 16×16, batch 128, for every C in a range,
per mode (process CPU time, median of 4 after 2 warm-ups): where the time jumps tells which multiples of channels
the kernels like.

Part 3 — crash probe: the oneDNN backward of a 1×1 stride-2 convolution in channels_last with 1–8 input channels
(reported to crash torch 2.13 on an AVX2 CPU), each in a subprocess: return code per width.

    python benchmarks/speed_settings.py [--models resnet20 resnet56 vgg16 mobilenet_v1] [--rounds 5]
        [--modes fp32 fp32-cl bf16 bf16-cl] [--compile-models resnet20] [--widths 8 72] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from earlyprune.core import timing
from earlyprune.core.timing import Stopwatch
from earlyprune.models import create_model

sys.path.insert(0, str(Path(__file__).parent))
from step_time import cpu_model  # noqa: E402

BATCH = 128
CRASH_PROBE = """
import sys, torch
cin = int(sys.argv[1])
conv = torch.nn.Conv2d(cin, 16, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
x = torch.randn(128, cin, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_()
for _ in range(3):
    conv(x).sum().backward()
"""


def step_fn(name: str, mode: str):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(BATCH, 3, 32, 32)
    y = torch.randint(0, 10, (BATCH,))
    if mode.endswith("-cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if mode.startswith("compile") else model
    bf16 = mode.startswith("bf16")

    return timing.train_step(forward, opt, x, y, autocast=torch.bfloat16 if bf16 else None)


def part1(models: list[str], modes: list[str], rounds: int) -> dict:
    out = {}
    for name in models:
        steps, first = {}, {}
        for mode in modes:
            steps[mode] = step_fn(name, mode)
            with Stopwatch() as clock:   # first call (compilation for the compile modes)
                steps[mode]()
            first[mode] = clock.seconds
            steps[mode]()
        wall = {m: [] for m in modes}
        cpu = {m: [] for m in modes}
        for _ in range(rounds):
            for mode in modes:
                with Stopwatch() as clock:
                    steps[mode]()
                wall[mode].append(clock.seconds)
                cpu[mode].append(clock.cpu_seconds)
        rows = {}
        for mode in modes:
            rows[mode] = {
                "cpu_s": statistics.median(cpu[mode]), "wall_s": statistics.median(wall[mode]),
                "speedup_cpu": statistics.median(a / b for a, b in zip(cpu["fp32"], cpu[mode])),
                "speedup_wall": statistics.median(a / b for a, b in zip(wall["fp32"], wall[mode])),
                "first_call_s": first[mode], "cpu_samples": cpu[mode], "wall_samples": wall[mode]}
            print(f"{name:13s} {mode:11s} cpu {rows[mode]['cpu_s'] * 1e3:7.0f} ms  speedup vs fp32: cpu "
                  f"{rows[mode]['speedup_cpu']:.2f}x wall {rows[mode]['speedup_wall']:.2f}x  first call "
                  f"{first[mode]:.1f} s", flush=True)
        out[name] = rows
    return out


def part2(lo: int, hi: int, modes: list[str]) -> dict:
    out: dict = {}
    for mode in modes:
        out[mode] = {}
        for c in range(lo, hi + 1):
            conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
            x = torch.randn(BATCH, c, 16, 16)
            if mode.endswith("-cl"):
                conv = conv.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            times = []
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
                for i in range(6):
                    with Stopwatch() as clock:
                        conv(x).float().sum().backward()
                    times.append(clock.cpu_seconds)
            out[mode][c] = statistics.median(times[2:])
        print(mode, " ".join(f"{c}:{1e3 * t:.1f}" for c, t in out[mode].items()), flush=True)
    return out


def part3() -> dict:
    out = {}
    for cin in range(1, 9):
        proc = subprocess.run([sys.executable, "-c", CRASH_PROBE, str(cin)], capture_output=True, timeout=300)
        out[cin] = proc.returncode
    print("crash probe (return code per input width):", out, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "vgg16", "mobilenet_v1"])
    parser.add_argument("--modes", nargs="+", default=["fp32", "fp32-cl", "bf16", "bf16-cl"])
    parser.add_argument("--compile-models", nargs="*", default=["resnet20"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--widths", nargs=2, type=int, default=[8, 72])
    parser.add_argument("--skip", nargs="*", default=[], choices=["steps", "compile", "widths", "crash"])
    parser.add_argument("--out", default="benchmarks/results/speed_settings.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "machine": {"cpu": cpu_model(), "torch": torch.__version__, "threads": 1},
              "date": time.strftime("%Y-%m-%d"), "batch_size": BATCH}
    if "steps" not in args.skip:
        result["steps"] = part1(args.models, args.modes, args.rounds)
    if "compile" not in args.skip and args.compile_models:
        result["compile"] = part1(args.compile_models, ["fp32", "compile", "fp32-cl", "compile-cl"], args.rounds)
    if "widths" not in args.skip:
        result["widths"] = part2(args.widths[0], args.widths[1], args.modes)
    if "crash" not in args.skip:
        result["crash_probe"] = part3()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
