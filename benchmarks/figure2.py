"""3SP Figure 2 on CIFAR-10: the change each criterion predicts vs the actual change when one channel is removed.

A small VGG-style CNN (:class:`CifarCNN`, conv-bn-relu ×3 with pooling, widths 16/32/64) is analysed twice: at
initialisation (pruning before training, BatchNorm in train mode as during the first batches) and after a brief
training run on a CIFAR-10 subset (BatchNorm in eval mode). For every prunable channel alone, on one fixed batch of training
images that the model was not trained on:

* actual loss change ``ΔL = L(channel removed) − L``;
* actual change of the gradient norms the Hessian criteria preserve: ``Δ‖g_c‖²`` (gates) and ``Δ‖g_w‖²``
  (weights), removal being the per-channel gate set to 0 (checked against zeroing the channel's parameters).

Predictions (first order in the removal ``ΔM = −1``): ``snip`` / ``taylor`` predict ``ΔL ≈ −∂L/∂M``; ``crop``
(pure gate product) predicts ``Δ‖g_c‖² ≈ −2·(H_cc·g_c)``; ``crop:mixed`` predicts ``Δ‖g_w‖² ≈ −2·(H_cw·g_w)``;
``grasp`` scores ``M·H·g`` and GraSP's ``S = −M·H·g`` predicts ``Δ‖g_c‖²/2``. Reported: Spearman rank
correlation of each criterion's score with ``|ΔL|`` (what ranking for pruning needs), Pearson and Spearman of the
signed prediction with the signed actual change, and the raw per-channel values.

Data: ``--zip`` (the image-folder CIFAR-10 JPEG zip, see /work/shared/data/README.md); ``--train-per-class``
images per class are decoded for training, 26 more per class for the analysis batch (256 images).

    python benchmarks/figure2.py [--epochs 4] [--train-per-class 500] [--out benchmarks/results/figure2.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import sys
import time
import zipfile
from importlib.metadata import version as _version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from earlyprune.criteria import CRITERIA, Batch
from earlyprune.criteria.gates import Gates, gate_gradients, gate_hvp, preserve_norm_stats
from earlyprune.graph.groups import ChannelGroups
from earlyprune.signals import spearman_rho
from torch import nn

HERE = Path(__file__).resolve().parent
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


class CifarCNN(nn.Module):
    """A small VGG-style CIFAR CNN: [conv3×3-bn-relu, 2×2 max-pool] ×2, conv3×3-bn-relu, global pool, linear
    (widths w, 2w, 4w: 112 prunable channels at w = 16, 2.8 M MACs per image)."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(*block(3, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
                                      *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def load_cifar(path: Path, split: str, per_class: int, skip: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of every class from ``split/<class>/`` (after the first ``skip``), normalised."""
    from PIL import Image

    images, labels = [], []
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith(".jpg"))
        by_class: dict[str, list[str]] = {c: [] for c in CLASSES}
        for n in names:
            parts = n.split("/")
            if len(parts) >= 3 and parts[-3] == split and parts[-2] in by_class:
                by_class[parts[-2]].append(n)
        for label, c in enumerate(CLASSES):
            chosen = by_class[c][skip: skip + per_class]
            if len(chosen) < per_class:
                raise ValueError(f"{path}: only {len(chosen)} images in {split}/{c} after skipping {skip}")
            for n in chosen:
                with Image.open(io.BytesIO(zf.read(n))) as im:
                    images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
                labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    return (x - MEAN) / STD, torch.tensor(labels)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """The library's tie-aware Spearman ρ (average ranks), NaN when a side is constant."""
    rho = spearman_rho(a, b)
    return float("nan") if rho is None else rho


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def actual_changes(groups: ChannelGroups, batch: Batch) -> dict[str, np.ndarray]:
    """Per channel (group order): ΔL, Δ‖g_c‖², Δ‖g_w‖² when that channel alone is removed (gate = 0)."""
    model = groups.model
    params = [p for p in model.parameters() if p.requires_grad]
    gates = Gates(groups)

    def evaluate(values):
        with torch.enable_grad(), preserve_norm_stats(model), gates.open(values) as gv:
            loss = batch.loss(model)
            grads = torch.autograd.grad(loss, list(gv.values()) + params, allow_unused=True)
        k = len(gv)
        gc = sum(float((g ** 2).sum()) for g in grads[:k] if g is not None)
        gw = sum(float((g ** 2).sum()) for g in grads[k:] if g is not None)
        return float(loss.detach()), gc, gw

    base = evaluate(None)
    out: dict[str, list[float]] = {"dL": [], "dgc": [], "dgw": []}
    for g in groups:
        for c in range(g.width):
            values = {g.name: torch.ones(g.width).index_fill(0, torch.tensor([c]), 0.0)}
            loss, gc, gw = evaluate(values)
            out["dL"].append(loss - base[0])
            out["dgc"].append(gc - base[1])
            out["dgw"].append(gw - base[2])
    return {k: np.array(v) for k, v in out.items()} | {"base_loss": base[0]}  # type: ignore[return-value]


def check_gate_removal(groups: ChannelGroups, batch: Batch, actual: np.ndarray, n: int = 5) -> float:
    """Largest |ΔL(gate = 0) − ΔL(parameters zeroed)| over the first ``n`` channels of the first group."""
    model, g = groups.model, groups[0]
    worst = 0.0
    with torch.no_grad(), preserve_norm_stats(model):
        base = float(batch.loss(model))
        for c in range(min(n, g.width)):
            with g.masked([c]):
                worst = max(worst, abs((float(batch.loss(model)) - base) - actual[c]))
    return worst


def scores_of(name: str, groups: ChannelGroups, batch: Batch) -> np.ndarray:
    model = groups.model
    crit = CRITERIA.build(name)
    if crit.uses_gradients:
        model.zero_grad(set_to_none=True)
        with preserve_norm_stats(model):
            batch.loss(model).backward()
    crit.observe(groups, batch)
    model.zero_grad(set_to_none=True)
    scores = crit.scores(groups)
    return torch.cat([scores[g.name] for g in groups]).double().numpy()


def signed(values: dict[str, torch.Tensor], groups: ChannelGroups) -> np.ndarray:
    return torch.cat([values[g.name].double().cpu() for g in groups]).numpy()


def analyse(groups: ChannelGroups, batch: Batch) -> dict:
    t0 = time.perf_counter()
    actual = actual_changes(groups, batch)
    gate_check = check_gate_removal(groups, batch, actual["dL"])
    dL, dgc, dgw = actual["dL"], actual["dgc"], actual["dgw"]
    snip_g = signed(gate_gradients(groups, batch), groups)
    hg_gate = signed(gate_hvp(groups, batch, "gate"), groups)
    hg_mixed = signed(gate_hvp(groups, batch, "mixed"), groups)
    table: dict[str, dict] = {}
    for name in ("snip", "taylor", "crop", "crop:mixed", "grasp", "magnitude", "random"):
        s = scores_of(name, groups, batch)
        table[name] = {"spearman_score_vs_abs_dL": spearman(s, np.abs(dL))}
    table["snip"].update(pearson_pred_vs_dL=pearson(-snip_g, dL), spearman_pred_vs_dL=spearman(-snip_g, dL))
    table["taylor"].update(pearson_pred_vs_dL=pearson(-snip_g, dL), spearman_pred_vs_dL=spearman(-snip_g, dL))
    table["crop"].update(spearman_abs_pred_vs_abs_dgc=spearman(np.abs(hg_gate), np.abs(dgc)),
                         pearson_pred_vs_dgc=pearson(-2 * hg_gate, dgc))
    table["crop:mixed"].update(spearman_abs_pred_vs_abs_dgw=spearman(np.abs(hg_mixed), np.abs(dgw)),
                               pearson_pred_vs_dgw=pearson(-2 * hg_mixed, dgw))
    table["grasp"].update(spearman_pred_vs_dgc=spearman(-2 * hg_gate, dgc),
                          pearson_pred_vs_dgc=pearson(-2 * hg_gate, dgc))
    return {"base_loss": actual["base_loss"], "channels": int(len(dL)), "gate_vs_zeroing_max_abs_diff": gate_check,
            "correlations": table, "seconds": time.perf_counter() - t0,
            "per_channel": {"dL": dL.tolist(), "dgc": dgc.tolist(), "dgw": dgw.tolist(),
                            "snip_dLdM": snip_g.tolist(), "Hg_gate": hg_gate.tolist(), "Hg_mixed": hg_mixed.tolist()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zip", default="/work/shared/data/cifar10-jpeg.zip")
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "figure2.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    x_train, y_train = load_cifar(Path(args.zip), "train", args.train_per_class)
    x_ana, y_ana = load_cifar(Path(args.zip), "train", 26, skip=args.train_per_class)  # not trained on
    x_test, y_test = load_cifar(Path(args.zip), "test", 100)
    print(f"decoded {len(y_train)} + {len(y_ana)} + {len(y_test)} images in {time.perf_counter() - t0:.1f}s",
          flush=True)
    batch = Batch(x_ana[:256], y_ana[:256], F.cross_entropy)

    torch.manual_seed(args.seed)
    model = CifarCNN(args.width)
    results = {}
    groups = ChannelGroups(model, x_train[:2])
    model.train()
    results["init"] = analyse(groups, batch) | {"bn_mode": "train"}
    print("init:", json.dumps({k: {m: round(v, 3) for m, v in d.items()}
                               for k, d in results["init"]["correlations"].items()}), flush=True)

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(args.seed)
    t1 = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(y_train), generator=g).split(128):
            xb = x_train[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y_train[idx]).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - t1
    model.eval()
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    results["trained"] = analyse(groups, batch) | {"bn_mode": "eval", "test_accuracy": acc, "train_seconds": train_s}
    print(f"trained ({args.epochs} epochs, {train_s:.0f}s, test acc {acc:.3f}):",
          json.dumps({k: {m: round(v, 3) for m, v in d.items()}
                      for k, d in results["trained"]["correlations"].items()}))
    out = {
        "date": _dt.date.today().isoformat(), "machine": "2-core CPU, no GPU, shared", "torch": torch.__version__,
        "torch_pruning": _version("torch-pruning"), "python": sys.version.split()[0],
        "model": f"CifarCNN(width={args.width})", "threads": args.threads,
        "data": f"CIFAR-10 JPEG zip (image-folder copy), {len(y_train)} training images, analysis batch of 256 other training images, {len(y_test)} test images",
        "epochs": args.epochs, "seed": args.seed,
        "command": f"python benchmarks/figure2.py --epochs {args.epochs} --train-per-class {args.train_per_class} "
                   f"--width {args.width} --seed {args.seed} --threads {args.threads}",
        "results": results, "total_seconds": time.perf_counter() - t0,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
