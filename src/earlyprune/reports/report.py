"""``earlyprune report``: the Markdown report and PNG figures of a set of run directories.

Sections: one per run directory named on the command line (its summary and its picture: loss, accuracy, EPI
with τ, seconds per epoch — :mod:`.run_figure`), then per comparison of two runs or more (a ``compare``
directory, or the runs grouped by setting) PaT's Table 1 summary, Tables 4/5 per criterion, the oracle grid,
the costs, the runs that removed nothing, and the figures; last, every run read (and every path that could not
be).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..core.validation import InvalidParameterError
from . import tables
from .comparison import Comparison, infer_comparisons, load_comparison
from .runs import Run, collect, is_run_dir, load_or_missing

REPORT = "report.md"


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    markdown: Path
    plots: list[Path] = field(default_factory=list)
    runs: int = 0
    missing: list[str] = field(default_factory=list)


def comparisons_for(paths: Iterable[str | Path], aggregate: bool = False
                    ) -> tuple[list[Comparison], list[Run], list]:
    """Comparisons of the given paths: those of ``compare`` manifests, plus inferred ones for runs outside any
    manifest (``aggregate``: average runs that differ only by seed). Returns (comparisons, runs read, missing
    paths)."""
    found = collect(paths)
    comparisons = [load_comparison(d) for d in found.comparisons]
    in_manifest = {r.path.resolve() for c in comparisons for cell in c.cells for r in cell.runs if isinstance(r, Run)}
    loose = [r for r in found.runs if r.path.resolve() not in in_manifest]
    comparisons += infer_comparisons(loose, aggregate=aggregate)
    return comparisons, found.runs, found.missing


def comparison_markdown(comparison: Comparison, heading: str = "##", figures: Iterable[Path] = (),
                        relative_to: Path | None = None) -> str:
    """The tables of one comparison (PaT Table 1, Tables 4/5 per criterion, oracle grid, costs)."""
    parts = [f"{heading} {comparison.title}"]
    parts += comparison.notes
    has_grid = bool(comparison.oracle_epochs)
    if comparison.labels and has_grid:
        parts += [f"{heading}# Average gap to the oracle (PaT Table 1)",
                  "Oracle accuracy minus the policy's, in percentage points, averaged over the ratios (lower is "
                  "better; negative: the policy beat the grid).", tables.summary_table(comparison)]
    for criterion in comparison.criteria:
        if comparison.labels:
            parts += [f"{heading}# Policies, criterion `{criterion}` (PaT Tables 4/5)",
                      "Top-1 (%) with the epoch pruning started in brackets; the best policy per ratio in bold. "
                      "The oracle is the best point of the grid below.",
                      tables.policy_table(comparison, criterion)]
        if has_grid:
            parts += [f"{heading}# Oracle grid, criterion `{criterion}`",
                      "Final top-1 (%) when pruning starts at each epoch; the best (the oracle) in bold.",
                      tables.oracle_table(comparison, criterion)]
    parts += [f"{heading}# Costs", tables.cost_table(comparison)]
    unpruned = tables.not_pruned_text(list({id(r): r for c in comparison.cells for r in c.complete_runs}.values()))
    if unpruned:
        parts.append(unpruned)
    problems = tables.problems_text(comparison.problems())
    if problems:
        parts.append(problems)
    for fig in figures:
        shown = fig.relative_to(relative_to) if relative_to is not None else fig
        parts.append(f"![{fig.stem.replace('_', ' ')}]({shown.as_posix()})")
    return "\n\n".join(parts)


def run_markdown(run: Run, figure: Path | None, relative_to: Path) -> str:
    """One run's section: what it gained (as ``earlyprune info`` prints it) and its picture."""
    from ..training.summary import format_summary

    parts = [f"## Run `{run.name}`", f"`{run.path}`: {run.status}."]
    if run.summary is not None:
        try:
            parts.append("```\n" + format_summary(run.summary) + "\n```")
        except (KeyError, TypeError):  # a summary.json of another earlyprune version
            parts.append(f"(summary.json is in a format this earlyprune does not print; final top-1 "
                         f"{tables.pct(run.final_accuracy)})")
    if figure is not None:
        parts.append(f"![{run.name}]({figure.relative_to(relative_to).as_posix()})")
    return "\n\n".join(parts)


def _named_runs(paths: list[str | Path]) -> list[Run]:
    """The run directories named directly (not found inside a folder or a compare directory)."""
    runs = []
    for p in paths:
        if is_run_dir(Path(p)):
            item = load_or_missing(p)
            if isinstance(item, Run) and item.rows:
                runs.append(item)
    return runs


def build_report(paths: Iterable[str | Path], out_dir: str | Path, *, plots: bool = True,
                 title: str = "earlyprune report", filename: str = REPORT, aggregate: bool = False) -> Report:
    """Read the runs under ``paths``, write ``out_dir/<filename>`` and (with ``plots``) the PNG figures.

    Every run directory named in ``paths`` gets a section with its own picture (``run-<name>.png``); runs are
    compared (tables, PaT figures) when a comparison holds two runs or more. ``aggregate`` averages runs that
    differ only by seed (shown with n and the spread); otherwise no two runs are ever merged.
    """
    paths = list(paths)
    if not paths:
        raise InvalidParameterError("report needs at least one run directory (or a folder of them, or a compare "
                                    "directory)")
    out_dir = Path(out_dir)
    comparisons, runs, missing = comparisons_for(paths, aggregate=aggregate)
    if not runs and not comparisons:
        reasons = "; ".join(f"{m.path}: {m.reason}" for m in missing)
        raise InvalidParameterError(f"no run directories found ({reasons})")
    out_dir.mkdir(parents=True, exist_ok=True)
    # a comparison of one run says nothing its own section does not (one point on every figure)
    comparisons = [c for c in comparisons
                   if len({id(r) for cell in c.cells for r in cell.runs}) > 1 or c.source is not None]
    figures = write_plots_if(comparisons, out_dir, plots)
    parts = [f"# {title}", f"{len(runs)} run(s) read" + (f", {len(missing)} path(s) missing" if missing else "")
             + "."]
    run_figures: list[Path] = []
    for run in _named_runs(paths):
        figure = None
        if plots:
            from .run_figure import draw_run

            stem, i = f"run-{run.name}", 1
            while out_dir / f"{stem}{f'-{i}' if i > 1 else ''}.png" in run_figures:  # runs/a/x and runs/b/x
                i += 1
            figure = draw_run(run, out_dir / f"{stem}{f'-{i}' if i > 1 else ''}.png")
            run_figures.append(figure)
        parts.append(run_markdown(run, figure, out_dir))
    for comparison in comparisons:
        parts.append(comparison_markdown(comparison))
    if figures:
        parts.append("## Figures")
        parts += [f"![{f.stem.replace('_', ' ')}]({f.relative_to(out_dir).as_posix()})" for f in figures]
    parts += ["## Runs", tables.runs_table(runs, missing)]
    path = out_dir / filename
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return Report(path, run_figures + figures, len(runs), [f"{m.path}: {m.reason}" for m in missing])


def write_plots_if(comparisons: list[Comparison], out_dir: Path, plots: bool) -> list[Path]:
    if not plots or not comparisons:
        return []
    from .plots import write_plots

    return write_plots(comparisons, out_dir)
