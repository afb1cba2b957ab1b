"""``earlyprune sweep``: the oracle grid — one configuration pruned at each epoch of a list, every run trained to
the same final epoch (PaT §4.1, Figures 3/4). One run directory per (criterion, ratio, epoch); finished runs are
skipped and interrupted ones resumed, so the command can simply be run again."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..training.config import TrainConfig
from .plan import RunSpec, check_prune_epochs, check_ratios, fixed_epoch_spec
from .runner import run_all


def grid_root(base: TrainConfig, default: str) -> Path:
    """``OUT_DIR/NAME``: where a sweep's or a comparison's run directories go."""
    return Path(base.out_dir).expanduser() / (base.name or default)


def sweep_specs(base: TrainConfig, prune_epochs: Sequence[int], *, ratios: Sequence[float] | None = None,
                criteria: Sequence[str] | None = None, root: Path | None = None) -> list[RunSpec]:
    """The grid's runs: every criterion × ratio × prune epoch, in that order."""
    base.validate()
    epochs = check_prune_epochs(list(prune_epochs), base.epochs)
    ratios = check_ratios(list(ratios) if ratios else [base.ratio])
    criteria = list(dict.fromkeys(criteria or [base.criterion]))
    root = root if root is not None else grid_root(base, "sweep")
    return [fixed_epoch_spec(base, root, c, r, e) for c in criteria for r in ratios for e in epochs]


def sweep(base: TrainConfig, prune_epochs: Sequence[int], *, ratios: Sequence[float] | None = None,
          criteria: Sequence[str] | None = None, energy: bool = False, country: str = "USA",
          isolate: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Train (or finish) every run of the grid; returns their directories."""
    specs = sweep_specs(base, prune_epochs, ratios=ratios, criteria=criteria)
    counts = run_all(specs, energy=energy, country=country, isolate=isolate, log=log)
    log(f"sweep: {len(specs)} runs in {specs[0].path.parent} ({counts['trained']} trained, {counts['resumed']} "
        f"resumed, {counts['skipped']} already complete)")
    return [s.path for s in specs]
