"""Optimizers and learning-rate schedules of the trainer; schedules step once per batch.

* ``pat`` — the PaT paper's recipe: linear warm-up over the first ``warmup_epochs``, then cosine decay to 0;
* ``cosine`` — cosine decay to 0 from the first batch;
* ``step`` — multiply by ``gamma`` at each of the ``milestones`` (epochs);
* ``onecycle`` — :class:`torch.optim.lr_scheduler.OneCycleLR` (cosine up for 30 %, then down; momentum cycles);
* ``constant``.

All but one-cycle are a :class:`~torch.optim.lr_scheduler.LambdaLR` of a pure function of the step, so a resumed
run recomputes the same factors from the restored step count.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ..core.errors import ConfigError
from .config import TrainConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose --optimizer sgd, adam or adamw")


class _Factor:
    """LR multiplier as a function of the global batch step (a plain object: nothing to pickle or store)."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.kind = cfg.schedule
        self.total = cfg.epochs * steps_per_epoch
        self.per_epoch = steps_per_epoch
        self.warmup = (cfg.warmup_epochs or 0) * steps_per_epoch if cfg.schedule == "pat" else 0
        self.milestones = sorted(cfg.milestones or [])
        self.gamma = cfg.gamma

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            epoch = step // self.per_epoch
            return self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                   # SGD without momentum has none to cycle
                                                   cycle_momentum=not (cfg.optimizer == "sgd" and cfg.momentum == 0))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Factor(cfg, steps_per_epoch))
