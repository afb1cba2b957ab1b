"""A policy comparison as PaT's tables see it: cells of runs by (criterion, ratio, policy), the oracle grid and
the dense reference.

A :class:`Comparison` comes either from the manifest ``compare.json`` that ``earlyprune compare`` writes (it
says which run answers which cell, including the ``random`` draws and the runs shared between the grid and
``init`` / ``epoch:K``), or is inferred from plain run directories (:func:`infer_comparisons`: ``epoch:K`` runs
form the oracle grid, ``never`` is the dense reference, every other policy is a column). Cells keep
:class:`~.runs.MissingRun` entries, so averages can say what they lack.

Runs are never averaged silently. A cell holds several runs only over *declared* seeds — the draws of
``random:A-B,seed=S`` — or when asked (``aggregate=True``, ``earlyprune report --aggregate``: runs that differ
only by ``--seed``, and identical repeats); such a cell shows its mean with ``n`` and the standard deviation.
Otherwise two runs of one configuration are two cells, labelled with their run names, so that each is its own
point. A run that removed no channel stays in its cell but is marked "not pruned" and never counts as a policy
result (no gap to the oracle, never the oracle itself).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .runs import MANIFEST, MissingRun, Run, RunError, load_or_missing

ORACLE, POLICY, DENSE = "oracle", "policy", "dense"
FORMAT, VERSION = "earlyprune-compare", 1


def is_automatic(policy: str) -> bool | None:
    """Whether a policy picks its pruning epoch by itself (PaT's "automatic" row): the registered class's
    :attr:`~earlyprune.Policy.automatic` — True for the signal-driven policies (``epi``, ``earlycrop``,
    ``earlybird``, …) and ``init`` / ``before``, whose epoch is fixed by definition; False for ``epoch:K`` (chosen
    by hand) and ``random`` (a baseline). None for an unknown policy."""
    from ..policies import POLICIES

    name = policy.partition(":")[0].partition("@")[0].strip()
    if name not in POLICIES:
        return None
    return bool(POLICIES.get(name).automatic)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _stdev(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.stdev(present) if len(present) > 1 else None


@dataclass
class Cell:
    """The runs behind one entry of a table: one run, or repeats over declared seeds (averaged, with ``n`` and
    the spread)."""

    kind: str                      #: "oracle" (a grid point), "policy" or "dense"
    label: str                     #: column label: the policy spec ("epi", "random:0-30", "before@snip")
    criterion: str                 #: the table section (the criterion the comparison varies)
    ratio: float | None            #: None for the dense reference
    runs: list[Run | MissingRun]
    epoch: int | None = None       #: the grid point's epoch (oracle cells)
    automatic: bool | None = None
    draws: list[int] | None = None  #: the epochs ``random`` drew, one per repeat

    @property
    def complete_runs(self) -> list[Run]:
        return [r for r in self.runs if isinstance(r, Run) and r.complete]

    @property
    def problems(self) -> list[tuple[Path, str]]:
        out = []
        for r in self.runs:
            if isinstance(r, MissingRun):
                out.append((r.path, r.reason))
            elif not r.complete:
                out.append((r.path, r.status))
        return out

    def mean(self, value: Callable[[Run], Any]) -> float | None:
        """The mean of ``value(run)`` over the complete runs (None if none has it)."""
        return _mean(value(r) for r in self.complete_runs)

    def spread(self, value: Callable[[Run], Any]) -> float | None:
        """The sample standard deviation of ``value(run)`` over the complete runs (None below two)."""
        return _stdev(value(r) for r in self.complete_runs)

    @property
    def n(self) -> int:
        """Complete runs behind the cell's numbers."""
        return len(self.complete_runs)

    @property
    def accuracy(self) -> float | None:
        return self.mean(lambda r: r.final_accuracy)

    @property
    def accuracy_sd(self) -> float | None:
        return self.spread(lambda r: r.final_accuracy)

    @property
    def prune_epochs(self) -> list[int | None]:
        return [r.prune_epoch for r in self.complete_runs]

    @property
    def pruned(self) -> bool:
        """Every complete run removed channels (a run that did not is no result of its policy)."""
        return bool(self.complete_runs) and all(r.pruned is not False for r in self.complete_runs)

    @property
    def not_pruned(self) -> list[Run]:
        return [r for r in self.complete_runs if r.pruned is False]


@dataclass
class Comparison:
    """Cells of one setting (same model, data, recipe): oracle grid points, policies, dense reference."""

    title: str
    criteria: list[str]
    ratios: list[float]
    labels: list[str]
    cells: list[Cell]
    source: Path | None = None
    notes: list[str] = field(default_factory=list)

    def find(self, kind: str, label: str, criterion: str, ratio: float | None) -> Cell | None:
        for c in self.cells:
            if c.kind == kind and c.label == label and c.criterion == criterion and c.ratio == ratio:
                return c
        return None

    def oracle_points(self, criterion: str, ratio: float) -> list[Cell]:
        return sorted((c for c in self.cells if c.kind == ORACLE and c.criterion == criterion and c.ratio == ratio),
                      key=lambda c: c.epoch if c.epoch is not None else -1)

    @property
    def oracle_epochs(self) -> list[int]:
        return sorted({c.epoch for c in self.cells if c.kind == ORACLE and c.epoch is not None})

    def oracle(self, criterion: str, ratio: float) -> tuple[float, int] | None:
        """The best final accuracy over the grid's complete points and its prune epoch (the *oracle estimate*:
        a grid search over the pruning epoch with everything else fixed). Points that removed nothing (``epoch:K``
        at or after the last epoch) are not candidates."""
        scored = [(c.accuracy, c.epoch) for c in self.oracle_points(criterion, ratio)
                  if c.accuracy is not None and c.pruned]
        if not scored:
            return None
        acc, epoch = max(scored, key=lambda t: (t[0], -(t[1] or 0)))  # ties: the earlier epoch
        return acc, int(epoch or 0)

    def dense_cells(self, criterion: str | None = None) -> list[Cell]:
        """The dense reference cells (of ``criterion``, when given)."""
        return [c for c in self.cells if c.kind == DENSE and (criterion is None or c.criterion == criterion)]

    def dense_cell(self, criterion: str | None = None) -> Cell | None:
        """The one dense reference for ``criterion`` (its own dense run, else the comparison's only one); None
        when there is none or several that were not aggregated (they are not averaged behind the reader's
        back)."""
        cells = self.dense_cells(criterion) if criterion is not None else []
        if not cells:
            cells = self.dense_cells()
        return cells[0] if len(cells) == 1 else None

    def dense_accuracy(self, criterion: str | None = None) -> float | None:
        cell = self.dense_cell(criterion)
        return cell.accuracy if cell is not None else None

    def dense_seconds(self, criterion: str | None = None) -> float | None:
        """Training seconds of the dense reference (see :meth:`dense_cell`)."""
        cell = self.dense_cell(criterion)
        return cell.mean(lambda r: r.train_seconds) if cell is not None else None

    def speedup(self, run: Run) -> float | None:
        """Training-time speedup of ``run`` over the measured dense run of its criterion, or — without one — over
        the run's own dense-equivalent time (``summary.json``'s ``speedup``)."""
        dense = self.dense_seconds(run.criterion)
        if dense is not None and run.train_seconds:
            return dense / run.train_seconds
        return run.summary.get("speedup") if run.summary else None

    def gap(self, cell: Cell) -> float | None:
        """Oracle accuracy minus the cell's, in percentage points (PaT Table 1: lower is better; negative when
        the policy beat the grid)."""
        oracle = self.oracle(cell.criterion, cell.ratio) if cell.ratio is not None else None
        if oracle is None or cell.accuracy is None or not cell.pruned:
            return None
        return 100.0 * (oracle[0] - cell.accuracy)

    def policy_cells(self, criterion: str, label: str) -> list[Cell]:
        return [c for r in self.ratios if (c := self.find(POLICY, label, criterion, r)) is not None]

    def automatic(self, label: str) -> bool | None:
        for c in self.cells:
            if c.label == label and c.automatic is not None:
                return c.automatic
        return is_automatic(label)

    def problems(self) -> list[tuple[Path, str]]:
        """Every missing or incomplete run of the comparison, once."""
        seen: dict[Path, str] = {}
        for c in self.cells:
            for path, reason in c.problems:
                seen.setdefault(path, reason)
        return sorted(seen.items())


# -- the manifest ------------------------------------------------------------------------------------------------
def write_manifest(directory: Path, comparison: dict[str, Any]) -> Path:
    """Write ``compare.json`` (run names relative to ``directory``)."""
    from ..training.checkpoint import write_json_atomic

    path = directory / MANIFEST
    write_json_atomic(path, {"format": FORMAT, "version": VERSION, **comparison})
    return path


def load_comparison(directory: str | Path) -> Comparison:
    """The :class:`Comparison` a ``compare`` directory's manifest describes, its runs read from disk."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(directory, f"{MANIFEST} cannot be read ({exc}); is it a directory written by "
                                  f"`earlyprune compare`?") from None
    if doc.get("format") != FORMAT:
        raise RunError(directory, f"{MANIFEST} is not a manifest of `earlyprune compare`")
    cache: dict[str, Run | MissingRun] = {}

    def run(name: str) -> Run | MissingRun:
        if name not in cache:
            cache[name] = load_or_missing(directory / name)
        return cache[name]

    cells = [Cell(kind=c["kind"], label=c["label"], criterion=c["criterion"], ratio=c.get("ratio"),
                  runs=[run(n) for n in c["runs"]], epoch=c.get("epoch"), automatic=c.get("automatic"),
                  draws=c.get("draws")) for c in doc["cells"]]
    return Comparison(title=doc.get("title") or directory.name, criteria=list(doc["criteria"]),
                      ratios=[float(r) for r in doc["ratios"]], labels=list(doc["labels"]), cells=cells,
                      source=directory, notes=list(doc.get("notes", [])))


# -- inference from plain run directories ------------------------------------------------------------------------
def infer_comparisons(runs: Iterable[Run], aggregate: bool = False) -> list[Comparison]:
    """Comparisons from run directories alone, one per setting: ``epoch:K`` runs are the oracle grid, ``never``
    the dense reference, every other policy a column.

    ``random`` runs differing by their declared seed (``random:A-B,seed=S``) are averaged. With ``aggregate``,
    runs that differ only by ``--seed`` (and identical repeats) are averaged too; without it, each seed is its
    own setting and identical repeats become separate cells labelled ``label [run name]``.
    """
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.setting(ignore_seed=aggregate), []).append(r)
    out = []
    for members in groups.values():
        cells: dict[tuple, Cell] = {}
        for r in members:
            if r.policy == "never":
                key: tuple = (DENSE, "dense", r.criterion, None)
                cell = cells.setdefault(key, Cell(DENSE, "dense", r.criterion, None, []))
            elif r.fixed_epoch is not None:
                key = (ORACLE, f"epoch:{r.fixed_epoch}", r.criterion, r.ratio)
                cell = cells.setdefault(key, Cell(ORACLE, key[1], r.criterion, r.ratio, [], epoch=r.fixed_epoch,
                                                  automatic=False))
            else:
                label = r.policy_label
                key = (POLICY, label, r.criterion, r.ratio)
                cell = cells.setdefault(key, Cell(POLICY, label, r.criterion, r.ratio, [],
                                                  automatic=is_automatic(label)))
            cell.runs.append(r)
        final: list[Cell] = []
        notes: list[str] = []
        for cell in cells.values():
            repeats = [r for r in cell.runs if isinstance(r, Run)]
            declared = len({r.policy for r in repeats}) == len(repeats)  # e.g. random draws with their seeds
            if aggregate or len(repeats) < 2 or declared:
                final.append(cell)
                continue
            for r in repeats:  # identical configurations: each run its own cell, never an average
                final.append(Cell(cell.kind, f"{cell.label} [{r.name}]", cell.criterion, cell.ratio, [r],
                                  epoch=cell.epoch, automatic=cell.automatic))
            notes.append(f"Runs {', '.join(f'`{r.name}`' for r in repeats)} have the same configuration "
                         f"({cell.label}, criterion {cell.criterion}"
                         + (f", ratio {cell.ratio:g}" if cell.ratio is not None else "")
                         + "): shown separately. `earlyprune report --aggregate` averages repeats and seeds.")
        labels = list(dict.fromkeys(c.label for c in final if c.kind == POLICY))
        criteria = list(dict.fromkeys(r.criterion for r in members))
        ratios = sorted({r.ratio for r in members if r.policy != "never"})
        seeds = sorted({str(r.config.get("seed")) for r in members})
        title = members[0].setting_title()
        if aggregate and len(seeds) > 1:
            title += f" (seeds {', '.join(seeds)} aggregated)"
        if aggregate and any(len({r.policy for r in c.complete_runs}) < c.n for c in final):
            notes.append(f"Aggregated on request (seeds {', '.join(seeds)}): a cell of several runs shows their "
                         f"mean ± the standard deviation and n.")
        out.append(Comparison(title, criteria, ratios, labels, final, notes=notes))
    return out
