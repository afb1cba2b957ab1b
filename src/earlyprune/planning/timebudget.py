"""The time budget in one place: selection under a step-time budget (``target="latency"``, a HALP-style greedy
knapsack), the largest ratio the limits allow a run, and the step-time ratio that makes a whole run fit a budget.

HALP (Shen et al., NeurIPS 2022) keeps the channels that maximise the summed importance subject to a latency
budget, with each channel's cost read from a per-layer latency table. Here, with ``T̂`` the step-time predictor of
:mod:`earlyprune.speed.steptime` and ``r`` the channels removed per group,

    maximise  Σ_g Σ_{n kept in g} S_{g,n}    subject to   T̂(r) ≤ (1 − α)·T̂(0)

solved greedily: every group offers its next move — its lowest-scored channels down to the next allowed width
(a multiple of ``round_to``, at least its floor) — priced by the **importance lost per second saved**

    ρ_g = Σ_{n ∈ move} S_{g,n} / (T̂(r) − T̂(r + move_g)),

and the cheapest move is taken until the predicted step fits the budget. This is the density-greedy solution of
the knapsack (exact for its continuous relaxation when a group's time is linear in its width); it needs no time
discretisation, unlike HALP's dynamic programme, and re-prices only the groups that share a layer with the one
that moved, because a layer's time depends on both its input and its output width. The budgets of several
ratios come out of one greedy pass (the plans are nested), which is how the EPI structure vectors at 10 ratios are
computed. A move whose widths save no predicted time (a slower kernel) is merged with the next one, up to
``LOOKAHEAD`` moves, and skipped if still no faster.

:func:`reachable_ratio` / :func:`fit_ratio` say how far the limits let a run go before its first removal (what
``EarlyPruner.retarget`` clips to); :func:`budget_ratio` / :func:`budget_fraction` turn ``--time-budget B`` into the
step-time ratio to remove once the policy has said when pruning starts.
"""

from __future__ import annotations

import heapq
import warnings
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..core.errors import InfeasibleTargetError
from ..core.validation import InstanceOf, InvalidParameterError, rule
from ..graph.groups import ChannelGroups
from ..speed.steptime import StepTimePredictor
from .selection import Plan, check_reachable, group_limits, plan_for, reachable
from .spec import UNLIMITED, TargetSpec

#: ``predictor=`` of the time target
PREDICTOR = rule(InstanceOf(StepTimePredictor, "a StepTimePredictor"),
                 hint="earlyprune.measure_step_time(groups, batch_size=...)")
#: moves merged at most when a narrower width is predicted no faster
LOOKAHEAD = 4


def check_predictor(groups: ChannelGroups, predictor: StepTimePredictor) -> np.ndarray:
    """Channels already removed from each group relative to the predictor's original widths (validated)."""
    PREDICTOR.check("predictor", predictor)
    if predictor.names != groups.names:
        raise InvalidParameterError("the step-time predictor was measured on another model (its channel groups "
                                    "differ); measure it on this model before pruning")
    removed = np.array(predictor.widths, dtype=np.int64) - np.array(groups.widths(), dtype=np.int64)
    if (removed < 0).any():
        raise InvalidParameterError("the model has groups wider than when the step-time predictor measured it: "
                                    "measure it on this model before pruning")
    return removed


