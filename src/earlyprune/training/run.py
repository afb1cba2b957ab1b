"""The state of one ``earlyprune train`` run, which every phase reads and advances.

:mod:`.build` fills a :class:`Run`, :mod:`.restore` puts a checkpoint's states back into it, :mod:`.speedup` and
:mod:`.budget` record what they decided on it, :mod:`.loop` trains it and :mod:`.summary` reads it at the end. What
several phases ask of it — its training loss, a real batch, a warning, a new layout after a removal — lives here,
so that no phase reaches into another.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.validation import InvalidParameterError
from ..graph.metrics import ModelStats
from ..pruner import EarlyPruner
from ..unstructured.lottery import LotteryTicketRewinding
from .config import TrainConfig
from .data import BatchLoader, ImageData
from .loggers import RunLogger
from .parallel import DataParallel
from .precision import Precision
from .progress import Progress
from .speed import CompileDecision, SpeedSettings

#: weight of each auxiliary classifier's loss (GoogLeNet, Szegedy et al. 2015, §5: "weighted by 0.3")
AUX_WEIGHT = 0.3


def training_loss(out: Any, targets: torch.Tensor, loss_fn: Callable[[Any, Any], torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, loss)`` of a training-mode output: a tensor, or a tuple whose first entry is the logits and the
    rest auxiliary classifiers (torchvision's GoogLeNet / Inception-v3), added with :data:`AUX_WEIGHT`."""
    if isinstance(out, torch.Tensor):
        return out, loss_fn(out, targets)
    if isinstance(out, tuple) and out and all(isinstance(o, torch.Tensor) or o is None for o in out) \
            and isinstance(out[0], torch.Tensor):
        aux = [o for o in out[1:] if o is not None]
        return out[0], loss_fn(out[0], targets) + AUX_WEIGHT * sum((loss_fn(a, targets) for a in aux),
                                                                   torch.zeros((), device=out[0].device))
    raise InvalidParameterError(f"the model returned {type(out).__name__} in training mode; `earlyprune train` "
                                f"needs logits or a tuple (logits, auxiliary logits…)")


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give per-parameter optimizer state its parameter's memory layout (after pruning or loading), so that the
    element-wise updates run the same kernels however the state was produced."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def set_memory_format(model: nn.Module, optimizer: torch.optim.Optimizer | None, channels_last: bool) -> None:
    if channels_last:
        model.to(memory_format=torch.channels_last)  # parameters keep their identity (set .data)
        if optimizer is not None:
            match_state_layout(optimizer)


class LoggedWarning(UserWarning):
    """A run's warning that its progress log already showed: ``earlyprune train`` does not print it a second time
    (a ``UserWarning`` still, for a caller of :func:`~earlyprune.training.trainer.train` that filters them)."""

    already_logged = True


@dataclass
class Run:
    """What one training run holds while it trains: built by :func:`.build.setup` and :func:`.build.build`,
    restored by :func:`.restore.restore`, advanced by :func:`.loop.run_epochs`, summarised by
    :func:`.summary.run_summary`."""

    cfg: TrainConfig
    run_dir: Path | None
    write: bool
    progress: Progress
    device: torch.device
    precision: Precision
    data: ImageData
    train_loader: BatchLoader
    test_loader: BatchLoader
    parallel: DataParallel
    model: nn.Module = None  # type: ignore[assignment]
    net: nn.Module = None  # type: ignore[assignment]  #: what the training forward runs through (DDP or model)
    example: torch.Tensor = None  # type: ignore[assignment]
    dense_stats: ModelStats = None  # type: ignore[assignment]
    optimizer: torch.optim.Optimizer = None  # type: ignore[assignment]
    scheduler: Any = None
    loss_fn: nn.Module = None  # type: ignore[assignment]
    pruner: EarlyPruner = None  # type: ignore[assignment]
    lottery: LotteryTicketRewinding | None = None
    start_epoch: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    speed: SpeedSettings | None = None           #: what --precision / --channels-last resolved to
    channels_last: bool = False
    min_channels: int = 1                         #: --min-channels, raised where narrow widths crash the device
    dense_copy: nn.Module | None = None           #: the dense model, kept during the pruning epoch to time the gain
    gain: dict[str, Any] | None = None
    compiled: CompileDecision | None = None
    budget: dict[str, Any] | None = None
    setup_seconds: tuple[float, float] = (0.0, 0.0)   #: wall / CPU seconds of the speed-settings measurement
    environment: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None         #: --speed-profile's measurements, when it already existed
    resume_changes: list[dict[str, Any]] = field(default_factory=list)
    loggers: list[RunLogger] = field(default_factory=list)

    @property
    def writing(self) -> bool:
        return self.run_dir is not None and self.write and self.parallel.is_main

    @property
    def epochs(self) -> int:
        """Epochs the run trains in all: ``--epochs``, or LTR's ``E + R·(E − K)``."""
        return self.lottery.total_epochs if self.lottery is not None else self.cfg.epochs

    def rewrap(self) -> nn.Module:
        """A new DDP wrapper around the (just pruned) model; the model itself in a single process."""
        self.net = self.parallel.wrap(self.model)
        return self.net

    def relayout(self) -> None:
        """After channels were removed: the new parameters in the run's memory format, and a new DDP wrapper."""
        set_memory_format(self.model, self.optimizer, self.channels_last)
        self.rewrap()

    def warn(self, message: str) -> None:
        """A warning for the caller (``earlyprune train`` prints it as one line) and the run's log alike; under
        torchrun rank 0's only (every rank reaches the same decisions, so the others would repeat it)."""
        if not self.parallel.is_main:
            return
        logged = self.progress.mode != "none"
        if logged:
            self.progress.log(f"warning: {message}")
        warnings.warn(message, LoggedWarning if logged else UserWarning, stacklevel=3)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A training-sized batch of real images, laid out as the run trains (no loader state is touched)."""
        n = min(self.cfg.batch_size, len(self.train_loader.x))
        return self.train_loader.normalise(self.train_loader.x[:n]), self.train_loader.y[:n]

    def step_loss(self) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """The run's training loss as the speed measurements call it: ``loss(output, targets)``, auxiliary outputs
        included (:func:`training_loss`)."""
        return lambda out, targets: training_loss(out, targets, self.loss_fn)[1]


def removes_channels(run: Run) -> bool:
    """Whether the run's pruning makes the model smaller (so its gain is timed and compiling it is considered):
    not with masked weights only."""
    return run.cfg.granularity != "weights" and run.lottery is None
