"""What a run gained: the ``summary.json`` of a run and its human-readable form (``earlyprune info``).

Time is training time only (forward, backward, optimizer, pruner; evaluation excluded). The *dense-equivalent*
time is what the whole run would have taken at the steady speed of its dense epochs: the median dense epoch's
training loop and pruner (epoch 0 left out when later dense epochs exist: it includes warm-up; one-time costs —
speed settings, predictor, gain timing, compile — never counted in it) times the number of epochs; the speedup is
that over the measured time, only for a run that pruned (an unpruned run has nothing to be faster by: null). The
one-time costs are reported on their own (``one_time_seconds``). A run that prunes during epoch 0 has no dense
epoch to compare with (null).

Whether the run pruned at all is said explicitly (``pruned``, and ``pruning``: the
:class:`~earlyprune.outcome.PruningOutcome` with the reason when nothing was removed); ``prune_epoch`` is set
only when channels were removed. Epochs are numbered from 0 (a 10-epoch run has epochs 0–9).

The summary is the trainer's last phase: :func:`run_summary` builds a trained run's whole ``summary.json`` —
:func:`build_summary` of its rows, and what the run decided and measured on the way.
"""

from __future__ import annotations

import os
import resource
import statistics
from typing import Any

import torch
from torch import nn

from ..graph.metrics import ModelStats
from ..outcome import PRUNED, PruningOutcome, pruning_outcome
from ..unstructured.storage import csr_bytes, dense_bytes, reference_disk_size
from .run import Run


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def epoch_seconds(row: dict[str, Any]) -> float:
    """Wall seconds of an epoch's training: the loop, the pruner's epoch end, and what the run measured for its
    user (speed settings, the per-step gain, the compile decision)."""
    return float(row["seconds"]) + float(row.get("pruner_seconds", 0.0)) + float(row.get("overhead_seconds", 0.0))


def epoch_cpu_seconds(row: dict[str, Any]) -> float | None:
    """The same on the process CPU time (None for rows written before it was recorded)."""
    if "cpu_seconds" not in row:
        return None
    return (float(row["cpu_seconds"]) + float(row.get("pruner_cpu_seconds", 0.0))
            + float(row.get("overhead_cpu_seconds", 0.0)))


def _steady_dense(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dense epochs, the first left out when later ones exist (it includes warm-up)."""
    dense_rows = [r for r in rows if r["phase"] == "dense"]
    return dense_rows[1:] if len(dense_rows) > 1 else dense_rows


def loop_seconds(row: dict[str, Any]) -> float:
    """Wall seconds of an epoch's training loop and pruner, without what the run measured once (speed settings,
    predictor, gain timing, compile): the steady cost of such an epoch."""
    return float(row["seconds"]) + float(row.get("pruner_seconds", 0.0))


def phase_seconds(rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Median steady seconds (:func:`loop_seconds`) of a dense epoch (epoch 0 left out when later dense epochs
    exist: it includes warm-up) and of a sparse (pruned) epoch; None where the run has no such epoch."""
    dense_secs = [loop_seconds(r) for r in _steady_dense(rows)]
    return _median(dense_secs), _median([loop_seconds(r) for r in rows if r["phase"] == "sparse"])


def dense_epochs_spent(rows: list[dict[str, Any]], cpu: bool) -> float | None:
    """How many dense epochs' time ``rows`` took: all their training time (loop, pruner, measurements) over the
    median training loop of a dense epoch among them (epoch 0 left out when later dense epochs exist: warm-up). On
    the process CPU time when ``cpu`` (and recorded), else on the wall clock; None without a dense epoch."""
    dense_rows = _steady_dense(rows)
    if not dense_rows:
        return None
    cpu = cpu and all(epoch_cpu_seconds(r) is not None for r in rows)
    loop = _median([float(r["cpu_seconds"] if cpu else r["seconds"]) for r in dense_rows])
    spent = sum((epoch_cpu_seconds(r) if cpu else epoch_seconds(r)) or 0.0 for r in rows)
    return spent / loop if loop else None


def run_fraction(rows: list[dict[str, Any]]) -> float | None:
    """How much of a dense run's time a run took — the one definition every report uses: all its training time
    (loop, pruner, what it measured once) over its dense-equivalent (the median steady dense epoch, times the
    epochs). The summary's speedup is its inverse; a time budget's "spent" is it. None without a dense epoch."""
    dense_epoch, _ = phase_seconds(rows)
    if not rows or not dense_epoch:
        return None
    return sum(epoch_seconds(r) for r in rows) / (dense_epoch * len(rows))