def select_by_time(groups: ChannelGroups, unit_orders: list[tuple[np.ndarray, np.ndarray]],
                   amounts: Sequence[float], predictor: StepTimePredictor, spec: TargetSpec | None = None,
                   **limits: object) -> list[Plan]:
    """One plan per ``amount`` (fraction of the predicted dense step to remove), in the order given.

    ``unit_orders`` are :func:`~earlyprune.planning.selection.ranked_units` of the scores; the floors and granularity are
    :func:`~earlyprune.planning.selection.group_limits`' under ``spec`` (or its fields as keywords; no group limit by
    default).
    """
    spec = TargetSpec.of(spec, limits, UNLIMITED)
    before = check_predictor(groups, predictor)
    widths = np.array(groups.widths(), dtype=np.int64)
    step, floor = group_limits(groups, spec)
    unit = np.array([g.unit_size for g in groups], dtype=np.int64)
    # importance of removing the first k channels of a group (its lowest-scored units), k in whole units
    lost = [np.concatenate([[0.0], np.cumsum(scores[order]) * u]) for (scores, order), u in zip(unit_orders, unit)]

    def next_width(i: int, width: int) -> int | None:
        if widths[i] < step[i]:                 # narrower than the granularity: left alone (as select does)
            return None
        target = ((width - 1) // step[i]) * step[i]
        return target if target >= floor[i] and target < width else None

    removed = before.copy()                 # relative to the predictor's original widths
    version = np.zeros(len(widths), dtype=np.int64)
    heap: list[tuple[float, int, int, int, float]] = []

    def offer(i: int) -> None:
        version[i] += 1
        width = int(widths[i] - (removed[i] - before[i]))
        gone_now = removed[i] - before[i]
        target = width
        for _ in range(LOOKAHEAD):
            nxt = next_width(i, target)
            if nxt is None:
                return
            target = nxt
            saved = predictor.saving(removed, i, width - target)
            if saved > 0:
                cost = lost[i][(gone_now + width - target) // unit[i]] - lost[i][gone_now // unit[i]]
                heapq.heappush(heap, (float(cost) / saved, i, int(version[i]), width - target, saved))
                return

    for i in range(len(widths)):
        offer(i)
    reference = predictor.predict()
    now = predictor.predict(removed)
    order = sorted(range(len(amounts)), key=lambda k: amounts[k])
    results: dict[int, np.ndarray] = {}
    for k in order:
        budget = (1.0 - float(amounts[k])) * reference
        while now > budget + 1e-12 and heap:
            _, i, ver, more, saved = heapq.heappop(heap)
            if ver != version[i]:
                continue
            removed[i] += more
            now -= saved
            for j in predictor.neighbours[i]:
                offer(j)
        if now > budget + 1e-12:
            warnings.warn(f"cannot remove {amounts[k]:.1%} of the predicted step time with min_channels="
                          f"{spec.min_channels}, round_to={spec.round_to}, max_group_ratio={spec.max_group_ratio}: "
                          f"pruning as far as the constraints allow ({1 - now / reference:.1%})", stacklevel=3)
        results[k] = removed - before
    return [replace(plan_for(groups, unit_orders, results[k]), seconds=predictor.predict(results[k] + before))
            for k in range(len(amounts))]


def reachable_time(groups: ChannelGroups, predictor: StepTimePredictor, spec: TargetSpec | None = None,
                   **limits: object) -> float:
    """The largest fraction of the predicted dense step ``T̂(0)`` that :func:`select_by_time` can remove under
    ``spec``'s limits (or its fields as keywords; no group limit by default) — every group down to its floor, except the moves the
    greedy skips because they save no predicted time. The time target's analogue of
    :func:`earlyprune.planning.selection.reachable`, so that a time budget can be clipped (and said to be missed) before the
    pruning epoch instead of warned about during it."""
    spec = TargetSpec.of(spec, limits, UNLIMITED)
    check_predictor(groups, predictor)
    orders = []
    for g in groups:
        units = g.width // g.unit_size
        orders.append((np.zeros(units), np.arange(units)))
    with warnings.catch_warnings():   # asking for everything is expected to fall short: that is the answer
        warnings.simplefilter("ignore")
        plan = select_by_time(groups, orders, [1.0], predictor, spec)[0]
    reference = predictor.predict()
    return max(0.0, 1.0 - float(plan.seconds) / reference) if reference > 0 else 0.0


def reachable_ratio(groups: ChannelGroups, spec: TargetSpec, predictor: StepTimePredictor | None = None
                    ) -> float | None:
    """The largest ratio ``spec``'s limits allow before the first removal: counted for a count target
    (:func:`~earlyprune.planning.selection.reachable`), predicted for the time target once its ``predictor`` is
    measured (:func:`reachable_time`); None when unknown (the time target before its predictor)."""
    if spec.target != "latency":
        return reachable(groups, spec)
    return reachable_time(groups, predictor, spec) if predictor is not None else None


def fit_ratio(groups: ChannelGroups, spec: TargetSpec, ratio: float, predictor: StepTimePredictor | None = None, *,
              clip: bool = False, check: bool = True) -> float:
    """``ratio`` as a run can take it: with ``clip``, lowered to :func:`reachable_ratio` when that is known; else
    a count target the limits cannot reach raises :class:`~earlyprune.core.errors.InfeasibleTargetError` (with
    ``check``) — the time target is predicted, not counted: the selection prunes as far as the limits allow and
    warns."""
    most = reachable_ratio(groups, spec, predictor)
    if clip and most is not None and most > 0:
        return min(ratio, most)
    if check and most is not None and spec.target != "latency":
        check_reachable(groups, ratio, spec)
    return ratio


def budget_ratio(budget: float, epochs: int, dense_epochs: int, spent: float | None = None,
                 extra: float = 0.0) -> float:
    """Fraction of the step time to remove so that the whole run takes ``budget`` of the dense run's time.

    With ``k`` dense epochs before the pruning epoch, which cost ``s`` dense epochs' time (``spent``; default ``k``
    — more when the run measured something: speed settings, the step-time predictor), the pruning epoch counted as
    dense, ``x`` (``extra``) dense epochs' time still to be spent outside the training loop (timing the per-step
    gain) and ``E`` epochs in all, each of the ``E − k − 1`` sparse epochs may take ``(B·E − s − 1 − x) /
    (E − k − 1)`` of a dense epoch; the ratio is one minus that. Raises ValueError when no ratio in (0, 1) can
    meet the budget (an :class:`~earlyprune.core.errors.InfeasibleTargetError`).
    """
    spent = float(dense_epochs if spent is None else spent)
    sparse = epochs - dense_epochs - 1
    allowed = budget * epochs - spent - 1 - extra
    if sparse <= 0 or allowed <= 0:
        cost = (f" (with what the run measured so far, {spent + 1 + extra:.1f} dense epochs' time)"
                if spent + extra > dense_epochs + 0.05 else "")
        raise InfeasibleTargetError(f"a time budget of {budget:.0%} cannot be met: {dense_epochs + 1} of the {epochs} "
                                    f"epochs run dense (or while pruning) already{cost}")
    return min(max(1.0 - allowed / sparse, 0.0), 0.99)


def budget_fraction(epochs: int, dense_epochs: int, ratio: float, spent: float | None = None,
                    extra: float = 0.0) -> float:
    """The inverse of :func:`budget_ratio`: the fraction of the dense run's time a run takes that removes ``ratio``
    of the step time after ``dense_epochs`` dense epochs (which cost ``spent`` dense epochs' time) and the pruning
    epoch, with ``extra`` to spend outside the loop: ``(s + 1 + x + (E − k − 1)(1 − r)) / E`` (at least about 1
    when fewer than ``k + 2`` epochs are planned)."""
    spent = float(dense_epochs if spent is None else spent)
    sparse = max(epochs - dense_epochs - 1, 0)
    return (spent + min(1, epochs - dense_epochs) + extra + sparse * (1.0 - ratio)) / epochs
