"""``earlycrop`` — EarlyCroP's pruning-time rule (§4.3, Eq. 10–11): prune when the weights stop moving away
from their initialisation."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

from ..core.validation import Interval, Options, Rule, checked, rule
from ..signals.measures import PRUNING_TIME_NORMS, pruning_time_score
from .base import POLICIES, EpochReport, SignalPolicy, optional_int, parse_options


@POLICIES.register("earlycrop")
class EarlyCroP(SignalPolicy):
    """Prune once training enters the lazy-kernel regime, detected from the weight change (EarlyCroP §4.3).

    With ``Δ_t = ‖θ_t − θ_0‖²`` (Eq. 10; θ_0: the parameters when the pruner was built, θ_t: after epoch t,
    counted from 1) the next epoch prunes when the pruning-time score is at most ``th`` (``1 − ρ`` by default,
    ρ being the run's ratio, EarlyCroP's target sparsity). The paper writes the score three ways (``norm``):

        (Δ_t − Δ_{t−1}) / ‖Θ_0‖²           Appendix B, Algorithm 1, line 6   ("algorithm1", the default)
        |Δ_t − Δ_{t−1}| / |Δ_1|            §4.3, Eq. 11                      ("eq11")
        |Δ_t − Δ_{t−1}| / |Δ_t|            end of §4.3                       ("current")

    On ResNet-18 (width 16) on a CIFAR-10 subset they fired never / after epoch 1 / after epoch 7 (issue 20's
    measurement; Eq. 11's score starts at 1 and falls slowly). The default is the authors' algorithm. None of
    them is the reference code's rule (‖θ_t − θ_1‖/‖θ_1‖, threshold fixed at epoch 2). Degenerate cases are
    guarded: Eq. 11's Δ_1 is the change of the first epoch that moved the weights — until one has, the score is
    undefined and the policy waits; a zero denominator or a non-finite Δ gives no score and leaves the state as
    it was; the cap and ``min_steps`` always apply.

    Args:
        th: the threshold; None (default) means ``1 − ratio`` — higher ratios wait longer, as the paper intends.
        cap: the latest pruning epoch (EarlyCroP's "maximum dense training time m"); default 30.
        batches: prune within the first ``batches`` batches of the pruning epoch, each step scoring the batches
            since the previous one — EarlyCroP's Algorithm 1 prunes its iterations at one point of training
            (its reference code scores 5 batches per iteration). None (default): the steps spread over the whole
            pruning epoch, as PaT's Algorithm 1. Data-driven criteria need ``steps ≤ batches``.

        norm: the score's normalisation, one of ``"algorithm1"``, ``"eq11"``, ``"current"`` (above).
        min_steps: optimizer steps before the rule may fire (:class:`~earlyprune.policies.SignalPolicy`).

    Spec: ``earlycrop`` or ``earlycrop:th=0.3,cap=20,batches=8,norm=eq11``.

    Example:
        >>> from earlyprune.policies import POLICIES
        >>> POLICIES.build("earlycrop:norm=eq11,cap=10")
        EarlyCroP(th=1-ratio, cap=10, norm=eq11, min_steps=1000)
    """

    needs_signals = frozenset({"weight_change"})

    RULES: ClassVar[dict[str, Rule]] = {
        **SignalPolicy.RULES,
        "th": rule(Interval(Real, 0, None, closed="neither"), None,
                   hint="the score is expected in [0, 1]; None: 1 − ratio"),
        "batches": rule(Interval(Integral, 1, None), None, hint="batches the pruning steps spread over"),
        "norm": rule(Options(PRUNING_TIME_NORMS), hint="the pruning-time score's normalisation"),
    }

    @checked(RULES)
    def __init__(self, th: float | None = None, cap: int | None = SignalPolicy.DEFAULT_CAP,
                 batches: int | None = None, min_steps: int = SignalPolicy.DEFAULT_MIN_STEPS,
                 norm: str = "algorithm1") -> None:
        super().__init__(cap, min_steps)
        self.norm = norm
        self.th = None if th is None else float(th)
        self.pruning_batches = batches
        self._prev = 0.0                 # Δ_{t−1}; Δ_0 = ‖θ_0 − θ_0‖² = 0
        self._ref: float | None = None   # Δ_1

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "EarlyCroP":
        options = parse_options("earlycrop", arg, {"th": float, "cap": optional_int, "batches": int,
                                                          "min_steps": int, "norm": str})
        return cls(**{**kwargs, **options})

    def threshold(self, ratio: float) -> float:
        return self.th if self.th is not None else 1.0 - ratio

    def _advance(self, report: EpochReport) -> tuple[float | None, bool, dict[str, Any]]:
        delta = report.weight_change
        unchanged = {"prev": self._prev, "ref": self._ref}
        if delta is None or not math.isfinite(delta):
            return None, False, unchanged
        ref = self._ref if self._ref is not None else (delta if delta > 0 else None)
        score = pruning_time_score(self.norm, delta, self._prev, ref, report.initial_norm)
        th = self.threshold(report.ratio)   # Algorithm 1: "diff ≤ th"; §4.3: "smaller than th"
        fired = score is not None and (score <= th if self.norm == "algorithm1" else score < th)
        return score, fired, {"prev": float(delta), "ref": ref}

    def _own_state(self) -> dict[str, Any]:
        return {"prev": self._prev, "ref": self._ref}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        self._prev = float(state["prev"])
        self._ref = None if state["ref"] is None else float(state["ref"])

    def __repr__(self) -> str:
        th = "1-ratio" if self.th is None else f"{self.th:g}"
        batches = f", batches={self.pruning_batches}" if self.pruning_batches is not None else ""
        return f"EarlyCroP(th={th}, cap={self.cap}{batches}, norm={self.norm}, min_steps={self.min_steps})"