def budget_spent(rows: list[dict[str, Any]], cpu: bool) -> float | None:
    """The fraction of a dense run's time this run took, estimated against its own dense epochs:
    :func:`dense_epochs_spent` over the number of epochs; None for a run without a dense epoch (pruned from the
    start)."""
    units = dense_epochs_spent(rows, cpu)
    return units / len(rows) if units is not None else None


def build_summary(rows: list[dict[str, Any]], *, epochs: int, prune_epoch: int | None, dense: ModelStats,
                  final: ModelStats, peak_memory: dict[str, Any], model_bytes: int | None,
                  outcome: PruningOutcome | None = None) -> dict[str, Any]:
    """The ``summary.json`` of a run; with ``outcome`` (what :func:`~earlyprune.outcome.pruning_outcome` says),
    ``prune_epoch`` is the epoch during which channels were removed, None when none were."""
    if outcome is not None:
        prune_epoch = outcome.epoch
    accs = [r.get("test_accuracy") for r in rows]   # None for epochs not evaluated (--eval-every)
    evaluated = [i for i, a in enumerate(accs) if a is not None]
    best = max(evaluated, key=lambda i: accs[i]) if evaluated else None
    dense_rows = [r for r in rows if r["phase"] == "dense"]
    dense_evaluated = [r for r in dense_rows if r.get("test_accuracy") is not None]
    dense_epoch, sparse_epoch = phase_seconds(rows)
    train_seconds = sum(epoch_seconds(r) for r in rows)
    dense_equivalent = dense_epoch * len(rows) if dense_epoch is not None else None
    fraction = run_fraction(rows)
    pruned = outcome.pruned if outcome is not None else final.params < dense.params
    last_dense = dense_evaluated[-1] if dense_evaluated else None
    return {
        "complete": len(rows) >= epochs,
        "epochs": len(rows),
        "epochs_planned": epochs,
        "final_test_accuracy": accs[evaluated[-1]] if evaluated else None,
        "best_test_accuracy": accs[best] if best is not None else None,
        "best_epoch": best,
        "dense_test_accuracy": last_dense["test_accuracy"] if last_dense else None,
        "pruned": pruned,
        "prune_epoch": prune_epoch,
        "pruning": outcome.to_dict() if outcome is not None else None,
        "train_seconds": train_seconds,
        "train_cpu_seconds": (sum(epoch_cpu_seconds(r) for r in rows)  # type: ignore[misc]
                              if rows and all(epoch_cpu_seconds(r) is not None for r in rows) else None),
        "eval_seconds": sum(float(r.get("eval_seconds", 0.0)) for r in rows),
        "dense_epoch_seconds": dense_epoch,
        "sparse_epoch_seconds": sparse_epoch,
        "dense_equivalent_seconds": dense_equivalent,
        "speedup": 1.0 / fraction if pruned and fraction else None,   # run_fraction: one definition
        "one_time_seconds": sum(float(r.get("overhead_seconds", 0.0)) for r in rows),
        "dense_images_per_second": _median([r["images_per_second"] for r in dense_rows]),
        "sparse_images_per_second": _median([r["images_per_second"] for r in rows if r["phase"] == "sparse"]),
        "params": {"dense": dense.params, "final": final.params, "reduction": 1 - final.params / dense.params},
        "macs": {"dense": dense.macs, "final": final.macs,
                 "reduction": 1 - final.macs / dense.macs if dense.macs else 0.0},
        "node_sparsity": final.node_sparsity,
        "weight_sparsity": final.weight_sparsity,
        "peak_memory": peak_memory,
        "load_average": _median([float(r["load_average"]) for r in rows if r.get("load_average") is not None]),
        "cpu_count": os.cpu_count(),
        "model_bytes": model_bytes,
    }



