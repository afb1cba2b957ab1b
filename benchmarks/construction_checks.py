"""Start-up cost of EarlyPruner's construction checks (feasibility + prunability on a copy), and whether the
prunability check flags torchvision models that do prune.

Cost: ``EarlyPruner(model, x, 0.5, optimizer=SGD, checks=True)`` against ``checks=False`` on the same fresh model,
interleaved (``timing.paired_ratio``: the two sides alternate which runs first, median of the paired ratios),
one thread. Models: the zoo's ResNet-50 (3x3 stem, 23.5 M parameters, 32x32 inputs) and, when torchvision is
importable, torchvision's ResNet-50 at 64x64.

Flags: with torchvision, ``--scan`` builds EarlyPruner (checks on) for each listed torchvision model at a small
input and records whether the prunability check raised, what it named, and the check's seconds
(``check_prunable`` alone, after the groups are built).

    python benchmarks/construction_checks.py [--rounds 7] [--scan] [--out benchmarks/results/construction_checks.json]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

import earlyprune as ep
from earlyprune.core import timing
from earlyprune.models import create_model
from earlyprune.surgery.prunability import check_prunable

HERE = Path(__file__).resolve().parent
SCAN = ["resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "regnet_x_400mf",
        "convnext_tiny", "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet", "vgg11_bn", "alexnet", "mnasnet0_5",
        "resnext50_32x4d", "wide_resnet50_2", "vit_b_16"]
# not scanned: swin_t / maxvit_t — building their groups (torch-pruning's trace, before any check) exhausted this
# machine's 24 GiB at 224x224 and killed the process (issue 12, item 7: crashcov's part)


def _builders(tv: bool) -> dict[str, tuple]:
    out = {"zoo resnet50 (32x32)": (lambda: create_model("resnet50", num_classes=10), (2, 3, 32, 32))}
    if tv:
        import torchvision

        out["torchvision resnet50 (64x64)"] = (lambda: torchvision.models.resnet50(weights=None), (2, 3, 64, 64))
    return out


def cost(rounds: int) -> dict:
    tv = _has_torchvision()
    results = {}
    for label, (build, shape) in _builders(tv).items():
        torch.manual_seed(0)
        model, x = build(), torch.randn(*shape)
        params = sum(p.numel() for p in model.parameters())

        def construct(checks: bool):
            def run():
                m = build()
                ep.EarlyPruner(m, x, 0.5, optimizer=torch.optim.SGD(m.parameters(), 0.1), checks=checks)
            return run

        pair = timing.paired_ratio(construct(True), construct(False), rounds=rounds, warmup=1)
        results[label] = {"params": params, "input": list(shape), "seconds_with_checks": pair.a_seconds,
                          "seconds_without": pair.b_seconds, "extra_seconds": pair.a_seconds - pair.b_seconds,
                          "ratio_median": pair.ratio, "ratio_iqr": list(pair.iqr), "rounds": rounds}
        print(f"{label}: {pair.a_seconds:.2f} s with checks vs {pair.b_seconds:.2f} s without "
              f"(paired ratio {pair.ratio:.2f}, IQR {pair.iqr[0]:.2f}-{pair.iqr[1]:.2f})", flush=True)
    return results


def scan(names: list[str]) -> dict:
    import torchvision

    out = {}
    for name in names:
        torch.manual_seed(0)
        size = 224 if name == "vit_b_16" else 64
        entry: dict = {"input": size}
        try:
            model = torchvision.models.get_model(name, weights=None, **({"aux_logits": False, "init_weights": True}
                                                                        if name == "googlenet" else {}))
            x = torch.randn(2, 3, size, size)
            groups = ep.ChannelGroups(model.eval(), x)
            with timing.Stopwatch() as clock:
                check_prunable(groups)
            entry.update(status="ok", groups=len(groups), check_seconds=clock.seconds)
        except ep.UnprunableGroupsError as exc:
            entry.update(status="unprunable groups named", message=str(exc)[:400])
        except Exception as exc:  # noqa: BLE001 - recorded, not hidden
            entry.update(status=f"{type(exc).__name__} before the check", message=" ".join(str(exc).split())[:300])
        out[name] = entry
        print(f"{name}: {entry['status']} {entry.get('check_seconds', '')}", flush=True)
    return out


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--scan", action="store_true", help="also run the prunability check on torchvision models")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "construction_checks.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"command": " ".join(["python", "benchmarks/construction_checks.py", *sys.argv[1:]]),
              "date": _dt.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": args.threads, "cost": cost(args.rounds)}
    if args.scan and _has_torchvision():
        result["scan"] = scan(SCAN)
        flagged = [n for n, e in result["scan"].items() if e["status"] != "ok"]
        result["scan_summary"] = {"models": len(SCAN), "passed": len(SCAN) - len(flagged), "not passed": flagged,
                                  "median_check_seconds": statistics.median(
                                      e["check_seconds"] for e in result["scan"].values() if "check_seconds" in e)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
