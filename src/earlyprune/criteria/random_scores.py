"""Random scores — the Uniform / Random-S baseline."""

from __future__ import annotations

from numbers import Integral
from typing import Any, ClassVar

import torch

from ..core.batch import Batch
from ..core.validation import Interval, InvalidParameterError, Rule, checked, rule
from ..graph.groups import ChannelGroups
from .base import Criterion
from .registry import CRITERIA


@CRITERIA.register("random")
class Random(Criterion):
    """Seeded uniform scores ``U(0, 1)`` per channel: the global ranking then removes a uniformly random set of
    channels — 3SP's "Uniform" baseline (every channel equally likely, so each layer loses the same fraction in
    expectation) and EarlyCroP's Random-S. ``"random:SEED"`` sets the seed (default 0); each call draws anew
    from the criterion's own generator, so a run is reproducible and independent of the global RNG."""

    family = "magnitude"

    RULES: ClassVar[dict[str, Rule]] = {"seed": rule(Interval(Integral, None, None))}

    @checked(RULES)
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "Random":
        try:
            return cls(int(arg), **kwargs)
        except ValueError:
            raise InvalidParameterError(f"criterion '{cls.name}:SEED' needs an integer seed, got "
                                        f"'{cls.name}:{arg}'") from None

    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        return {g.name: torch.rand(g.width, generator=self._generator) for g in groups}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "generator" in state:
            self._generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