def run_summary(run: Run, final: ModelStats, *, profile_written: bool = False,
                time_budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` of a trained run: :func:`build_summary` of its rows, then what the run decided and
    measured on the way (speed settings, rounding, gain, compile, the time budget as :func:`.budget.budget_record`
    gave it, resume changes, ranks, the size on disk, LTR's rounds). ``profile_written``: whether this run wrote
    its ``--speed-profile``."""
    cfg, rows, pruner = run.cfg, run.rows, run.pruner
    summary = build_summary(rows, epochs=run.epochs, prune_epoch=pruner.prune_epoch, dense=run.dense_stats,
                            final=final, peak_memory=peak_memory(run.device), model_bytes=None,
                            outcome=run_outcome(run))
    summary.update(
        round_to=pruner.round_to_record, speed_settings=run.speed.to_dict() if run.speed is not None else None,
        min_channels=run.min_channels, max_group_ratio=cfg.max_group_ratio,
        gain=run.gain or _first(rows, "gain"), bn_recalibration=_first(rows, "bn_recalibration"))
    if cfg.speed_profile is not None:
        summary["speed_profile"] = {"path": str(cfg.speed_profile), "read": run.profile is not None,
                                    "written": profile_written}
    summary.update(
        compile=run.compiled.to_dict() if run.compiled is not None else _first(rows, "compile"),
        time_budget=time_budget, ratio=pruner.ratio, environment=run.environment,
        resume_changes=run.resume_changes, world_size=run.parallel.world_size,
        global_batch_size=run.train_loader.global_batch_size, ranks=run.parallel.agreement(run.model),
        granularity=cfg.granularity, disk=disk_record(run.model))
    if cfg.granularity == "weights":
        # masks on dense kernels remove nothing, so they save no time: a ratio of epoch times is noise (a 3-epoch
        # run showed 1.26x). With "both" the channels removed are real, and so is their speedup.
        summary["speedup"] = None
    if run.lottery is not None:
        summary["lottery"] = {"rounds": cfg.lottery_rounds, "rewind_epoch": cfg.lottery_rewind,
                              "epochs_per_round": cfg.epochs, "history": run.lottery.history}
    return summary


def _first(rows: list[dict[str, Any]], key: str) -> Any:
    """The first row's ``key`` that is set: a one-time record, kept by the epoch that made it (after a resume,
    this process may not have made it)."""
    return next((r[key] for r in rows if r.get(key)), None)


def run_outcome(run: Run) -> PruningOutcome:
    """What pruned the run: the pruner, or Lottery Ticket Rewinding's rounds (the pruner stays dense then)."""
    if run.lottery is None or not run.lottery.history:
        return pruning_outcome(run.pruner, run.epochs)
    history = run.lottery.history
    return PruningOutcome(True, PRUNED, history[0]["epoch"], 0, len(history), None, None,
                          sum(int(h["pruned"]) for h in history))


def peak_memory(device: torch.device) -> dict[str, Any]:
    """The run's peak memory: CUDA's allocated bytes, or on a CPU the process's peak RSS."""
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "CUDA allocated"}
    # ru_maxrss is in KiB on Linux: the whole process's peak, dataset included
    return {"bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "process RSS"}


def disk_record(model: nn.Module) -> dict[str, Any]:
    """The model's size on disk as EarlyCroP reports it (:mod:`earlyprune.unstructured.storage`): its weight
    tensors in CSR (fp32 values, the narrowest integer indices), the reference code's formula, and dense."""
    return {"csr_bytes": csr_bytes(model), "csr_precision": "values fp32, indices the narrowest of 8/16/32/64 bits",
            "reference_size": reference_disk_size(model), "dense_bytes": dense_bytes(model), "file_bytes": None}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} s"


def pruning_text(summary: dict[str, Any]) -> str:
    """``during epoch 3 (8 steps, 120 channels removed)`` or ``not pruned: <why>`` (summaries written before the
    reason was recorded: from the parameter counts)."""
    if summary.get("pruning"):
        return PruningOutcome.from_dict(summary["pruning"]).describe()
    prune, params = summary.get("prune_epoch"), summary.get("params") or {}
    if prune is None:
        return "not pruned: the policy did not trigger"
    if params.get("final") is not None and params.get("final") == params.get("dense"):
        return f"not pruned: nothing was removed (the policy triggered for epoch {prune})"
    return f"during epoch {prune}"


def format_summary(summary: dict[str, Any], title: str = "") -> str:
    """A short human-readable table of a summary."""
    p, m = summary["params"], summary["macs"]
    speed = summary.get("speedup")
    lines = [title] if title else []
    lines += [
        f"{'epochs':28}{summary['epochs']} of {summary['epochs_planned']}"
        + ("" if summary["complete"] else "  (incomplete: continue with --resume)"),
        f"{'pruning':28}{pruning_text(summary)}",
        f"{'test accuracy':28}final {_pct(summary['final_test_accuracy'])}, best {_pct(summary['best_test_accuracy'])}"
        f" (epoch {summary['best_epoch']}), last dense {_pct(summary['dense_test_accuracy'])}",
        f"{'parameters':28}{p['dense']:,} -> {p['final']:,} ({p['reduction']:.1%} fewer)",
        f"{'MACs per image':28}{m['dense']:,} -> {m['final']:,} ({m['reduction']:.1%} fewer)",
        f"{'node / weight sparsity':28}{_pct(summary['node_sparsity'])} / {_pct(summary['weight_sparsity'])}",
        f"{'seconds per epoch':28}dense {_secs(summary['dense_epoch_seconds'])}, "
        f"pruned {_secs(summary['sparse_epoch_seconds'])}",
        _training_time_line(summary, speed),
    ]
    lines += _speed_lines(summary) + _machine_and_size_lines(summary)
    return "\n".join(lines)


def _training_time_line(summary: dict[str, Any], speed: float | None) -> str:
    if summary.get("granularity") == "weights":
        return f"{'training time':28}{_secs(summary['train_seconds'])} (weights masked, not removed: no speedup)"
    said = f"{speed:.2f}x" if speed is not None else "n/a: nothing pruned" if not summary.get("pruned") else "n/a"
    return (f"{'training time':28}{_secs(summary['train_seconds'])} (dense-equivalent "
            f"{_secs(summary['dense_equivalent_seconds'])}, speedup {said})")


def _speed_lines(summary: dict[str, Any]) -> list[str]:
    """One-time costs, precision and layout, the per-step gain, --compile and the rounding of widths."""
    lines: list[str] = []
    if summary.get("one_time_seconds"):
        lines.append(f"{'one-time costs':28}{_secs(summary['one_time_seconds'])} (measurements made once: speed "
                     f"settings, predictor, gain timing, compile; in the training time above)")
    speed_settings = summary.get("speed_settings")
    if speed_settings:
        measured = speed_settings.get("speedup") or {}
        lines.append(f"{'precision / layout':28}{speed_settings['precision']}"
                     f"{', channels_last' if speed_settings['channels_last'] else ''}"
                     + (" (measured: " + ", ".join(f"{m} {v:.2f}x" for m, v in measured.items()) + " vs the first)"
                        if measured else ""))
    gain = summary.get("gain")
    if gain:
        text = (f"{gain['measured_speedup']:.2f}x measured ({gain['clock']} time, batch {gain['batch_size']}), "
                f"MACs-ideal {gain['macs_ideal_speedup']:.2f}x")
        if gain.get("predicted_speedup"):
            text += f", predicted {gain['predicted_speedup']:.2f}x"
        if gain.get("asked_speedup"):
            text += f", asked {gain['asked_speedup']:.2f}x"
        lines.append(f"{'per-step speedup':28}{text}")
        for reason in gain.get("reasons") or []:
            lines.append(f"{'':28}not faster: {reason}")
    comp = summary.get("compile")
    if comp and comp.get("mode") != "off":
        lines.append(f"{'torch.compile':28}{'on' if comp['compiled'] else 'off'} ({comp['reason']})")
    rt = summary.get("round_to")
    if isinstance(rt, dict):
        from ..planning.rounding import RoundToChoice

        choice = RoundToChoice.from_dict(rt)
        lines.append(f"{'widths rounded to':28}multiples of {choice.describe()} — round_to=auto")
        if choice.seconds:
            lines.append(f"{'':28}layer ms per multiple (median of {len(next(iter(choice.rounds.values()), []))} "
                         f"rounds): " + ", ".join(f"{k}: {1e3 * v:.2f}" for k, v in choice.seconds.items()))
    elif isinstance(rt, int):
        lines.append(f"{'widths rounded to':28}multiples of {rt}")
    return lines


def _machine_and_size_lines(summary: dict[str, Any]) -> list[str]:
    """The machine's load, peak memory, the model's size on disk, weight masks and LTR."""
    mem = summary.get("peak_memory") or {}
    lines: list[str] = []
    load, cpus = summary.get("load_average"), summary.get("cpu_count")
    if load is not None and cpus and load > cpus:
        lines.append(f"{'machine load':28}{load:.1f} (median 1-minute load average) on {cpus} CPUs: other work "
                     f"slowed these timings")
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
    return lines
