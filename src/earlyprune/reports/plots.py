"""PNG figures in the manner of PaT's: final accuracy vs prune epoch (Figures 3/4), EPI curves with the τ line
(Figure 6), accuracy vs training time (Figure 5), and EPI against the Kendall / Spearman rank correlations
(appendix D). One panel per criterion (and setting), one colour per ratio, one marker per policy.

matplotlib is an optional dependency (``pip install "earlyprune[report]"``); figures are drawn on
:class:`matplotlib.figure.Figure` objects directly, so no global pyplot state or GUI backend is touched.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..core.errors import MissingDependencyError
from .comparison import DENSE, ORACLE, POLICY, Comparison
from .runs import Run

#: one marker per policy; the star is the dense run's alone
MARKERS = ["D", "^", "v", "s", "P", "X", "h", "<", ">", "p"]
DPI = 130


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("plots need matplotlib: pip install 'earlyprune[report]' (or pip install "
                                     "matplotlib); pass --no-plots for the tables alone") from None
    return Figure


def _colour(ratios: Sequence[float], ratio: float) -> Any:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    index = sorted(set(ratios)).index(ratio) if ratio in ratios else len(ratios)
    return cmap(index % 10)


Panel = tuple[Comparison, str]


def _panels(comparisons: Sequence[Comparison]) -> list[Panel]:
    return [(c, crit) for c in comparisons for crit in c.criteria]


def _title(panel: Panel, many: bool) -> str:
    comparison, criterion = panel
    return f"{criterion}\n{comparison.title}" if many else f"criterion: {criterion}"


def _figure(n: int, title: str) -> tuple[Any, list[Any]]:
    Figure = _matplotlib()
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6.4 * cols, 4.6 * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    fig.suptitle(title, fontsize=13)
    return fig, axes


def _runs(comparison: Comparison, criterion: str) -> list[Run]:
    seen: dict[Path, Run] = {}
    for cell in comparison.cells:
        if cell.criterion == criterion:
            for r in cell.runs:
                if isinstance(r, Run):
                    seen.setdefault(r.path, r)
    return list(seen.values())


def _longest(runs: Iterable[Run], series: Callable[[Run], list[tuple[int, float]]]) -> list[tuple[int, float]]:
    return max((series(r) for r in runs), key=len, default=[])


def epi_threshold(comparison: Comparison, criterion: str) -> float | None:
    """τ of the ``epi`` policy for this criterion: an explicit ``epi:tau=…`` among the compared policies, else
    PaT's universal value for the criterion's family (0.983 magnitude, 0.944 gradient)."""
    from ..criteria import CRITERIA
    from ..policies.epi import EPI

    for label in comparison.labels:
        m = re.match(r"epi:.*\btau=([0-9.]+)", label)
        if m:
            return float(m.group(1))
    name = criterion.partition(":")[0].strip()
    family = getattr(CRITERIA.get(name), "family", None) if name in CRITERIA else None
    return EPI.TAU.get(family) if isinstance(family, str) else None


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _finish(ax: Any, title: str, xlabel: str, ylabel: str, *, integer_x: bool = False) -> None:
    """Labels, title, grid, and the legend (one entry per label) under the axes: lines and markers fill every
    corner of these plots, so a legend inside hides data."""
    ax.set_xlabel(xlabel)
    if integer_x:
        _integer_epochs(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax.legend(list(unique.values()), list(unique.keys()), fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)


def _policy_markers(comparison: Comparison) -> dict[str, str]:
    return {label: MARKERS[i % len(MARKERS)] for i, label in enumerate(comparison.labels)}


# -- PaT Figures 3 / 4 -------------------------------------------------------------------------------------------
def accuracy_vs_prune_epoch(comparisons: Sequence[Comparison], path: Path) -> Path | None:
    """Final top-1 against the epoch at which pruning started, one line per ratio (the oracle grid), the dense
    accuracy as a dashed line, and where each automatic policy landed as a marker."""
    panels = [p for p in _panels(comparisons) if any(c.kind == ORACLE and c.criterion == p[1] and c.accuracy
                                                     is not None for c in p[0].cells)]
    if not panels:
        return None
    fig, axes = _figure(len(panels), "Final accuracy vs the epoch pruning starts (PaT Fig. 3/4)")
    for ax, (comparison, criterion) in zip(axes, panels):
        markers = _policy_markers(comparison)
        capped_any = False
        auto = [label for label in comparison.labels if comparison.automatic(label)]
        for ratio in comparison.ratios:
            colour = _colour(comparison.ratios, ratio)
            points = [c for c in comparison.oracle_points(criterion, ratio) if c.accuracy is not None]
            pruned = [c for c in points if c.pruned]
            epochs = [c.epoch for c in pruned]
            # one line through the grid when each epoch has one point; repeats that were not aggregated are
            # markers only (never averaged into a line)
            style = "-o" if len(set(epochs)) == len(epochs) else "o"
            if pruned:
                ax.plot(epochs, [100 * c.accuracy for c in pruned], style, color=colour, ms=4,
                        label=f"prune {100 * ratio:g}% (grid)")
            for c in pruned:
                if c.accuracy_sd is not None:
                    ax.errorbar(c.epoch, 100 * c.accuracy, yerr=100 * c.accuracy_sd, color=colour, capsize=3,
                                lw=1, ls="none")
            for c in points:
                if not c.pruned:
                    ax.plot(c.epoch, 100 * c.accuracy, "x", color=colour, ms=7, ls="none",
                            label="grid point that removed nothing")
            for label in comparison.labels:
                cell = comparison.find(POLICY, label, criterion, ratio)
                if cell is None or not comparison.automatic(label):
                    continue
                # a small sideways offset per policy keeps policies that chose the same epoch visible
                offset = 0.08 * (auto.index(label) - (len(auto) - 1) / 2)
                for r in cell.complete_runs:
                    if r.prune_epoch is not None and r.final_accuracy is not None:
                        colour = _colour(comparison.ratios, ratio)
                        capped = r.trigger_reason == "cap"  # hollow: the cap decided, not the policy's signal
                        capped_any = capped_any or capped
                        ax.plot(r.prune_epoch + offset, 100 * r.final_accuracy, markers[label], ms=10,
                                mec=colour if capped else "black", mew=2 if capped else 1,
                                color="none" if capped else colour, ls="none")
        for label in comparison.labels:  # one legend entry per policy marker
            if comparison.automatic(label) and comparison.policy_cells(criterion, label):
                ax.plot([], [], markers[label], color="0.6", mec="black", ms=10, ls="none", label=f"{label} chose")
        if capped_any:
            ax.plot([], [], "o", color="none", mec="0.3", mew=2, ms=10, ls="none",
                    label="hollow: fired at its cap, not by its signal")
        dense = comparison.dense_accuracy(criterion)
        if dense is not None:
            ax.axhline(100 * dense, color="0.3", ls="--", lw=1, label=f"dense {100 * dense:.2f}%")
        _finish(ax, _title((comparison, criterion), len(comparisons) > 1),
                "epoch during which pruning runs (from 0 = at initialisation; policy markers slightly offset)",
                "final top-1 accuracy (%)",
                integer_x=True)
    return _save(fig, path)


# -- PaT Figure 6 ------------------------------------------------------------------------------------------------
def epi_curves(comparisons: Sequence[Comparison], path: Path) -> Path | None:
    """EPI_t during the dense epochs at each ratio (from the run of the criterion with the longest dense phase,
    normally the dense reference), with the ``epi`` threshold τ dashed."""
    panels = []
    for comparison, criterion in _panels(comparisons):
        runs = _runs(comparison, criterion)
        curves = {ratio: _longest(runs, lambda r, q=ratio: r.epi_curve(q)) for ratio in comparison.ratios}
        if any(curves.values()):
            panels.append((comparison, criterion, curves))
    if not panels:
        return None
    fig, axes = _figure(len(panels), "Early Pruning Indicator during dense training (PaT Fig. 6)")
    for ax, (comparison, criterion, curves) in zip(axes, panels):
        for ratio, curve in curves.items():
            if curve:
                xs, ys = zip(*curve)
                ax.plot(xs, ys, "-o", ms=3, color=_colour(comparison.ratios, ratio), label=f"prune {100 * ratio:g}%")
        tau = epi_threshold(comparison, criterion)
        if tau is not None:
            ax.axhline(tau, color="black", ls="--", lw=1.2, label=f"τ = {tau:g}")
        _finish(ax, _title((comparison, criterion), len(comparisons) > 1),
                "dense epoch (numbered from 0; EPI needs two epochs or more)", "EPI (structure stability)",
                integer_x=True)
    return _save(fig, path)


# -- PaT Figure 5 ------------------------------------------------------------------------------------------------
def accuracy_vs_time(comparisons: Sequence[Comparison], path: Path) -> Path | None:
    """Final top-1 against total training seconds: each policy a marker, each ratio a colour, the grid as small
    dots and the dense run as a black star. Up and to the left is better."""
    panels = [p for p in _panels(comparisons) if any(r.complete for r in _runs(*p))]
    if not panels:
        return None
    fig, axes = _figure(len(panels), "Accuracy vs training time (PaT Fig. 5)")
    for ax, (comparison, criterion) in zip(axes, panels):
        markers = _policy_markers(comparison)
        grid_labelled = capped_any = spread_any = False
        for ratio in comparison.ratios:
            colour = _colour(comparison.ratios, ratio)
            for c in comparison.oracle_points(criterion, ratio):
                for r in c.complete_runs:
                    ax.plot(r.train_seconds, 100 * r.final_accuracy, ".", color=colour, ms=7, alpha=0.5,
                            label=None if grid_labelled else "grid: epoch:K")
                    grid_labelled = True
            for label in comparison.labels:
                cell = comparison.find(POLICY, label, criterion, ratio)
                if cell is not None and cell.accuracy is not None:
                    secs = cell.mean(lambda r: r.train_seconds)
                    if not cell.pruned:  # the policy removed nothing: not a result of it
                        ax.plot(secs, 100 * cell.accuracy, "x", color=colour, ms=9, ls="none",
                                label="policy run that removed nothing")
                        continue
                    capped = all(r.trigger_reason == "cap" for r in cell.complete_runs)
                    capped_any = capped_any or capped
                    ax.plot(secs, 100 * cell.accuracy, markers[label], ms=10, ls="none",
                            color="none" if capped else colour, mec=colour if capped else "black",
                            mew=2 if capped else 1)
                    if cell.n > 1:  # declared seeds or aggregated on request: the spread, both ways
                        spread_any = True
                        sd_t = cell.spread(lambda r: r.train_seconds)
                        ax.errorbar(secs, 100 * cell.accuracy, xerr=sd_t, yerr=100 * (cell.accuracy_sd or 0.0),
                                    color=colour, capsize=3, lw=1, ls="none")
            ax.plot([], [], "s", color=colour, ms=8, ls="none", label=f"prune {100 * ratio:g}%")
        for label in comparison.labels:
            if comparison.policy_cells(criterion, label):
                ax.plot([], [], markers[label], color="0.6", mec="black", ms=10, ls="none", label=label)
        if capped_any:
            ax.plot([], [], "o", color="none", mec="0.3", mew=2, ms=10, ls="none",
                    label="hollow: fired at its cap, not by its signal")
        if spread_any:
            ax.errorbar([], [], xerr=[], yerr=[], color="0.4", capsize=3, lw=1, ls="none",
                        label="bars: ± sd over the n runs of a cell")
        for cell in comparison.cells:
            if cell.kind == DENSE and cell.criterion == criterion:
                for r in cell.complete_runs:
                    ax.plot(r.train_seconds, 100 * r.final_accuracy, "*", color="black", ms=14, ls="none",
                            label="dense")
        _finish(ax, _title((comparison, criterion), len(comparisons) > 1),
                "training time (s, evaluation excluded)  ← faster", "final top-1 accuracy (%)")
    return _save(fig, path)


# -- PaT appendix D ----------------------------------------------------------------------------------------------
def epi_vs_rank_correlation(comparisons: Sequence[Comparison], path: Path) -> Path | None:
    """EPI at each ratio next to Kendall's τ and Spearman's ρ of the channel ranking between consecutive epochs.
    The rank correlations do not depend on the ratio — PaT's point: they cannot tell the ratios apart."""
    panels = []
    for comparison, criterion in _panels(comparisons):
        runs = _runs(comparison, criterion)
        kendall = _longest(runs, lambda r: r.signal("kendall_tau"))
        spearman = _longest(runs, lambda r: r.signal("spearman_rho"))
        curves = {ratio: _longest(runs, lambda r, q=ratio: r.epi_curve(q)) for ratio in comparison.ratios}
        if kendall or spearman or any(curves.values()):
            panels.append((comparison, criterion, curves, kendall, spearman))
    if not panels:
        return None
    fig, axes = _figure(len(panels), "EPI vs rank correlations of consecutive epochs (PaT appendix D)")
    for ax, (comparison, criterion, curves, kendall, spearman) in zip(axes, panels):
        for ratio, curve in curves.items():
            if curve:
                xs, ys = zip(*curve)
                ax.plot(xs, ys, "-o", ms=3, color=_colour(comparison.ratios, ratio), label=f"EPI, prune {100 * ratio:g}%")
        for series, style, name in ((kendall, "--s", "Kendall τ (any ratio)"), (spearman, ":^", "Spearman ρ (any ratio)")):
            if series:
                xs, ys = zip(*series)
                ax.plot(xs, ys, style, color="black", ms=4, label=name)
        _finish(ax, _title((comparison, criterion), len(comparisons) > 1), "dense epoch (numbered from 0)",
                "similarity to previous epoch(s)", integer_x=True)
    return _save(fig, path)


PLOTS: dict[str, Callable[[Sequence[Comparison], Path], Path | None]] = {
    "accuracy_vs_prune_epoch.png": accuracy_vs_prune_epoch,
    "epi_curves.png": epi_curves,
    "accuracy_vs_time.png": accuracy_vs_time,
    "epi_vs_rank_correlation.png": epi_vs_rank_correlation,
}


def write_plots(comparisons: Sequence[Comparison], out_dir: Path) -> list[Path]:
    """Every figure that the runs have data for, as PNGs in ``out_dir``."""
    _matplotlib()
    out = []
    for name, draw in PLOTS.items():
        path = draw(comparisons, out_dir / name)
        if path is not None:
            out.append(path)
    return out
