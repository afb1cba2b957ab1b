"""``epi`` — PaT's Early Pruning Indicator policy (§3.3, Eq. 4–6, Algorithm 2)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar, Sequence

from ..core.validation import Interval, InvalidParameterError, Rule, checked, rule
from ..signals.measures import early_pruning_indicator
from .base import POLICIES, EpochReport, SignalPolicy, optional_int, parse_options

#: Algorithm 2 compares EPI_t with the previous 5 values
LOOKBACK = 5


def epi_trigger(epi: float | None, previous: Sequence[float], tau: float, lookback: int = LOOKBACK) -> bool:
    """PaT Algorithm 2, line 9: ``EPI_t ≥ τ`` and ``EPI_t ≥ EPI_{t−j}`` for ``j = 1..lookback`` (over the
    values that exist; ``previous`` in epoch order, newest last). False when ``EPI_t`` is undefined."""
    if epi is None:
        return False
    return epi >= tau and all(epi >= e for e in list(previous)[-lookback:])


@POLICIES.register("epi")
class EPI(SignalPolicy):
    """Prune once the sub-network the criterion would select has stopped changing (PaT Algorithm 2).

    At the end of every dense epoch ``t`` the pruner gives ``N_t``: kept channels per group of the global top-k
    at the run's ratio, from the epoch-averaged scores. With Ψ the structure similarity (Eq. 4–5),

        EPI_t = (1/r) Σ_{j=1..r} Ψ(N_t, N_{t−j})                                   (Eq. 6)

    and the next epoch prunes when ``EPI_t ≥ τ`` and ``EPI_t ≥ EPI_{t−j}`` for ``j = 1..5`` (Algorithm 2,
    line 9), or at the cap. (With a fixed τ the look-back holds by itself at the first crossing of τ, since
    every earlier value was below τ; it binds when the rule is armed late — a run resumed with a higher τ.)

    Early epochs: the window is truncated to the structures that exist (``EPI_t`` uses ``min(r, t)`` of them;
    none at ``t = 0``) and the look-back compares with the EPI values that exist. A strict reading (no EPI before
    ``t = r``, no trigger before five EPI values) could not prune before epoch ``r + 6``, yet PaT reports EPI
    prune epochs of 5 (Tables 4–5).

    Args:
        tau: the stability threshold τ. None (default): PaT's universal values, tuned on ResNet-50 and reused
            unchanged on ResNet-34, MobileNet-V1 and SSD — 0.983 for magnitude criteria, 0.944 for gradient
            criteria (by the criterion's ``family``).
        r: the look-back of Eq. 6. PaT does not state it for classification; it used r = 50 for its 800-epoch
            detection run (1/16 of training). The default r = 5 is that share of the 90-epoch classification
            recipe (≈ 5.6) and equals Algorithm 2's 5-epoch look-back; on short runs a smaller r reacts faster.
        cap: the latest pruning epoch (see :class:`~earlyprune.policies.SignalPolicy`); default 30.
        min_steps: optimizer steps before the rule may fire (:class:`~earlyprune.policies.SignalPolicy`; 1,000).

    ``N_t`` is PaT's: the unconstrained global top-k at the run's ratio — ``min_channels``, ``round_to`` and
    ``max_group_ratio`` shape the removal, not the signal (with them a structure pinned at every group's floor
    cannot change, and EPI reads 1.0 from the first epoch).

    Spec: ``epi`` or ``epi:tau=0.95,r=3,cap=20,min_steps=500`` (``cap=none`` disables the cap).

    Example:
        >>> from earlyprune.policies import POLICIES
        >>> POLICIES.build("epi:cap=10")
        EPI(tau=auto, r=5, cap=10, min_steps=1000)
    """

    needs_scores = True
    needs_signals = frozenset({"structure"})
    #: PaT's universal thresholds (§4.1), by criterion family
    TAU: ClassVar[dict[str, float]] = {"magnitude": 0.983, "gradient": 0.944}
    LOOKBACK: ClassVar[int] = LOOKBACK
    DEFAULT_R: ClassVar[int] = 5

    RULES: ClassVar[dict[str, Rule]] = {
        **SignalPolicy.RULES,
        "tau": rule(Interval(Real, 0, 1, closed="right"), None, hint="EPI ranges from 0 to 1; None: PaT's value"),
        "r": rule(Interval(Integral, 0, None, closed="neither"), hint="epochs to look back"),
    }

    @checked(RULES)
    def __init__(self, tau: float | None = None, r: int = DEFAULT_R,
                 cap: int | None = SignalPolicy.DEFAULT_CAP,
                 min_steps: int = SignalPolicy.DEFAULT_MIN_STEPS) -> None:
        super().__init__(cap, min_steps)
        self.tau = None if tau is None else float(tau)
        self.r = r
        self._structures: list[list[int]] = []   # the last r structure vectors N_{t−r} … N_{t−1}
        self._epis: list[float] = []             # the last 5 EPI values

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "EPI":
        options = parse_options("epi", arg, {"tau": float, "r": int, "cap": optional_int,
                                                    "min_steps": int})
        return cls(**{**kwargs, **options})

    def threshold(self, family: str) -> float:
        """τ for a criterion family (the given ``tau``, else PaT's universal value)."""
        if self.tau is not None:
            return self.tau
        if family not in self.TAU:
            raise InvalidParameterError(f"epi has no default τ for criterion family {family!r} (PaT gives "
                                        f"{self.TAU}); pass epi:tau=…")
        return self.TAU[family]

    def validate(self, groups: Any, criterion: Any) -> None:
        self.threshold(getattr(criterion, "family", "magnitude"))

    def _advance(self, report: EpochReport) -> tuple[float | None, bool, dict[str, Any]]:
        n_t = report.structure
        if n_t is None:
            raise InvalidParameterError("epi needs the sub-network structure N_t in the epoch report (EarlyPruner "
                                        "computes it from the epoch-averaged criterion scores)")
        n_t = [int(n) for n in n_t]
        past = self._structures[-self.r:]
        epi = early_pruning_indicator(past + [n_t], min(self.r, len(past))) if past else None
        tau = self.threshold(report.criterion_family)
        fired = epi_trigger(epi, self._epis, tau, self.LOOKBACK)
        epis = (self._epis + ([epi] if epi is not None else []))[-self.LOOKBACK:]
        return epi, fired, {"structures": (past + [n_t])[-self.r:], "epis": epis}

    def _own_state(self) -> dict[str, Any]:
        return {"structures": [list(s) for s in self._structures], "epis": list(self._epis)}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        self._structures = [[int(n) for n in s] for s in state["structures"]]
        self._epis = [float(e) for e in state["epis"]]

    def __repr__(self) -> str:
        tau = "auto" if self.tau is None else f"{self.tau:g}"
        return f"EPI(tau={tau}, r={self.r}, cap={self.cap}, min_steps={self.min_steps})"
