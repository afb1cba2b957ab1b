"""Markdown tables in the layout of PaT's Tables 1, 4 and 5, plus the oracle grid, costs and an inventory.

Accuracies are shown in percent with two decimals, exactly the runs' ``final_test_accuracy``; gaps to the
oracle in percentage points. A cell that lacks a run says so (``missing`` / ``incomplete``) and every table
ends with the list of runs it could not use: nothing is dropped silently. A cell of several runs (declared
seeds, or aggregated on request) shows ``mean ± sd`` and ``n``; a run that removed no channel is marked
``not pruned`` and its reason listed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..core.validation import InvalidParameterError
from .comparison import DENSE, Cell, Comparison
from .runs import MissingRun, Run

MISSING = "missing"
NOT_PRUNED = "not pruned"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one letter per column (``l`` or ``r``; default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise InvalidParameterError(f"align needs one letter per column ({len(header)}), got {align!r}")
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals (``0.7123 → 71.23``)."""
    return "–" if value is None else f"{100 * value:.2f}"


def points(value: float | None) -> str:
    return "–" if value is None else f"{value + 0.0:+.2f}".replace("-0.00", "+0.00")


def ratio_label(ratio: float | None) -> str:
    return "–" if ratio is None else f"{100 * ratio:g}%"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _epochs(epochs: Sequence[int | None]) -> str:
    shown = [NOT_PRUNED if e is None else str(e) for e in epochs]
    if len(shown) <= 5:
        return ", ".join(shown)
    known = [e for e in epochs if e is not None]
    text = f"mean {sum(known) / len(known):.1f}" if known else NOT_PRUNED
    return text + (f"; {len(epochs) - len(known)} not pruned" if known and len(known) < len(epochs) else "")


def accuracy_text(cell: Cell) -> str:
    """``73.45``, or ``62.00 ± 2.83`` for a cell of several runs."""
    sd = cell.accuracy_sd
    return pct(cell.accuracy) + ("" if sd is None else f" ± {100 * sd:.2f}")


def cell_text(cell: Cell | None) -> str:
    """``acc (epoch)`` as in PaT's tables (``acc ± sd (epochs; n=N)`` for several runs, ``acc (not pruned)`` for a
    run that removed nothing); ``missing`` / ``incomplete`` when the runs are not there."""
    if cell is None:
        return "not run"
    if cell.accuracy is None:
        return MISSING if any(isinstance(r, MissingRun) for r in cell.runs) or not cell.runs else "incomplete"
    n = f"; n={cell.n}" if cell.n > 1 else ""
    text = f"{accuracy_text(cell)} ({_epochs(cell.prune_epochs)}{n})"
    if len(cell.complete_runs) < len(cell.runs):
        text += f" [{len(cell.complete_runs)} of {len(cell.runs)} runs]"
    return text


def problems_text(problems: Sequence[tuple[Any, str]]) -> str:
    if not problems:
        return ""
    lines = [f"- `{path}`: {reason}" for path, reason in problems]
    return "Runs not available (left out of every number above):\n\n" + "\n".join(lines)


def not_pruned_text(runs: Sequence[Run]) -> str:
    """The runs that removed no channel, with why (they count as no result of their policy)."""
    lines = [f"- `{r.path}` ({r.policy}): {r.not_pruned_reason}" for r in runs
             if r.complete and r.pruned is False and r.policy != "never"]
    if not lines:
        return ""
    return ("Runs that removed no channel (marked *not pruned*; no gap to the oracle, never the oracle):\n\n"
            + "\n".join(lines))


# -- the oracle grid -------------------------------------------------------------------------------------------
def oracle_table(comparison: Comparison, criterion: str) -> str:
    """Final top-1 by pruning epoch (rows: ratios, columns: the grid's epochs); the oracle's entry in bold."""
    epochs = comparison.oracle_epochs
    rows = []
    for ratio in comparison.ratios:
        best = comparison.oracle(criterion, ratio)
        row: list[Any] = [ratio_label(ratio)]
        for e in epochs:
            cells = [c for c in comparison.oracle_points(criterion, ratio) if c.epoch == e]
            texts = []
            for cell in cells:  # several only for repeats that were not aggregated: each shown
                text = (accuracy_text(cell) if cell.accuracy is not None and cell.pruned
                        else f"{pct(cell.accuracy)} ({NOT_PRUNED})" if cell.accuracy is not None else cell_text(cell))
                if best is not None and cell.pruned and cell.accuracy == best[0] and e == best[1]:
                    text = f"**{text}**"
                texts.append(text)
            row.append(" / ".join(texts) if texts else "not run")
        rows.append(row)
    return markdown_table(["ratio"] + [f"epoch {e}" for e in epochs], rows)


