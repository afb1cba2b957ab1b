"""Lottery Ticket Rewinding (LTR; Frankle et al. 2020, "Linear mode connectivity and the lottery ticket
hypothesis") — the iterative-magnitude-pruning baseline that EarlyCroP compares its cost with.

One run of ``epochs`` epochs, then ``rounds`` times: prune by global magnitude, rewind what is left to its state
after ``rewind_epoch`` epochs of the first run, and train again from there to the end:

* round 0 trains the dense network for epochs ``0 … E−1``; the state after ``K = rewind_epoch`` epochs — weights,
  BatchNorm statistics, optimizer state and LR-schedule position — is the rewind point (``K = 0``: the
  initialisation, the original lottery ticket of Frankle & Carbin 2019);
* round ``r = 1 … R`` starts by keeping the ``(1 − ρ)^{r/R}`` largest-magnitude weights of the network as
  round ``r − 1`` left it (one global ranking; pruned weights stay pruned, so every round removes the same
  fraction ``1 − (1 − ρ)^{1/R}`` of what is left — Frankle's 20 % per round is ``R = log(1 − ρ)/log 0.8``),
  rewinds the kept weights and everything else to the rewind point, then trains epochs ``K … E−1``.

The final round's network is the ticket, at sparsity ρ. Training cost: ``E + R·(E − K)`` epochs — what makes LTR
the expensive baseline ("EarlyCroP is about 5 times less expensive than the LTH", EarlyCroP §1).

Restoring the optimizer state at the rewind point (not a fresh optimizer) rewinds the whole training state, as
"rewinding to iteration k" reads; the pruned entries of the restored momentum / Adam moments are zeroed with
the masks (:meth:`~earlyprune.graph.masks.MaskedWeights.apply`).

.. code-block:: python

    ltr = LotteryTicketRewinding(model, optimizer, 0.95, epochs=30, rounds=5, rewind_epoch=1, scheduler=sched)
    for epoch in ltr.schedule():          # global epochs: (round, epoch within the round)
        ltr.epoch_start(epoch)            # at a round's first epoch: prune, rewind
        train_one_epoch(model, optimizer, sched)
        ltr.epoch_end(epoch)              # after epoch K−1 of round 0: keep the rewind point
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..core.errors import UsageError
from ..core.validation import (
    IGNORED_LAYERS,
    MODEL,
    InstanceOf,
    Interval,
    InvalidParameterError,
    checked,
    rule,
)
from ..graph.masks import MaskedWeights, plain_tensors
from .selection import select_weights

log = logging.getLogger("earlyprune")


@dataclass(frozen=True)
class RoundEpoch:
    """Where a global epoch of an LTR run falls."""

    index: int   #: global epoch, 0-based, over all rounds
    round: int   #: 0: the dense run; 1 … R: pruned and rewound
    epoch: int   #: the epoch within the round's schedule (``K … E−1`` after round 0)


class LotteryTicketRewinding:
    """Iterative magnitude pruning with weight rewinding (see the module docstring).

    Args:
        model: the network (masks are attached to it at the first pruning).
        optimizer: its optimizer (state rewound with the weights).
        ratio: the final weight sparsity ρ, in (0, 1).
        epochs: epochs of each training run (E).
        rounds: pruning rounds R ≥ 1.
        rewind_epoch: K, the epoch whose end state the kept weights are rewound to (0: the initialisation).
        scheduler: an LR scheduler to rewind as well (its ``state_dict``).
        ignored_layers: modules whose weights are not pruned.
    """

    #: the arguments' rules (:mod:`earlyprune.core.validation`)
    RULES = {
        "model": MODEL,
        "optimizer": rule(InstanceOf(torch.optim.Optimizer, "a torch.optim.Optimizer"), None),
        "ratio": rule(Interval(Real, 0, 1, closed="neither"), hint="the final weight sparsity"),
        "epochs": rule(Interval(Integral, 1, None), hint="epochs of each training run"),
        "rounds": rule(Interval(Integral, 1, None), hint="pruning rounds"),
        "rewind_epoch": rule(Interval(Integral, 0, None), hint="0 rewinds to the initialisation"),
        "ignored_layers": IGNORED_LAYERS,
    }

    @checked(RULES)
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, ratio: float, *, epochs: int,
                 rounds: int, rewind_epoch: int = 1, scheduler: Any = None,
                 ignored_layers: Iterable[nn.Module] | None = None) -> None:
        if rewind_epoch >= epochs:   # a relation between two arguments: beyond one rule's reach
            raise InvalidParameterError(f"rewind_epoch ({rewind_epoch}) must be below epochs ({epochs}): a round "
                                        f"trains epochs rewind_epoch … epochs−1")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.ratio, self.epochs, self.rounds, self.rewind_epoch = float(ratio), epochs, rounds, rewind_epoch
        self.weights = MaskedWeights(model, ignored_layers=ignored_layers)
        self._rewind: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        if rewind_epoch == 0:
            self._rewind = self._snapshot()

    # -- the schedule -------------------------------------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        """``E + R·(E − K)``: every epoch LTR trains."""
        return self.epochs + self.rounds * (self.epochs - self.rewind_epoch)

    def locate(self, index: int) -> RoundEpoch:
        """The round and in-round epoch of global epoch ``index``."""
        if not rule(Interval(Integral, 0, self.total_epochs, closed="left")).accepts(index):
            raise InvalidParameterError(f"epoch must be in 0 … {self.total_epochs - 1}, got {index!r}")
        if index < self.epochs:
            return RoundEpoch(index, 0, index)
        span = self.epochs - self.rewind_epoch
        r, offset = divmod(index - self.epochs, span)
        return RoundEpoch(index, r + 1, self.rewind_epoch + offset)

    def schedule(self, start: int = 0) -> Iterator[int]:
        """Global epochs ``start … total_epochs − 1``."""
        return iter(range(start, self.total_epochs))

    def sparsity(self, round_: int) -> float:
        """Weight sparsity after the pruning of round ``round_``: ``1 − (1 − ρ)^{r/R}``."""
        return 1.0 - (1.0 - self.ratio) ** (round_ / self.rounds)

    # -- the two calls ------------------------------------------------------------------------------------------
    def epoch_start(self, index: int) -> bool:
        """Before global epoch ``index``: at the first epoch of rounds 1 … R, prune and rewind. True when it did."""
        where = self.locate(index)
        if where.round == 0 or where.epoch != self.rewind_epoch:
            return False
        if self._rewind is None:
            raise UsageError("no rewind point: epoch_end() was not called after the rewind epoch of round 0")
        amount = self.sparsity(where.round)
        scores = {t.name: t.value.detach().abs() for t in self.weights}
        keep = select_weights(self.weights, scores, amount, min_weights=1).keep
        self._restore(self._rewind)
        pruned = self.weights.apply(keep, self.optimizer)
        self.history.append({"round": where.round, "epoch": index, "sparsity": self.weights.sparsity(),
                             "pruned": pruned})
        log.info("LTR round %d/%d: %d weights pruned (sparsity %.2f%%), rewound to epoch %d", where.round,
                 self.rounds, pruned, 100 * self.weights.sparsity(), self.rewind_epoch)
        return True

    def epoch_end(self, index: int) -> None:
        """After global epoch ``index``: keep the rewind point when round 0 reaches it."""
        where = self.locate(index)
        if where.round == 0 and where.epoch + 1 == self.rewind_epoch:
            self._rewind = self._snapshot()

    # -- rewind point -------------------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        """Model (plain names, parameters and buffers), optimizer and scheduler state, copied."""
        model = {name: tensor.detach().clone() for name, tensor in plain_tensors(self.model)}
        return {"model": model,
                "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
                "scheduler": copy.deepcopy(self.scheduler.state_dict()) if self.scheduler is not None else None}

    def _restore(self, snap: dict[str, Any]) -> None:
        live = dict(plain_tensors(self.model))
        missing = sorted(set(live) ^ set(snap["model"]))
        if missing:
            raise UsageError(f"the model changed since the rewind point (e.g. channels were removed): {missing[:3]}")
        with torch.no_grad():
            for name, tensor in live.items():
                tensor.copy_(snap["model"][name])
        if self.optimizer is not None and snap["optimizer"] is not None:
            self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        if self.scheduler is not None and snap["scheduler"] is not None:
            self.scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))

    # -- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The rewind point and the rounds done (the masks live in the model)."""
        return {"rewind": self._rewind, "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rewind = state["rewind"]
        self.history = [dict(h) for h in state["history"]]

    def __repr__(self) -> str:
        return (f"LotteryTicketRewinding(ratio={self.ratio}, epochs={self.epochs}, rounds={self.rounds}, "
                f"rewind_epoch={self.rewind_epoch})")


__all__ = ["LotteryTicketRewinding", "RoundEpoch"]
