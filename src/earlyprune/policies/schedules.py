"""Policies with a fixed answer: a pre-defined epoch, epoch 0, a seeded random epoch, or never."""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import torch

from ..core.validation import Interval, InvalidParameterError, Rule, checked, rule
from .base import POLICIES, Decision, EpochReport, Policy


@POLICIES.register("epoch")
class FixedEpoch(Policy):
    """``epoch:K`` — prune during epoch ``K`` (0-based; ``epoch:0`` prunes during the first epoch), then train
    the sparse model to the end. PaT's "pre-defined" baseline and the building block of the oracle grid."""

    RULES: ClassVar[dict[str, Rule]] = {"epoch": rule(Interval(Integral, 0, None), hint="epoch:K prunes in epoch K")}

    @checked(RULES)
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "FixedEpoch":
        try:
            return cls(int(arg), **kwargs)
        except ValueError:
            raise InvalidParameterError(f"policy 'epoch:K' needs a whole number K ≥ 0, got 'epoch:{arg}'") from None

    def start(self) -> bool:
        return self.epoch == 0

    def epoch_bounds(self) -> tuple[int | None, int | None]:
        return self.epoch, self.epoch

    def scheduled_epoch(self) -> int | None:
        return self.epoch

    def evaluate(self, report: EpochReport) -> Decision:
        if report.epoch + 1 == self.epoch:
            return Decision(True, "schedule", message=f"{self!r}: epoch {self.epoch} prunes")
        return Decision(False)

    def __repr__(self) -> str:
        return f"FixedEpoch({self.epoch})"


@POLICIES.register("init")
class Init(FixedEpoch):
    """``init`` — PaT's "Init" baseline: iterative pruning during epoch 0, i.e. from the initial weights (with
    the run's criterion; PaT uses a structural FORCE / iterative SNIP). Needs ``steps_per_epoch``."""

    automatic = True

    def __init__(self) -> None:
        super().__init__(0)

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "Init":
        raise InvalidParameterError(f"policy 'init' takes no ':' argument, got 'init:{arg}'")

    def __repr__(self) -> str:
        return "Init()"


@POLICIES.register("random")
class RandomEpoch(FixedEpoch):
    """``random:A-B`` — prune during an epoch drawn uniformly from ``[A, B]`` (both included); plain ``random`` is
    PaT's random baseline, ``random:0-30``. ``random:A-B,seed=S`` draws with its own generator; without a seed the draw
    uses torch's global generator at construction (so ``torch.manual_seed`` makes it reproducible). The drawn
    epoch is part of :meth:`state_dict`, so a resumed run prunes when the original would have."""

    RULES: ClassVar[dict[str, Rule]] = {
        "low": rule(Interval(Integral, 0, None), hint="random:A-B draws from epochs A to B"),
        "high": rule(Interval(Integral, 0, None), hint="random:A-B draws from epochs A to B"),
        "seed": rule(Interval(Integral, None, None), None),
    }

    @checked(RULES)
    def __init__(self, low: int = 0, high: int = 30, seed: int | None = None) -> None:
        if low > high:
            raise InvalidParameterError(f"random:A-B needs A ≤ B, got random:{low}-{high}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.low, self.high, self.seed = low, high, seed
        super().__init__(int(torch.randint(low, high + 1, (1,), generator=generator)))

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "RandomEpoch":
        span, _, rest = arg.partition(",")
        low, dash, high = span.partition("-")
        seed = kwargs.pop("seed", None)
        rest = rest.strip()
        try:
            if not dash:
                raise ValueError  # internal: caught below, refused as an InvalidParameterError
            if rest:
                key, eq, value = rest.partition("=")
                if key.strip() != "seed" or not eq:
                    raise ValueError  # internal: caught below, refused as an InvalidParameterError
                seed = int(value)
            return cls(int(low), int(high), seed=seed, **kwargs)
        except ValueError as exc:
            detail = f": {exc}" if str(exc) else ""
            raise InvalidParameterError(f"policy 'random' is written random:A-B or random:A-B,seed=S with whole "
                                        f"numbers 0 ≤ A ≤ B, got 'random:{arg}'{detail}") from None

    def epoch_bounds(self) -> tuple[int | None, int | None]:
        return self.low, self.high

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])

    def __repr__(self) -> str:
        seed = f", seed={self.seed}" if self.seed is not None else ""
        return f"RandomEpoch({self.low}-{self.high}{seed}: epoch {self.epoch})"


@POLICIES.register("never")
class Never(Policy):
    """``never`` — train dense to the end (the reference run; signals are still recorded)."""

    prunes = False

    def evaluate(self, report: EpochReport) -> Decision:
        return Decision(False)
