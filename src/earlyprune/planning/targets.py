"""One entry point that plans any target: what ``ratio`` counts decides who plans.

``"channels"``, ``"flops"`` and ``"params"`` are counted exactly and planned by one global ranking
(:func:`earlyprune.planning.selection.select`); ``"latency"`` — the measured training-step time — is predicted by a
:class:`~earlyprune.speed.steptime.StepTimePredictor` and planned by the greedy knapsack of
:mod:`earlyprune.planning.timebudget`. The pruner, :func:`~earlyprune.prune` and the signals plan through here.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ..core.validation import AMOUNT, InvalidParameterError
from ..graph.groups import ChannelGroups
from ..speed.steptime import StepTimePredictor
from .selection import Plan, ranked_units
from .selection import select as select_counted
from .spec import MAX_GROUP_RATIO, TargetSpec
from .timebudget import select_by_time


def select(groups: ChannelGroups, scores: Mapping[str, torch.Tensor], amount: float, *,
           target: str = "channels", min_channels: int = 1, round_to: int = 1,
           max_group_ratio: float = MAX_GROUP_RATIO, predictor: StepTimePredictor | None = None,
           clip: bool = False) -> Plan:
    """Choose the channels to remove so that ``amount`` of the original model's ``target`` quantity is gone.

    Arguments as :func:`earlyprune.planning.selection.select`, plus ``target="latency"`` with ``predictor``: the step-time
    model (:func:`~earlyprune.speed.steptime.measure_step_time`); the plan's ``seconds`` is its predicted step. A time
    budget the constraints cannot meet is pruned as far as they allow, with a warning (it is predicted, not counted).
    """
    AMOUNT.check("ratio", amount)
    spec = TargetSpec(target=target, min_channels=min_channels, round_to=round_to, max_group_ratio=max_group_ratio)
    return plan(groups, scores, amount, spec, predictor=predictor, clip=clip)


def plan(groups: ChannelGroups, scores: Mapping[str, torch.Tensor], amount: float, spec: TargetSpec, *,
         predictor: StepTimePredictor | None = None, clip: bool = False) -> Plan:
    """:func:`select` for a validated ``spec``: the plan removing ``amount`` of ``spec.target``."""
    if spec.target != "latency":
        return select_counted(groups, scores, amount, spec, clip=clip)
    return select_many(groups, scores, [amount], spec, predictor=predictor, clip=clip)[0]


def select_many(groups: ChannelGroups, scores: Mapping[str, torch.Tensor], amounts: Iterable[float],
                spec: TargetSpec, *, predictor: StepTimePredictor | None = None, clip: bool = False) -> list[Plan]:
    """One plan per amount (the time target plans them all in one greedy pass); ``clip`` as
    :func:`earlyprune.planning.selection.select`."""
    amounts = list(amounts)
    for amount in amounts:
        AMOUNT.check("ratio", amount)
    if spec.target != "latency":
        return [select_counted(groups, scores, a, spec, clip=clip) for a in amounts]
    if predictor is None:
        raise InvalidParameterError("target='latency' needs the step-time predictor: pass predictor="
                                    "earlyprune.measure_step_time(groups, batch_size=...)")
    return select_by_time(groups, ranked_units(groups, scores), amounts, predictor, spec)
