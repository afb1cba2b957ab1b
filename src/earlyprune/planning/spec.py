"""The target of a pruning run as one value, validated once: what ``ratio`` counts and the limits every plan keeps.

PaT Eq. 1 asks that the removed fraction ``|P| / |F|`` reach ``α`` (``ratio``) of the original ``target`` quantity;
the selection meets it under three limits — ``min_channels`` and ``1 − max_group_ratio`` of its original width kept
by every group, kept widths rounded to a multiple of ``round_to``. These travel together from the entry points
(:func:`~earlyprune.prune`, :class:`~earlyprune.EarlyPruner`, :func:`~earlyprune.select`) through the levels, the
selection, the time budget and ``round_to="auto"``; a :class:`TargetSpec` carries them, checked by the declared
rules of :mod:`earlyprune.core.validation` when it is built (and when a field is replaced), never again downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Mapping

from ..core.validation import (
    GROUP_RATIO,
    MIN_CHANNELS,
    MULTIPLE,
    RATIO,
    TARGET,
    InstanceOf,
    InvalidParameterError,
    Rule,
    check_args,
    rule,
)

#: default per-group limit on the fraction of a group's original channels that may be removed
#: (``benchmarks/README.md``, "Collapsed layers and the group limit")
MAX_GROUP_RATIO = 0.8


@dataclass(frozen=True)
class TargetSpec:
    """What a plan must remove and the limits it keeps (see the module docstring).

    Args:
        ratio: the run's final fraction of ``target`` to remove, in (0, 1) — what ``round_to="auto"`` plans and the
            step-time predictor is refined at; None for a spec that only plans given amounts.
        target: ``"channels"``, ``"flops"``, ``"params"`` or ``"latency"``.
        min_channels: channels every group keeps at least.
        round_to: kept widths are rounded to a multiple of this (an integer: ``"auto"`` is measured by
            :class:`~earlyprune.planning.levels.ChannelLevel`, which plans with 1 until it has).
        max_group_ratio: no group loses more than this fraction of its original channels (1.0: no limit).
    """

    ratio: float | None = None
    target: str = "channels"
    min_channels: int = 1
    round_to: int = 1
    max_group_ratio: float = MAX_GROUP_RATIO

    #: the fields' rules (``ratio`` as every entry point checks a run's ratio, None allowed)
    RULES: ClassVar[dict[str, Rule]] = {
        "ratio": rule(*RATIO.constraints, None, hint=RATIO.hint),
        "target": TARGET,
        "min_channels": MIN_CHANNELS,
        "round_to": MULTIPLE,
        "max_group_ratio": GROUP_RATIO,
    }

    def __post_init__(self) -> None:
        check_args(self.RULES, {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def of(cls, spec: "TargetSpec | None" = None, limits: Mapping[str, Any] | None = None,
           default: "TargetSpec | None" = None) -> "TargetSpec":
        """``spec`` itself, or one built from keyword ``limits`` over ``default`` (for the functions that also take
        the limits as keywords); both at once is refused."""
        if spec is not None:
            if limits:
                raise InvalidParameterError(f"pass the target either as spec= or as keywords, not both "
                                            f"({', '.join(limits)}): spec.but({', '.join(f'{k}=…' for k in limits)}) "
                                            f"changes a spec's fields")
            return SPEC.check("spec", spec)
        return replace(default, **limits) if default is not None else cls(**(limits or {}))

    def but(self, **changes: Any) -> "TargetSpec":
        """A copy with ``changes`` (validated)."""
        return replace(self, **changes) if changes else self

    def limits(self) -> str:
        """The limits as the error messages name them."""
        return (f"min_channels={self.min_channels}, round_to={self.round_to}, "
                f"max_group_ratio={self.max_group_ratio:g}")


#: ``spec=`` of the functions that take a target
SPEC = rule(InstanceOf(TargetSpec, "a TargetSpec"),
            hint="earlyprune.planning.spec.TargetSpec(ratio=..., target=..., min_channels=..., round_to=...)")

#: a spec without the per-group limit: what the signals' N_t, the time budget and ``round_to="auto"`` default to
UNLIMITED = TargetSpec(max_group_ratio=1.0)

__all__ = ["MAX_GROUP_RATIO", "SPEC", "TargetSpec", "UNLIMITED"]
