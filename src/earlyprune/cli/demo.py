"""``earlyprune demo``: early pruning on scikit-learn's bundled 8×8 digits, in 30–60 s on a 2-core CPU.

A small CNN trains dense until the policy (``epi`` capped at half the epochs) triggers, one epoch
prunes half of its channels in a few iterative steps (PaT's ``target="channels"``, the trainer's default), and the
smaller model trains on. It runs the same trainer
as ``earlyprune train`` (:mod:`earlyprune.training`), in memory unless ``out_dir`` is given, and summarises
accuracy, size, MACs and time per epoch before and after pruning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..graph.metrics import ModelStats
from ..policies import POLICIES
from ..training import TrainConfig, train

DEFAULT_PRUNE_EPOCH = 4


@dataclass
class DemoResult:
    dense_accuracy: float      #: test accuracy at the end of the last dense epoch
    final_accuracy: float
    dense_stats: ModelStats
    final_stats: ModelStats
    dense_epoch_seconds: float
    sparse_epoch_seconds: float
    prune_epoch: int | None
    policy: str
    epochs: list[dict]
    run_dir: str | None = None
    gain: dict | None = None   #: the per-step speedup measured after the pruning epoch (summary.json "gain")
    not_pruned_reason: str | None = None   #: why nothing was removed (None when the demo pruned)


def default_policy(epochs: int = 12) -> str:
    """EPI capped at half the run (its default cap, epoch 30, lies beyond a short demo: the run would stay dense
    if the signal never fired), else a fixed epoch."""
    if "epi" in POLICIES:
        return f"epi:cap={max(1, epochs // 2)}"
    return f"epoch:{min(DEFAULT_PRUNE_EPOCH, max(0, epochs - 2))}"


def run_demo(epochs: int = 12, ratio: float = 0.5, policy: str | None = None, criterion: str = "magnitude",
             steps: int = 4, batch_size: int = 64, width: int = 64, seed: int = 0, out_dir: str | None = None,
             log: Callable[[str], None] = print, target: str = "channels") -> DemoResult:
    """Train the demo CNN on digits with early pruning and return what happened."""
    policy = policy or default_policy(epochs)
    cfg = TrainConfig(model="small_cnn", model_args={"width": width}, dataset="digits", epochs=epochs,
                      batch_size=batch_size, eval_batch_size=512, optimizer="sgd", lr=0.05, momentum=0.9,
                      nesterov=True, weight_decay=5e-4, schedule="cosine", criterion=criterion, policy=policy,
                      ratio=ratio, target=target, steps=steps, seed=seed, device="cpu", progress="log", threads=1,
                      out_dir=out_dir or "runs", name=None)
    result = train(cfg, write=out_dir is not None, log=log)
    s = result.summary
    return DemoResult(dense_accuracy=s["dense_test_accuracy"] or 0.0, final_accuracy=s["final_test_accuracy"],
                      dense_stats=result.dense_stats, final_stats=result.final_stats,
                      dense_epoch_seconds=s["dense_epoch_seconds"] or float("nan"),
                      sparse_epoch_seconds=s["sparse_epoch_seconds"] or float("nan"),
                      prune_epoch=s["prune_epoch"], policy=result.config.policy, epochs=result.rows,
                      run_dir=str(result.run_dir) if result.run_dir else None, gain=s.get("gain"),
                      not_pruned_reason=(s.get("pruning") or {}).get("reason"))


def summary(result: DemoResult) -> str:
    d, f = result.dense_stats, result.final_stats
    speed = result.dense_epoch_seconds / result.sparse_epoch_seconds if result.sparse_epoch_seconds else float("nan")
    lines = [
        "",
        f"{'':26}{'before pruning':>16}{'after pruning':>16}",
        f"{'test accuracy':26}{result.dense_accuracy:>16.2%}{result.final_accuracy:>16.2%}",
        f"{'parameters':26}{d.params:>16,}{f.params:>16,}",
        f"{'MACs per image':26}{d.macs:>16,}{f.macs:>16,}",
        f"{'seconds per epoch':26}{result.dense_epoch_seconds:>16.3f}{result.sparse_epoch_seconds:>16.3f}",
        "",
    ]
    if result.prune_epoch is None:
        why = result.not_pruned_reason or f"the {result.policy} policy did not trigger within {len(result.epochs)} epochs"
        lines.append(f"Not pruned: {why}. (Try more --epochs, or --prune-epoch K.)")
    else:
        later = (f"; every later epoch ran {speed:.1f}x faster than a dense one" if speed == speed  # NaN: none later
                 else "")
        lines.append(f"Pruned during epoch {result.prune_epoch} ({result.policy} policy): {f.params / d.params:.0%} of "
                     f"the parameters and {f.macs / d.macs:.0%} of the MACs remain (node sparsity "
                     f"{f.node_sparsity:.0%}){later}.")
        if result.gain:
            g = result.gain
            predicted = f", {g['predicted_speedup']:.2f}x predicted" if g.get("predicted_speedup") else ""
            lines.append(f"Per training step, timed side by side after pruning: {g['measured_speedup']:.2f}x faster "
                         f"than dense ({g['clock']} time){predicted}; the MACs alone would allow "
                         f"{g['macs_ideal_speedup']:.2f}x.")
    if result.run_dir:
        lines.append(f"Run directory: {result.run_dir} (earlyprune info {result.run_dir})")
    return "\n".join(lines)