# -- PaT Tables 4 / 5 --------------------------------------------------------------------------------------------
def policy_table(comparison: Comparison, criterion: str) -> str:
    """Per ratio: the oracle estimate and each policy's top-1 with its prune epoch in brackets; then the
    average gap to the oracle (points, lower is better) and whether the policy is automatic."""
    labels = comparison.labels
    rows: list[list[Any]] = []
    for ratio in comparison.ratios:
        oracle = comparison.oracle(criterion, ratio)
        row: list[Any] = [ratio_label(ratio), f"{pct(oracle[0])} ({oracle[1]})" if oracle else MISSING]
        cells = [comparison.find("policy", label, criterion, ratio) for label in labels]
        best = max((c.accuracy for c in cells if c is not None and c.accuracy is not None and c.pruned),
                   default=None)
        for c in cells:
            text = cell_text(c)
            row.append(f"**{text}**" if c is not None and c.pruned and best is not None and c.accuracy == best
                       else text)
        rows.append(row)
    gaps: list[Any] = ["avg gap to oracle (points)", "–"]
    for label in labels:
        values = [g for c in comparison.policy_cells(criterion, label) if (g := comparison.gap(c)) is not None]
        n_all = len(comparison.ratios)
        text = "–" if not values else f"{sum(values) / len(values):.2f}"
        if values and len(values) < n_all:
            text += f" ({len(values)} of {n_all} ratios)"
        gaps.append(text)
    rows.append(gaps)
    rows.append(["automatic", "no"] + [_yes_no(comparison.automatic(label)) for label in labels])
    header = ["ratio", "oracle (epoch)"] + labels
    table = markdown_table(header, rows)
    dense_cells = comparison.dense_cells(criterion) or comparison.dense_cells()
    if dense_cells:
        shown = [f"{accuracy_text(c)}" + (f" (n={c.n})" if c.n > 1 else "")
                 + (f" [{c.label.partition(' [')[2].rstrip(']')}]" if " [" in c.label else "")
                 for c in dense_cells if c.accuracy is not None]
        if shown:
            table += f"\n\nDense (unpruned) reference: {', '.join(shown)} top-1."
    return table


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


# -- PaT Table 1 -------------------------------------------------------------------------------------------------
def summary_table(comparison: Comparison) -> str:
    """Average gap to the oracle (percentage points) per criterion and policy, over the ratios; "overall" is the
    mean of the criteria's averages (as PaT's Table 1)."""
    rows, per_label = [], {label: [] for label in comparison.labels}
    for criterion in comparison.criteria:
        row: list[Any] = [criterion]
        for label in comparison.labels:
            values = [g for c in comparison.policy_cells(criterion, label) if (g := comparison.gap(c)) is not None]
            avg = sum(values) / len(values) if values else None
            if avg is not None:
                per_label[label].append(avg)
            row.append(_num(avg, ".2f"))
        rows.append(row)
    if len(comparison.criteria) > 1:
        rows.append(["overall"] + [_num(sum(v) / len(v) if v else None, ".2f") for v in per_label.values()])
    return markdown_table(["criterion"] + comparison.labels, rows)


# -- costs -------------------------------------------------------------------------------------------------------
def _mib(value: float | None) -> float | None:
    return None if value is None else value / 2**20


def _kib(value: float | None) -> float | None:
    return None if value is None else value / 2**10


def _cost_columns(comparison: Comparison, energy: bool) -> list[tuple[str, Callable[[Run], Any], str]]:
    cols: list[tuple[str, Callable[[Run], Any], str]] = [
        ("train s", lambda r: r.train_seconds, ",.1f"),
        ("speedup", comparison.speedup, ".2f"),
        ("MACs-ideal speedup", lambda r: r.ideal_speedup, ".2f"),
        ("MACs (M)", lambda r: (r.nested("macs") or 0) / 1e6 if r.nested("macs") is not None else None, ",.2f"),
        ("params (k)", lambda r: (r.nested("params") or 0) / 1e3 if r.nested("params") is not None else None,
         ",.1f"),
        ("node sparsity", lambda r: r._summary("node_sparsity"), ".1%"),
        ("weight sparsity", lambda r: r._summary("weight_sparsity"), ".1%"),
        ("peak memory (MiB)", lambda r: _mib(r.peak_memory_bytes), ",.0f"),
        ("model size (KiB)", lambda r: _kib(r._summary("model_bytes")), ",.0f"),
        ("CSR size (KiB)", lambda r: _kib(r.nested("disk", "csr_bytes")), ",.0f"),
    ]
    if energy:
        cols += [("energy (Wh)", lambda r: 1000 * r.energy["kwh"] if r.energy else None, ",.2f"),
                 ("CO₂ (g)", lambda r: 1000 * r.energy["co2_kg"] if r.energy else None, ",.2f")]
    return cols


