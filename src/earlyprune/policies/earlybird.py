"""``earlybird`` — Early-Bird tickets: prune when the BatchNorm-γ mask stops changing."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.validation import Interval, InvalidParameterError, Rule, checked, rule
from ..signals.measures import mask_distance
from .base import POLICIES, EpochReport, SignalPolicy, optional_int, parse_options


@POLICIES.register("earlybird")
class EarlyBird(SignalPolicy):
    """Early-Bird's rule: the ticket is drawn when the newest mask is within ε of each of the older ones.

    Every dense epoch the pruner gives the mask ``|γ| > q`` over all BatchNorm layers, ``q`` being **one
    global** quantile at the run's ratio (not per layer). The policy keeps the last ``queue`` masks (5) and the
    next epoch prunes when the normalised Hamming distance (fraction of differing entries) of the newest mask to
    every one of the ``queue − 1`` older ones is below ``eps`` (0.1), or at the cap. The signal is the largest of
    those distances. Early-Bird trains with an L1 penalty on γ (network slimming, s = 1e-4); add it to your loss
    to reproduce it exactly — the rule itself does not need it. The pruning itself uses the run's criterion.

    Args:
        eps: the distance threshold ε, in (0, 1].
        queue: masks compared (the newest and ``queue − 1`` older ones), ≥ 2.
        cap: the latest pruning epoch; default 30.
        min_steps: optimizer steps before the rule may fire (:class:`~earlyprune.policies.SignalPolicy`).

    Spec: ``earlybird`` or ``earlybird:eps=0.05,queue=5,cap=20``.

    Example:
        >>> from earlyprune.policies import POLICIES
        >>> POLICIES.build("earlybird:eps=0.05,cap=20")
        EarlyBird(eps=0.05, queue=5, cap=20, min_steps=1000)
    """

    needs_signals = frozenset({"bn_mask"})

    RULES: ClassVar[dict[str, Rule]] = {
        **SignalPolicy.RULES,
        "eps": rule(Interval(Real, 0, 1, closed="right"), hint="a fraction of differing mask entries"),
        "queue": rule(Interval(Integral, 2, None), hint="masks compared"),
    }

    @checked(RULES)
    def __init__(self, eps: float = 0.1, queue: int = 5, cap: int | None = SignalPolicy.DEFAULT_CAP,
                 min_steps: int = SignalPolicy.DEFAULT_MIN_STEPS) -> None:
        super().__init__(cap, min_steps)
        self.eps, self.queue = float(eps), queue
        self._masks: list[torch.Tensor] = []   # the last queue − 1 masks

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "EarlyBird":
        options = parse_options("earlybird", arg, {"eps": float, "queue": int, "cap": optional_int,
                                                          "min_steps": int})
        return cls(**{**kwargs, **options})

    def validate(self, groups: Any, criterion: Any) -> None:
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine for m in groups.model.modules()):
            raise InvalidParameterError("earlybird draws its masks from BatchNorm scales γ, but the model has no "
                                        "affine BatchNorm layer; choose another policy (epi, earlycrop, epoch:K)")

    def _advance(self, report: EpochReport) -> tuple[float | None, bool, dict[str, Any]]:
        mask = report.bn_mask
        if mask is None:
            return None, False, {"masks": list(self._masks)}
        mask = mask.detach().flatten().bool().cpu()
        older = [m for m in self._masks if m.numel() == mask.numel()]   # a resized model starts a new queue
        distance = max(mask_distance(mask, m) for m in older) if older else None
        fired = distance is not None and len(older) == self.queue - 1 and distance < self.eps
        return distance, fired, {"masks": (older + [mask])[-(self.queue - 1):]}

    def _own_state(self) -> dict[str, Any]:
        return {"masks": [m.clone() for m in self._masks]}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        self._masks = [torch.as_tensor(m).clone().bool() for m in state["masks"]]

    def __repr__(self) -> str:
        return f"EarlyBird(eps={self.eps:g}, queue={self.queue}, cap={self.cap}, min_steps={self.min_steps})"
