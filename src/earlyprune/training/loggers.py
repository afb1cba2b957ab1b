"""Where a training run's numbers go besides ``metrics.jsonl``: TensorBoard, or a tracker of your own.

A :class:`RunLogger` receives four calls from the trainer — :meth:`~RunLogger.start` (the configuration),
:meth:`~RunLogger.log_epoch` (one ``metrics.jsonl`` row per epoch), :meth:`~RunLogger.log_event` (one per pruning
step) and :meth:`~RunLogger.finish` (``summary.json``) — and turns them into the tracker's calls. The base class
flattens an epoch row into named scalars (:func:`epoch_scalars`: loss, accuracy, LR, step time, parameters,
MACs, sparsities, EPI and the other signals, the pruning phase), so a tracker that takes ``name → number`` per
step is one method::

    @LOGGERS.register("mlflow")
    class MLflowLogger(RunLogger):
        def start(self, run):
            import mlflow
            mlflow.start_run(run_name=run.name)
            mlflow.log_params(flat_config(run.config))
        def log_scalars(self, step, scalars):
            import mlflow
            mlflow.log_metrics(scalars, step=step)
        def finish(self, summary):
            import mlflow
            mlflow.end_run()

(docs/logging.md has it and a Weights & Biases one.) ``earlyprune train --log NAME`` picks registered loggers by
name. Under ``torch.distributed`` :func:`build_loggers` returns loggers on rank 0 only, so no logger needs to
know about ranks. ``metrics.jsonl`` is written by the trainer whatever loggers run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import MissingDependencyError
from ..core.registry import Registry

PHASE_CODES = {"dense": 0, "pruning": 1, "sparse": 2}


@dataclass
class RunStart:
    """What a logger learns when a run starts (or resumes)."""

    name: str                               #: the run's name (its directory's name)
    run_dir: Path | None                    #: where the run's files go (None: an in-memory run)
    config: dict[str, Any]                  #: the resolved configuration (``config.json``)
    start_epoch: int = 0                    #: the first epoch this invocation trains (> 0 after --resume)
    extra: dict[str, Any] = field(default_factory=dict)  #: dense parameters / MACs, dataset description, …


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """One ``metrics.jsonl`` row as ``{name: number}``, the names grouped by ``/`` (TensorBoard's sections).

    ``train/loss``, ``train/accuracy``, ``test/loss``, ``test/accuracy`` (when the epoch was evaluated), ``lr``,
    ``time/epoch_seconds`` (training, pruning steps included), ``time/step_seconds`` (per batch),
    ``time/images_per_second``, ``time/eval_seconds``, ``model/params``, ``model/macs``,
    ``model/node_sparsity``, ``model/weight_sparsity``, ``pruning/phase`` (0 dense, 1 pruning, 2 sparse),
    ``pruning/channels_removed`` and ``pruning/steps`` (this epoch), ``pruning/trigger`` (1 when the policy
    fired at this epoch's end), and every number the pruner recorded: ``signals/policy_signal``,
    ``signals/epi@0.5`` (EPI at each ratio), ``signals/weight_change``, ``signals/kendall_tau``, …
    """
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            out[name] = number

    put("train/loss", row.get("train_loss"))
    put("train/accuracy", row.get("train_accuracy"))
    put("test/loss", row.get("test_loss"))
    put("test/accuracy", row.get("test_accuracy"))
    put("lr", row.get("lr"))
    seconds = _number(row.get("seconds"))
    if seconds is not None:
        put("time/epoch_seconds", seconds + (_number(row.get("pruner_seconds")) or 0.0))
        batches = row.get("batches")
        if isinstance(batches, int) and batches > 0:
            put("time/step_seconds", seconds / batches)
    put("time/images_per_second", row.get("images_per_second"))
    put("time/eval_seconds", row.get("eval_seconds"))
    for key in ("params", "macs", "node_sparsity", "weight_sparsity"):
        put(f"model/{key}", row.get(key))
    if row.get("phase") in PHASE_CODES:
        out["pruning/phase"] = float(PHASE_CODES[row["phase"]])
    events = row.get("events") or []
    out["pruning/steps"] = float(len(events))
    out["pruning/channels_removed"] = float(sum(int(e.get("removed", 0)) for e in events))
    pruner = row.get("pruner") or {}
    if "trigger" in pruner:
        out["pruning/trigger"] = 1.0 if pruner.get("trigger") else 0.0
    for key, value in pruner.items():
        if key in ("epoch", "trigger", "channels", "macs", "params"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                put(f"signals/{key}@{sub}", v)
        else:
            put(f"signals/{key}", value)
    return out


class RunLogger:
    """Base class of run loggers: override :meth:`log_scalars` (and :meth:`start` / :meth:`finish` /
    :meth:`close` when the tracker needs them); :meth:`log_epoch` and :meth:`log_event` may be overridden for
    more than scalars. Every method is a no-op by default."""

    name = "logger"

    def start(self, run: RunStart) -> None:
        """The run starts, or resumes at ``run.start_epoch``."""

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Named numbers at ``step`` (the epoch)."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One epoch's ``metrics.jsonl`` row; by default its :func:`epoch_scalars` at step = epoch."""
        self.log_scalars(int(row["epoch"]), epoch_scalars(row))

    def log_event(self, event: dict[str, Any]) -> None:
        """One pruning step (``epoch``, ``batch``, ``step``, ``amount``, ``removed``, ``seconds``, ``channels``,
        ``macs``, ``params``, ``round_to``); called before the epoch's :meth:`log_epoch`."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The run ended (``summary.json``); not called when it stopped early for a later ``--resume``."""

    def close(self) -> None:
        """Release files and connections (called always, also after an error)."""


LOGGERS: Registry[RunLogger] = Registry("logger", RunLogger)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested configuration as ``{"model_args.width": "16", …}`` (what trackers' parameter tables take)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


@LOGGERS.register("tensorboard")
class TensorBoardLogger(RunLogger):
    """TensorBoard event files in ``<run dir>/tensorboard`` (``tensorboard --logdir runs``), through
    ``torch.utils.tensorboard`` (``pip install 'earlyprune[tensorboard]'``): every :func:`epoch_scalars` at
    step = epoch, the configuration and each pruning step as text, the summary's numbers as text at the end.
    A resumed run drops the events of epochs it trains again (``purge_step``)."""

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer: Any = None

    def start(self, run: RunStart) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MissingDependencyError("--log tensorboard needs the tensorboard package: pip install "
                                         "'earlyprune[tensorboard]' (or pip install tensorboard)") from None
        log_dir = self.log_dir or (run.run_dir / "tensorboard" if run.run_dir is not None else Path("runs") / run.name)
        self._writer = SummaryWriter(str(log_dir), purge_step=run.start_epoch or None)
        if run.start_epoch == 0:
            table = "\n".join(f"| {k} | {v} |" for k, v in flat_config(run.config).items())
            self._writer.add_text("run/config", "| option | value |\n|---|---|\n" + table, 0)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def log_event(self, event: dict[str, Any]) -> None:
        self._writer.add_text("pruning/events",
                              f"epoch {event.get('epoch')}, batch {event.get('batch')}: step {event.get('step')} "
                              f"removed {event.get('removed')} channels (cumulative target {event.get('amount', 0):.3f}"
                              f"), {event.get('channels', 0):.0f} left, {event.get('seconds', 0):.3f} s",
                              int(event.get("epoch", 0)))

    def finish(self, summary: dict[str, Any]) -> None:
        pruning = summary.get("pruning") or {}
        lines = [f"- {k}: {v}" for k, v in summary.items() if _number(v) is not None or isinstance(v, str)]
        if pruning.get("reason"):
            lines.insert(0, f"- **not pruned**: {pruning['reason']}")
        self._writer.add_text("run/summary", "\n".join(lines), int(summary.get("epochs", 0)))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def build_loggers(names: Iterable[str]) -> list[RunLogger]:
    """The loggers named (``"tensorboard"``, or any registered in :data:`LOGGERS`); none on ranks other than 0
    under ``torch.distributed`` (the numbers are the same on every rank: write them once)."""
    import torch.distributed as dist

    names = [n.strip() for n in names if n and n.strip() and n.strip() != "none"]
    loggers = [LOGGERS.get(n)() for n in names]  # unknown names fail here, on every rank, with the list
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return []
    return loggers
