"""``earlycrop`` — EarlyCroP's pruning-time rule (§4.3, Eq. 10–11): prune when the weights stop moving away
from their initialisation."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

from ..signals.measures import weight_change_score
from ..validation import Interval, Rule, checked, rule
from .base import POLICIES, EpochReport, SignalPolicy, optional_int, parse_options


@POLICIES.register("earlycrop")
class EarlyCroP(SignalPolicy):
    """Prune once training enters the lazy-kernel regime, detected from the weight change (EarlyCroP §4.3).

    With ``Δ_t = ‖θ_t − θ_0‖²`` (Eq. 10; θ_0: the parameters when the pruner was built, θ_t: after epoch t,
    counted from 1) the next epoch prunes when

        |Δ_t − Δ_{t−1}| / |Δ_1| < th,      th = 1 − ρ by default                    (Eq. 11)

    ρ being the run's ratio (EarlyCroP's target sparsity). This is the paper's rule, not its reference code's
    (which measures ‖θ_t − θ_1‖/‖θ_1‖ and fixes the threshold at epoch 2). Degenerate cases are guarded: Δ_1 is
    the change of the first epoch that moved the weights (a first epoch with frozen weights or a zero learning
    rate would divide by zero) — until one has, the score is undefined and the policy waits; a non-finite Δ
    gives no score and leaves the state as it was; the cap always applies. At ``t = 1`` the score is 1 by
    construction, so the rule cannot fire before epoch 2 ends for ``th ≤ 1``.

    Args:
        th: the threshold; None (default) means ``1 − ratio`` — higher ratios wait longer, as the paper intends.
        cap: the latest pruning epoch (EarlyCroP's "maximum dense training time m"); default 30.
        batches: prune within the first ``batches`` batches of the pruning epoch, each step scoring the batches
            since the previous one — EarlyCroP's Algorithm 1 prunes its iterations at one point of training
            (its reference code scores 5 batches per iteration). None (default): the steps spread over the whole
            pruning epoch, as PaT's Algorithm 1. Data-driven criteria need ``steps ≤ batches``.

    Spec: ``earlycrop`` or ``earlycrop:th=0.3,cap=20,batches=8``.
    """

    needs_signals = frozenset({"weight_change"})

    RULES: ClassVar[dict[str, Rule]] = {
        **SignalPolicy.RULES,
        "th": rule(Interval(Real, 0, None, closed="neither"), None,
                   hint="the score is expected in [0, 1]; None: 1 − ratio"),
        "batches": rule(Interval(Integral, 1, None), None, hint="batches the pruning steps spread over"),
    }

    @checked(RULES)
    def __init__(self, th: float | None = None, cap: int | None = SignalPolicy.DEFAULT_CAP,
                 batches: int | None = None) -> None:
        super().__init__(cap)
        self.th = None if th is None else float(th)
        self.pruning_batches = batches
        self._prev = 0.0                 # Δ_{t−1}; Δ_0 = ‖θ_0 − θ_0‖² = 0
        self._ref: float | None = None   # Δ_1

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "EarlyCroP":
        options = parse_options("earlycrop", arg, {"th": float, "cap": optional_int, "batches": int})
        return cls(**{**kwargs, **options})

    def threshold(self, ratio: float) -> float:
        return self.th if self.th is not None else 1.0 - ratio

    def _advance(self, report: EpochReport) -> tuple[float | None, bool, dict[str, Any]]:
        delta = report.weight_change
        unchanged = {"prev": self._prev, "ref": self._ref}
        if delta is None or not math.isfinite(delta):
            return None, False, unchanged
        ref = self._ref if self._ref is not None else (delta if delta > 0 else None)
        score = weight_change_score(delta, self._prev, ref)
        fired = score is not None and score < self.threshold(report.ratio)
        return score, fired, {"prev": float(delta), "ref": ref}

    def _own_state(self) -> dict[str, Any]:
        return {"prev": self._prev, "ref": self._ref}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        self._prev = float(state["prev"])
        self._ref = None if state["ref"] is None else float(state["ref"])

    def __repr__(self) -> str:
        th = "1-ratio" if self.th is None else f"{self.th:g}"
        batches = f", batches={self.pruning_batches}" if self.pruning_batches is not None else ""
        return f"EarlyCroP(th={th}, cap={self.cap}{batches})"
