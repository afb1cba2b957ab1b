"""Cost of the per-epoch when-to-prune signals, and of accumulating criterion scores every batch.

Models (torchvision is not needed):

* ``resnet50`` — built here with torchvision's ResNet-50 (v1.5) layout: 7×7 stem + max-pool, bottlenecks
  [3, 4, 6, 3] of 64/128/256/512(×4) channels, stride on the 3×3 convolution, 1000 classes — 25.6 M parameters;
* ``resnet110`` — earlyprune's CIFAR ResNet-110 (1.7 M parameters, 10 classes).

Measured, median over ``--reps``:

* ``epoch_end_s`` — ``EarlyPruner.epoch_end()`` of a dense epoch with ``policy="never"`` and every signal
  recorded: averaging the accumulated scores, ``N_t`` and EPI at 10 ratios (0.1…0.9 plus the run's 0.5), the
  weight change ‖θ_t − θ_0‖², the Early-Bird mask and its distance to the 4 previous ones, Kendall τ / Spearman ρ
  against the previous epoch's ranking, the policy update and the history record. Measured after 5 epochs, so
  every queue is full. The weights move between epochs (one SGD step).
* ``signals_s`` — the recorder alone (``SignalRecorder.epoch_end``), and its parts: ``structures_s`` (10
  selections), ``weight_change_s``, ``bn_mask_s`` (mask + 4 distances), ``rank_correlations_s``; and
  ``signals_flops_s`` with ``target="flops"`` (each ratio is a binary search over the cost model).
* ``step_s`` — a plain training step (forward, cross-entropy, backward, SGD-momentum step) at the given batch;
  ``observe_<criterion>_s`` — one ``criterion.observe()`` after it (what ``pruner.step()`` adds per dense batch
  when scores are accumulated); ``overhead_<criterion>`` = observe / step.

Runs with one intra-op thread by default (``--threads``): on a small machine shared with other jobs, two threads
on two busy cores made each of the hundreds of small tensor ops wait for its partner thread (a 335-tensor
‖θ − θ_0‖² took 2 s instead of 5 ms), which measures the contention, not the code.

    python benchmarks/signals.py [--reps 5] [--threads 1] [--out benchmarks/results/signals.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
from importlib.metadata import version as _version
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import earlyprune as ep
from earlyprune.core import timing
from earlyprune.criteria import CRITERIA
from earlyprune.models import create_model
from earlyprune.signals import (SignalRecorder, bn_mask, kendall_tau, mask_distance, spearman_rho,
                                subnetwork_structures, weight_distance)
from earlyprune.graph.groups import scores_to_vector

HERE = Path(__file__).resolve().parent
RATIO = 0.5


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        c_out = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.down = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.down(x))


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout (v1.5), written out so that the benchmark needs no torchvision."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, c_in = [], 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(c_in, planes, stride if i == 0 else 1))
                c_in = planes * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, int]] = {
    # name: (builder, input shape per example, classes, training batch for the step timing)
    "resnet50": (lambda: ResNet50(), (3, 224, 224), 1000, 8),
    "resnet110": (lambda: create_model("resnet110", num_classes=10), (3, 32, 32), 10, 128),
}


def timed(fn: Callable[[], object]) -> float:
    return timing.time_once(fn)  # CPU models here; timing.time_once(fn, device=...) on a GPU


def bench_signals(name: str, reps: int) -> dict:
    build, shape, classes, _ = MODELS[name]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(2, *shape)
    y = torch.randint(0, classes, (2,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with timing.Stopwatch() as clock:
        pruner = ep.EarlyPruner(model, x[:1], RATIO, criterion="magnitude", policy="never", optimizer=opt)
    setup_s = clock.seconds
    groups = pruner.groups
    train_step = timing.train_step(model, opt, x, y)

    def epoch() -> float:
        train_step()
        pruner.step()
        return timed(pruner.epoch_end)

    for _ in range(5):  # fill the queues: previous structures, masks, ranking
        epoch()
    epoch_end = [epoch() for _ in range(reps)]
    entry = pruner.history[-1]
    assert entry["kendall_tau"] is not None and entry["earlybird_distance"] is not None

    # the recorder and its parts, on the last epoch's material
    scores = pruner.criterion.scores(groups)  # instantaneous magnitude (nothing accumulated after epoch_end)
    rec = SignalRecorder()
    rec.start(groups, ratio=RATIO)
    rec_flops = SignalRecorder()
    rec_flops.start(groups, ratio=RATIO, target="flops")
    for _ in range(5):
        rec.epoch_end(scores)
        rec_flops.epoch_end(scores)
    params = list(model.parameters())
    theta0 = [p.detach().clone() for p in params]
    mask = bn_mask(model, RATIO)
    vec = scores_to_vector(groups, scores)
    prev = vec + 0.01 * torch.randn_like(vec)
    ratios = sorted(set(rec.ratios) | {RATIO})
    parts = {
        "signals_s": [timed(lambda: rec.epoch_end(scores)) for _ in range(reps)],
        "signals_flops_s": [timed(lambda: rec_flops.epoch_end(scores)) for _ in range(reps)],
        "structures_s": [timed(lambda: subnetwork_structures(groups, scores, ratios)) for _ in range(reps)],
        "weight_change_s": [timed(lambda: weight_distance(params, theta0)) for _ in range(reps)],
        "bn_mask_s": [timed(lambda: [mask_distance(bn_mask(model, RATIO), mask) for _ in range(4)])
                      for _ in range(reps)],
        "rank_correlations_s": [timed(lambda: (kendall_tau(prev, vec), spearman_rho(prev, vec)))
                                for _ in range(reps)],
    }
    med = statistics.median
    return {"params": sum(p.numel() for p in params), "groups": len(groups), "channels": int(sum(groups.widths())),
            "bn_channels": int(mask.numel()), "pruner_setup_s": setup_s,
            "median": {"epoch_end_s": med(epoch_end), **{k: med(v) for k, v in parts.items()}},
            "raw": {"epoch_end_s": epoch_end, **parts}}


def bench_accumulation(name: str, reps: int, criteria: list[str]) -> dict:
    build, shape, classes, batch = MODELS[name]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    groups = ep.ChannelGroups(model, x[:1])
    crits = {c: CRITERIA.build(c) for c in criteria}
    for c in crits.values():
        c.attach(groups)

    step = timing.train_step(model, opt, x, y)

    model.train()
    step()  # warm-up
    for c in crits.values():
        c.observe(groups)
    steps: list[float] = []
    observes: dict[str, list[float]] = {c: [] for c in crits}
    for _ in range(reps):
        steps.append(timing.time_train_step(step, clock="wall"))
        for cname, c in crits.items():
            observes[cname].append(timed(lambda: c.observe(groups)))
    med = statistics.median
    out = {"batch": batch, "input": [batch, *shape], "step_s": med(steps), "raw": {"step_s": steps}}
    for cname in crits:
        out[f"observe_{cname}_s"] = med(observes[cname])
        out[f"overhead_{cname}"] = med(observes[cname]) / med(steps)
        out["raw"][f"observe_{cname}_s"] = observes[cname]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--out", default=str(HERE / "results" / "signals.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    criteria = [c for c in ("magnitude", "taylor") if c in CRITERIA]
    results = {}
    for name in args.models:
        sig = bench_signals(name, args.reps)
        print(f"{name}: signals {json.dumps(sig['median'])}", flush=True)
        acc = bench_accumulation(name, args.reps, criteria)
        print(f"{name}: accumulation {json.dumps({k: v for k, v in acc.items() if k != 'raw'})}", flush=True)
        results[name] = {"signals": sig, "accumulation": acc}
    result = {
        "date": _dt.date.today().isoformat(), "machine": "2-core CPU, no GPU", "torch": torch.__version__,
        "torch_pruning": _version("torch-pruning"), "python": sys.version.split()[0],
        "threads": torch.get_num_threads(), "ratio": RATIO, "criteria": criteria,
        "command": f"python benchmarks/signals.py --reps {args.reps} --threads {args.threads}"
                   + (f" --models {' '.join(args.models)}" if args.models != list(MODELS) else ""),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
