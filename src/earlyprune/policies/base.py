"""What every when-to-prune policy is.

A policy is one small class registered by name in :data:`POLICIES`. Training runs dense until the policy says
so; then one epoch prunes (PaT Algorithm 1: S iterative steps) and the rest of training is sparse (Algorithm 2).
The pruner asks the policy

* :meth:`Policy.start` once, before training: should epoch 0 already be the pruning epoch?
* :meth:`Policy.update` at the end of every dense epoch with an :class:`EpochReport`: should the **next**
  epoch be the pruning epoch?

``update`` is the only method that may change the policy's state; every query is free of side effects, and
:meth:`state_dict` / :meth:`load_state_dict` let a resumed run decide identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..groups import ChannelGroups
from ..registry import Registry


@dataclass
class EpochReport:
    """What the pruner hands a policy at the end of a dense epoch."""

    epoch: int                                   #: the epoch that just ended (0-based)
    model: nn.Module
    groups: ChannelGroups
    scores: dict[str, torch.Tensor] | None = None  #: epoch-averaged criterion scores, if the policy asked
    ratio: float = 0.0                           #: the pruning target of the run
    extra: dict[str, Any] = field(default_factory=dict)


class Policy:
    """Base class of when-to-prune policies."""

    name: ClassVar[str] = "policy"
    #: whether the pruner must accumulate criterion scores during dense epochs for this policy
    needs_scores: ClassVar[bool] = False
    #: spread the pruning steps over this many batches from the start of the pruning epoch (None: the whole
    #: epoch). A policy that prunes before training (3SP, CroP) sets a few batches.
    pruning_batches: int | None = None

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "Policy":
        raise ValueError(f"policy {cls.name!r} takes no ':' argument, got {cls.name}:{arg}")

    def start(self) -> bool:
        """Prune during epoch 0?"""
        return False

    def update(self, report: EpochReport) -> bool:
        """Called after each dense epoch; True makes epoch ``report.epoch + 1`` the pruning epoch."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


POLICIES: Registry[Policy] = Registry("policy", Policy)
