"""The time budget, the phase that turns ``--time-budget B`` into the ratio the pruner removes.

When the policy has said when pruning starts, :func:`fit_budget` counts what the dense epochs really took
(measurements included, :func:`~.summary.dense_epochs_spent`) and what timing the gain will take, asks
:func:`~.speed.budget_ratio` for the ratio that makes the whole run take ``B`` of a dense run's time, and retargets
the pruner — clipped to what its limits allow, with a warning when that misses the budget. At the end
:func:`budget_record` says what the run spent against the plan. The pruner-side pieces (``retarget``,
``reachable_ratio``) are the pruner's.
"""

from __future__ import annotations

from typing import Any

from ..core.distributed import broadcast_object
from ..core.timing import clock as timing_clock
from .config import TrainConfig
from .run import Run, removes_channels
from .speed import GAIN_ROUNDS, budget_fraction, budget_ratio
from .summary import dense_epochs_spent, run_fraction

#: a time budget whose ratio is at least this share of the reachable maximum leaves the selection no choice
FLOOR_SHARE = 0.95
#: the ratio of a time budget that cannot be met (the selection then stops where its constraints do)
MAX_BUDGET_RATIO = 0.95


def _gain_epochs(run: Run, ratio: float) -> float:
    """Dense epochs' time that timing the per-step gain after the pruning epoch will take: one warm-up and
    ``GAIN_ROUNDS`` steps each of the dense copy and of the pruned model (about ``1 − ratio`` of a dense step)."""
    if not removes_channels(run):
        return 0.0
    return (GAIN_ROUNDS + 1) * (2.0 - ratio) / max(len(run.train_loader), 1)


def _spent_before(run: Run, row: dict[str, Any] | None, dense_epochs: int) -> float | None:
    """Dense epochs' time the epochs before pruning took (``row``: the one just trained, not yet in the run's
    rows), at least one per dense epoch; None when pruning starts at epoch 0."""
    rows = run.rows + ([row] if row is not None else [])
    spent = dense_epochs_spent(rows, cpu=timing_clock(run.device) == "cpu") if dense_epochs else None
    # a measured cost decides the ratio: under torchrun every rank takes rank 0's, or the ranks would prune apart
    return broadcast_object(None if spent is None else max(spent, float(dense_epochs)))


def fit_budget(run: Run, row: dict[str, Any] | None = None) -> None:
    """--time-budget: once the policy said when pruning starts, the ratio that makes the whole run fit — counting
    what the epochs so far (``row``: the one just trained) really took, measurements included, and the gain's
    timing still to come."""
    cfg, pruner = run.cfg, run.pruner
    if cfg.time_budget is None or pruner.events:
        return
    dense_epochs = pruner.prune_epoch or 0
    spent = _spent_before(run, row, dense_epochs)
    stored = (run.profile or {}).get("time_budget") or {}
    same = stored.get("budget") == cfg.time_budget and stored.get("dense_epochs") == dense_epochs
    if same:   # --speed-profile: the costs the run that wrote it measured, so the ratio is the same
        spent = stored["spent_before"]
    try:
        first = budget_ratio(cfg.time_budget, cfg.epochs, dense_epochs, spent)
        extra = stored["gain_timing"] if same else _gain_epochs(run, first)
        ratio, met = budget_ratio(cfg.time_budget, cfg.epochs, dense_epochs, spent, extra), True
    except ValueError as exc:   # too late to fit: prune as far as the constraints allow, and say so
        ratio, met = MAX_BUDGET_RATIO, False
        extra = _gain_epochs(run, ratio)
        run.warn(f"{exc}; pruning as far as the constraints allow")
    asked = ratio
    # beyond what the limits allow, a count target is refused at the first step and the time target falls short
    # there with a warning: clip now, and say before the pruning epoch that the budget will be missed and by how much
    ratio = pruner.retarget(ratio, clip=True)
    expected = budget_fraction(cfg.epochs, dense_epochs, ratio, spent, extra)
    if ratio < asked:
        met = False
        run.warn(_clipped(cfg, asked, ratio, dense_epochs, expected))
    most = pruner.reachable_ratio()
    if most and ratio >= FLOOR_SHARE * most:
        # importance no longer chooses: the selection only stops where the floors are (benchmarks/frontier.py
        # --profile long: 45.8 % where init with a smaller ask reached 54.6 %, two seeds)
        run.warn(_no_choice(ratio, most))
    run.budget = {"budget": cfg.time_budget, "dense_epochs": dense_epochs, "ratio": ratio, "target": cfg.target,
                  "met": met, "expected": expected, "spent_before": spent, "gain_timing": extra}
    run.progress.log(f"time budget {cfg.time_budget:.0%} of the dense run with {dense_epochs} dense epoch(s) before "
                     f"pruning: ratio {ratio:.3f} of the {cfg.target}")


def _clipped(cfg: TrainConfig, asked: float, ratio: float, dense_epochs: int, expected: float) -> str:
    latency = cfg.target == "latency"
    return (f"the time budget of {cfg.time_budget:.0%} asks to remove {asked:.1%} of the "
            f"{'predicted step time' if latency else cfg.target} after {dense_epochs} dense epoch(s), but "
            f"min_channels / round_to / max_group_ratio allow at most {ratio:.1%}: pruning that far, the run "
            f"will take about {expected:.0%} of the dense run's time (raise --max-group-ratio, or let the "
            f"policy prune earlier{'' if latency else '; --target latency fits a time budget directly'})")


def _no_choice(ratio: float, most: float) -> str:
    return (f"the time budget leaves the selection no choice: ratio {ratio:.3f} is {ratio / most:.0%} of the "
            f"most the limits allow ({most:.3f}), so nearly every group will be cut to its floor "
            f"(min_channels / max_group_ratio), whatever the scores; such networks trained much worse in "
            f"benchmarks/frontier.py — a larger --time-budget, or pruning earlier (--policy init), leaves "
            f"the choice to the scores")


def budget_record(run: Run) -> dict[str, Any] | None:
    """The time budget's plan (from this process or, after a resume, from the epoch it was fitted in) and what the
    run spent — :func:`~earlyprune.training.summary.run_fraction`, the inverse of the summary's speedup (one
    definition, one number; the fit itself predicts on the CPU clock with :func:`dense_epochs_spent`)."""
    plan = run.budget or next((r["time_budget"] for r in run.rows if r.get("time_budget")), None)
    if plan is None:
        return None
    spent = run_fraction(run.rows)
    if spent is not None and len(run.rows) >= run.epochs:
        over = spent > plan["budget"]
        run.progress.log(f"time budget {plan['budget']:.0%}: the run took about {spent:.0%} of a dense run's time "
                         f"(estimated from its own dense epochs){' — over the budget' if over else ''}")
    return {**plan, "spent": spent}
