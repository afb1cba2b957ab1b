"""Pruning before training, inside the training loop: 3SP, CroP-S, CroPit, SNAP-it."""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

from ..core.validation import Interval, InvalidParameterError, Rule, checked, rule
from .base import POLICIES, Decision, EpochReport, Policy


@POLICIES.register("before")
class Before(Policy):
    """``before`` / ``before:K`` — prune at the very start of training, from the first ``K`` batches the pruner
    sees (default 1: 3SP scores one minibatch), then train the pruned model for the whole run.

    The pruner spreads its ``steps`` over those ``K`` batches (:attr:`pruning_batches`): each step scores the
    batches since the previous one, and the cumulative fractions follow CroPit / SNAP-it's halving schedule
    ``ρ − (ρ − 0.5)·0.5^i`` (:attr:`schedule`; :func:`~earlyprune.planning.selection.halving_amounts`). Data-driven
    criteria need ``steps ≤ K`` (every step rescores on a fresh batch). Use it with the pruning-before-training
    criteria (``snip`` for 3SP / SNAP-it, ``crop`` for CroP-S / CroPit, optionally ``compute_aware=λ``).

    ``pruner.step()`` runs after the optimizer step of its batch, so the model has taken at most ``K`` updates
    when it is pruned (the optimizer state is sliced with it); for pruning strictly before any update, call
    :func:`earlyprune.prune` with ``batches=`` before the loop.
    """

    #: the step schedule the pruner uses with this policy (see :data:`earlyprune.planning.selection.SCHEDULES`)
    schedule = "halving"
    automatic = True

    RULES: ClassVar[dict[str, Rule]] = {
        "batches": rule(Interval(Integral, 0, None, closed="neither"), hint="before:K scores the first K batches"),
    }

    @checked(RULES)
    def __init__(self, batches: int = 1) -> None:
        self.pruning_batches = batches

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "Before":
        try:
            return cls(int(arg), **kwargs)
        except ValueError:
            raise InvalidParameterError(f"policy 'before:K' needs a whole number of batches K ≥ 1, got 'before:{arg}'") from None

    def start(self) -> bool:
        return True

    def evaluate(self, report: EpochReport) -> Decision:
        return Decision(False)  # never asked: pruning starts with epoch 0

    def __repr__(self) -> str:
        return f"Before({self.pruning_batches})"
