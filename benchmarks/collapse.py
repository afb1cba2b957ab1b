"""Why did ``min_channels`` not rescue timm ``mobilenetv3_small_100`` and torchvision ``densenet121``, and does
``max_group_ratio`` (issue 10)?

Each variant trains the model as a new user would: AdamW (lr 1e-3), ``policy="epoch:1"``, ratio 0.5 of the
channels, the default magnitude criterion, 640 CIFAR-10 training images (a class-balanced random subset of the
shared zip, 32×32) in batches of 64, 12 epochs, one thread. The training loss of every epoch tells whether the
pruned network still learns (ln 10 = 2.30 is a constant prediction). Part 1 prints, for one ``select`` at 50 %
after 20 AdamW steps on random data, the groups that lose most and their score ranges: the layers' initialisation
scale decides.

    PYTHONPATH=src /work/venv-tv/bin/python benchmarks/collapse.py --models timm:mobilenetv3_small_100 \\
        tv:densenet121 --out benchmarks/results/collapse.json      # needs torchvision and timm

Variants (``--variants``, JSON, ``null`` = dense): the issue's settings (``max_group_ratio=1.0``, i.e. no limit,
with ``min_channels`` 1 and 32), the limit at 0.9 / 0.8 / 0.7, and ``taylor`` with 4 steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import earlyprune as ep
from earlyprune.criteria import CRITERIA
from earlyprune.planning.selection import select
from earlyprune.training.data import BatchLoader, load_dataset

VARIANTS = ['null', '{"max_group_ratio": 1.0}', '{"max_group_ratio": 1.0, "min_channels": 32}',
            '{"max_group_ratio": 0.9}', '{"max_group_ratio": 0.8}', '{"max_group_ratio": 0.7}',
            '{"max_group_ratio": 1.0, "criterion": "taylor", "steps": 4}']


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("timm:"):
        import timm
        return timm.create_model(name[5:], num_classes=10, pretrained=False)
    import torchvision
    return getattr(torchvision.models, name[3:])(num_classes=10)


def scores_report(name: str, min_channels: int = 32) -> dict:
    """Part 1: which groups a global magnitude ranking empties, and their score ranges."""
    model = build(name)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    groups = ep.ChannelGroups(model, x[:2])
    scores = CRITERIA.build("magnitude").compute(groups)
    plan = select(groups, scores, 0.5, min_channels=min_channels, max_group_ratio=1.0)
    rows = sorted(((1 - kept / g.width, g.name, g.width, kept, float(scores[g.name].min()),
                    float(scores[g.name].median()), float(scores[g.name].max())) for g, kept in zip(groups, plan.structure)),
                  reverse=True)
    threshold = float(np.sort(np.concatenate([s.numpy() for s in scores.values()]))[int(0.5 * sum(groups.widths()))])
    medians = [r[5] for r in rows]
    return {"threshold": threshold, "groups": len(rows), "median_range": [min(medians), max(medians)],
            "most_removed": [dict(zip(("removed", "group", "width", "kept", "min", "median", "max"), r))
                             for r in rows[:6]]}


def train(name: str, kw: dict | None, epochs: int = 12) -> dict:
    data = load_dataset(f"folder:{SOURCE}", data_dir="data", download=False, cache="auto", image_size=None, seed=0,
                        log=lambda s: None).subset(640, seed=0)
    torch.manual_seed(0)
    loader = BatchLoader(data.train_x, data.train_y, 64, data.mean, data.std, augment=False, shuffle=True, seed=0)
    model = build(name)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x0 = loader.normalise(data.train_x[:2])
    pruner = (ep.EarlyPruner(model, x0, 0.5, policy="epoch:1", optimizer=opt, steps_per_epoch=len(loader), **kw)
              if kw is not None else None)
    t0, losses = time.time(), []
    for _ in range(epochs):
        total = n = 0
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if pruner:
                pruner.step()
            total, n = total + loss.item() * len(y), n + len(y)
        if pruner:
            pruner.epoch_end()
        losses.append(round(total / n, 3))
    narrow = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1
                 and min(m.in_channels, m.out_channels) <= 8)
    return {"model": name, "kw": kw, "train_loss_per_epoch": losses, "macs": ep.measure(model, x0).macs,
            "convs_le8": narrow, "seconds": round(time.time() - t0)}


SOURCE = Path("/work/shared/data/cifar10-jpeg.zip")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["timm:mobilenetv3_small_100", "tv:densenet121"])
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--out", default="benchmarks/results/collapse.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"command": " ".join(sys.argv), "scores": {}, "runs": []}
    for name in args.models:
        data["scores"].setdefault(name, scores_report(name))
        for variant in args.variants:
            kw = json.loads(variant)
            if any(r["model"] == name and r["kw"] == kw for r in data["runs"]):
                continue
            data["runs"].append(train(name, kw))
            print(json.dumps(data["runs"][-1]), flush=True)
            out.write_text(json.dumps(data, indent=1))
    out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
