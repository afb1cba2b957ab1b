"""Does ``round_to="auto"`` pick the multiple that really trains fastest? CIFAR ResNet-20, measured side by side.

For each precision mode (fp32; bf16 autocast + channels_last) and ratio of channels removed, a fresh ResNet-20
(seed 0) is scored with ``magnitude`` and pruned once per candidate multiple ``r`` (1, 2, 4, 8 — what "auto"
tries on ResNet-20, whose median group width is 32). Then:

* **predicted** — :class:`earlyprune.AutoRoundTo` on the same scores: the per-layer latency table's time of each
  plan (forward + backward of every conv / BN / linear layer at its planned widths, batch ``--batch``, the mode's
  autocast and memory format) and the multiple it chooses, with the seconds the choice took;
* **measured** — training steps (forward + cross-entropy + backward + SGD step, random inputs) of the dense model
  and every pruned model, interleaved: each round runs one block of ``--steps`` steps per model, so all models
  see the same machine state; per model the median step time over the rounds, reported relative to dense and to
  ``r = 1``.

The verdict per setting: the chosen multiple, the measured-fastest one, and the chosen model's measured step time
relative to the fastest (1.00 = auto found the best).

    python benchmarks/round_to.py [--threads 1] [--rounds 15] [--steps 3] [--out benchmarks/results/round_to.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import date
from pathlib import Path

import torch
from torch import nn

import earlyprune as ep
from earlyprune.criteria import CRITERIA, LatencyTable
from earlyprune.criteria.latency import clear_cache
from earlyprune.graph.groups import ChannelGroups
from earlyprune.core import timing
from earlyprune.models import create_model

HERE = Path(__file__).resolve().parent
CANDIDATES = (1, 2, 4, 8)


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10)


def bench(ratio: float, dtype: torch.dtype | None, channels_last: bool, args: argparse.Namespace) -> dict:
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    base = fresh_model()
    groups = ChannelGroups(base, x[:2])
    scores = CRITERIA.build("magnitude").scores(groups)
    clear_cache()
    auto = ep.AutoRoundTo(candidates=CANDIDATES, table=LatencyTable(repeats=3, warmup=1, batch_size=args.batch,
                                                                    autocast=dtype, channels_last=channels_last))
    with timing.Stopwatch() as clock:
        choice = auto.choose(groups, scores, ratio)
    choose_seconds = clock.seconds

    models: dict[str, nn.Module] = {"dense": fresh_model()}
    macs = {"dense": ep.measure(models["dense"], x[:2]).macs}
    for r in CANDIDATES:
        m = fresh_model()
        ep.prune(m, x[:2], ratio, criterion="magnitude", round_to=r)
        models[f"r{r}"] = m
        macs[f"r{r}"] = ep.measure(m, x[:2]).macs
    steps = {}
    for name, m in models.items():
        m.train()
        if channels_last:
            m.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        steps[name] = timing.train_step(m, opt, x, y, autocast=dtype)
        for _ in range(3):  # warm-up: kernel selection, allocator
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            times[name].append(timing.time_train_step(steps[name], device=timing.device_of(m), number=args.steps,
                                                       clock="wall"))
    step = {name: statistics.median(ts) for name, ts in times.items()}
    fastest = min(CANDIDATES, key=lambda r: step[f"r{r}"])
    return {
        "ratio": ratio, "mode": ("bf16" if dtype is not None else "fp32") + ("+channels_last" if channels_last else ""),
        "auto_choice": choice.value, "auto_seconds": choose_seconds,
        "predicted_layer_ms": {r: 1e3 * t for r, t in choice.seconds.items()},
        "measured_step_ms": {k: 1e3 * v for k, v in step.items()},
        "speedup_vs_dense": {k: step["dense"] / v for k, v in step.items() if k != "dense"},
        "macs_ideal_vs_dense": {k: macs["dense"] / v for k, v in macs.items() if k != "dense"},
        "measured_fastest": fastest,
        "chosen_vs_fastest_step_time": step[f"r{choice.value}"] / step[f"r{fastest}"],
        "chosen_vs_r1_speedup": step["r1"] / step[f"r{choice.value}"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ratios", default="0.5,0.7")
    p.add_argument("--out", type=Path, default=HERE / "results" / "round_to.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for dtype, cl in ((None, False), (torch.bfloat16, True)):
        for ratio in (float(r) for r in args.ratios.split(",")):
            res = bench(ratio, dtype, cl, args)
            results.append(res)
            print(f"{res['mode']:>20} ratio {ratio}: auto → {res['auto_choice']} ({res['auto_seconds']:.1f} s); "
                  f"measured fastest {res['measured_fastest']}; chosen / fastest step time "
                  f"{res['chosen_vs_fastest_step_time']:.2f}; speedup vs dense "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in res["speedup_vs_dense"].items()), flush=True)
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()} CPU, {args.threads} thread(s)",
           "torch": torch.__version__, "command": "python benchmarks/round_to.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