def cost_table(comparison: Comparison) -> str:
    """One row per (criterion, ratio, policy) and the dense reference: top-1, gap to the oracle, prune epoch,
    automatic, then training time, speedup over dense, the MACs-ideal speedup, final MACs and parameters, node and
    weight sparsity, peak memory, model size on disk (the file, and the weights in CSR as EarlyCroP's appendix
    counts them: fp32 values, narrowest integer indices), and energy / CO₂ when codecarbon measured the runs. Values
    of repeated runs (``random``) are means."""
    energy = any(r.energy for c in comparison.cells for r in c.complete_runs)
    cols = _cost_columns(comparison, energy)
    header = ["criterion", "ratio", "policy", "n", "top-1", "Δ vs oracle", "epoch", "auto"] + [c[0] for c in cols]
    rows: list[list[Any]] = []

    def add(cell: Cell, label: str) -> None:
        base = [cell.criterion, ratio_label(cell.ratio), label, cell.n,
                accuracy_text(cell) if cell.accuracy is not None else cell_text(cell),
                points(-g) if (g := comparison.gap(cell)) is not None else "–",
                _epochs(cell.prune_epochs) if cell.complete_runs and cell.kind != DENSE else "–",
                "–" if cell.kind == DENSE else _yes_no(comparison.automatic(label) if cell.kind == "policy"
                                                         else False)]
        rows.append(base + [_num(cell.mean(fn), fmt) for _, fn, fmt in cols])

    for dense in comparison.dense_cells():
        add(dense, dense.label)
    for criterion in comparison.criteria:
        for ratio in comparison.ratios:
            oracle = comparison.oracle(criterion, ratio)
            if oracle is not None:
                point = next(c for c in comparison.oracle_points(criterion, ratio)
                             if c.epoch == oracle[1] and c.pruned and c.accuracy == oracle[0])
                add(point, f"oracle ({point.label})")
            for label in comparison.labels:
                cell = comparison.find("policy", label, criterion, ratio)
                if cell is not None:
                    add(cell, label)
    note = ("Δ vs oracle: top-1 change in points (negative = worse). speedup: training seconds of the dense "
            "run over the run's" if any(comparison.dense_seconds(c) is not None for c in comparison.criteria) else
            "Δ vs oracle: top-1 change in points (negative = worse). speedup: the run's dense-equivalent "
            "time (its median dense epoch × epochs) over its measured time, as no dense run was measured")
    note += ("; MACs-ideal: what the speedup would be if time followed MACs (epochs × dense MACs / Σ per-epoch "
             "MACs). Training time excludes evaluation. Runs with weight masks (unstructured) train on dense kernels: "
             "masks save neither time nor memory (MACs and parameters count what the kernels compute and store); "
             "their gain is the CSR size.")
    note += (" n: complete runs behind the row (several: means, top-1 ± its standard deviation)."
             if any(c.n > 1 for c in comparison.cells) else "")
    return markdown_table(header, rows, "lll" + "r" * (len(header) - 3)) + "\n\n" + note


# -- inventory ---------------------------------------------------------------------------------------------------
def runs_table(runs: Sequence[Run], missing: Sequence[MissingRun] = ()) -> str:
    """Every run read (name, criterion, policy, ratio, prune epoch, final and best top-1, time, status) and every
    path that could not be read."""
    rows = []
    for r in runs:
        best = r.summary.get("best_test_accuracy") if r.complete and r.summary else None
        epoch = (r.prune_epoch if r.prune_epoch is not None else NOT_PRUNED if r.pruned is False else "–")
        rows.append([f"`{r.path}`", r.criterion, r.policy, ratio_label(r.ratio), epoch,
                     pct(r.final_accuracy), pct(best),
                     _num(r.train_seconds, ",.1f"), r.status])
    for m in missing:
        rows.append([f"`{m.path}`", "", "", "", "", "", "", "", f"missing: {m.reason}"])
    return markdown_table(["run", "criterion", "policy", "ratio", "prune epoch", "final top-1", "best top-1",
                           "train s", "status"], rows, "llll" + "r" * 4 + "l")
