"""What a run gained: the ``summary.json`` of a run and its human-readable form (``earlyprune info``).

Time is training time only (forward, backward, optimizer, pruner; evaluation excluded). The *dense-equivalent*
time is what the whole run would have taken at the speed of its dense epochs: the median dense epoch (epoch 0
left out when later dense epochs exist: it includes warm-up) times the number of epochs; the speedup is that
over the measured time. A run that prunes during epoch 0 has no dense epoch to compare with (null).
"""

from __future__ import annotations

import statistics
from typing import Any

from ..metrics import ModelStats


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def epoch_seconds(row: dict[str, Any]) -> float:
    return float(row["seconds"]) + float(row.get("pruner_seconds", 0.0))


def build_summary(rows: list[dict[str, Any]], *, epochs: int, prune_epoch: int | None, dense: ModelStats,
                  final: ModelStats, peak_memory: dict[str, Any], model_bytes: int | None) -> dict[str, Any]:
    accs = [r["test_accuracy"] for r in rows]
    best = max(range(len(rows)), key=lambda i: accs[i]) if rows else None
    dense_rows = [r for r in rows if r["phase"] == "dense"]
    dense_secs = [epoch_seconds(r) for r in (dense_rows[1:] if len(dense_rows) > 1 else dense_rows)]
    sparse_secs = [epoch_seconds(r) for r in rows if r["phase"] == "sparse"]
    train_seconds = sum(epoch_seconds(r) for r in rows)
    dense_epoch = _median(dense_secs)
    dense_equivalent = dense_epoch * len(rows) if dense_epoch is not None else None
    last_dense = dense_rows[-1] if dense_rows else None
    return {
        "complete": len(rows) >= epochs,
        "epochs": len(rows),
        "epochs_planned": epochs,
        "final_test_accuracy": accs[-1] if rows else None,
        "best_test_accuracy": accs[best] if best is not None else None,
        "best_epoch": best,
        "dense_test_accuracy": last_dense["test_accuracy"] if last_dense else None,
        "prune_epoch": prune_epoch,
        "train_seconds": train_seconds,
        "eval_seconds": sum(float(r.get("eval_seconds", 0.0)) for r in rows),
        "dense_epoch_seconds": dense_epoch,
        "sparse_epoch_seconds": _median(sparse_secs),
        "dense_equivalent_seconds": dense_equivalent,
        "speedup": dense_equivalent / train_seconds if dense_equivalent and train_seconds else None,
        "dense_images_per_second": _median([r["images_per_second"] for r in dense_rows]),
        "sparse_images_per_second": _median([r["images_per_second"] for r in rows if r["phase"] == "sparse"]),
        "params": {"dense": dense.params, "final": final.params, "reduction": 1 - final.params / dense.params},
        "macs": {"dense": dense.macs, "final": final.macs,
                 "reduction": 1 - final.macs / dense.macs if dense.macs else 0.0},
        "node_sparsity": final.node_sparsity,
        "weight_sparsity": final.weight_sparsity,
        "peak_memory": peak_memory,
        "model_bytes": model_bytes,
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} s"


def format_summary(summary: dict[str, Any], title: str = "") -> str:
    """A short human-readable table of a summary."""
    p, m = summary["params"], summary["macs"]
    prune = summary["prune_epoch"]
    mem = summary.get("peak_memory") or {}
    speed = summary.get("speedup")
    lines = [title] if title else []
    lines += [
        f"{'epochs':28}{summary['epochs']} of {summary['epochs_planned']}"
        + ("" if summary["complete"] else "  (incomplete: continue with --resume)"),
        f"{'pruned during epoch':28}{'never' if prune is None else prune}",
        f"{'test accuracy':28}final {_pct(summary['final_test_accuracy'])}, best {_pct(summary['best_test_accuracy'])}"
        f" (epoch {summary['best_epoch']}), last dense {_pct(summary['dense_test_accuracy'])}",
        f"{'parameters':28}{p['dense']:,} -> {p['final']:,} ({p['reduction']:.1%} fewer)",
        f"{'MACs per image':28}{m['dense']:,} -> {m['final']:,} ({m['reduction']:.1%} fewer)",
        f"{'node / weight sparsity':28}{_pct(summary['node_sparsity'])} / {_pct(summary['weight_sparsity'])}",
        f"{'seconds per epoch':28}dense {_secs(summary['dense_epoch_seconds'])}, "
        f"pruned {_secs(summary['sparse_epoch_seconds'])}",
        f"{'training time':28}{_secs(summary['train_seconds'])} (dense-equivalent "
        f"{_secs(summary['dense_equivalent_seconds'])}, speedup {'n/a' if speed is None else f'{speed:.2f}x'})",
    ]
    rt = summary.get("round_to")
    if isinstance(rt, dict):
        lines.append(f"{'widths rounded to':28}multiples of {rt['value']} (auto; predicted layer ms per multiple: "
                     + ", ".join(f"{k}: {1e3 * v:.2f}" for k, v in rt.get("seconds", {}).items()) + ")")
    elif isinstance(rt, int):
        lines.append(f"{'widths rounded to':28}multiples of {rt}")
    if mem.get("bytes"):
        lines.append(f"{'peak memory':28}{mem['bytes'] / 2**20:,.0f} MiB ({mem.get('kind', '')})")
    if summary.get("model_bytes"):
        lines.append(f"{'model file':28}{summary['model_bytes'] / 2**10:,.0f} KiB")
    disk = summary.get("disk") or {}
    if disk.get("csr_bytes"):
        lines.append(f"{'weights in CSR':28}{disk['csr_bytes'] / 2**10:,.0f} KiB (dense "
                     f"{disk['dense_bytes'] / 2**10:,.0f} KiB; {disk['csr_precision']})")
    if summary.get("granularity") in ("weights", "both"):
        lines.append(f"{'note':28}weight masks run on dense kernels: they save no time and no memory, only disk")
    if summary.get("lottery"):
        lot = summary["lottery"]
        lines.append(f"{'lottery ticket rewinding':28}{lot['rounds']} rounds of {lot['epochs_per_round']} epochs, "
                     f"rewound to epoch {lot['rewind_epoch']}")
    return "\n".join(lines)
