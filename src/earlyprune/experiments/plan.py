"""Planned runs: one :class:`RunSpec` per run directory, named from what distinguishes it.

Runs that behave identically get the same name, so they are trained once: ``init`` is ``epoch:0``, ``epoch:K``
is the grid's point K, and every draw of ``random:A-B`` is the ``epoch:K`` run of the epoch it drew.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from ..core.errors import ConfigError
from ..core.validation import RATIO
from ..training.config import TrainConfig


@dataclass(frozen=True)
class RunSpec:
    """One run to make: its directory and its resolved configuration."""

    path: Path
    config: TrainConfig

    @property
    def name(self) -> str:
        return self.path.name


def run_name(criterion: str, ratio: float | None, what: str) -> str:
    """``magnitude-r0.5-epoch4``: a plain directory name (odd characters of criterion specs become ``-``)."""
    raw = f"{criterion}-r{ratio:g}-{what}" if ratio is not None else f"{criterion}-{what}"
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", raw).strip("-.")


def make_spec(base: TrainConfig, root: Path, *, criterion: str, ratio: float, policy: str, what: str,
              with_ratio: bool = True) -> RunSpec:
    """The run of ``base`` with this criterion, ratio and policy, in ``root/<name>``."""
    name = run_name(criterion, ratio if with_ratio else None, what)
    cfg = replace(base, criterion=criterion, ratio=ratio, policy=policy, name=name, out_dir=str(root),
                  stop_after=None, model_args=dict(base.model_args), pruner_args=dict(base.pruner_args))
    return RunSpec(root / name, cfg.resolved())


def fixed_epoch_spec(base: TrainConfig, root: Path, criterion: str, ratio: float, epoch: int) -> RunSpec:
    """A point of the oracle grid: prune during ``epoch`` (``epoch:K``)."""
    return make_spec(base, root, criterion=criterion, ratio=ratio, policy=f"epoch:{epoch}", what=f"epoch{epoch}")


def parse_numbers(tokens: Iterable[str], kind: type, what: str) -> list:
    """``["0,2", "4"]`` → ``[0, 2, 4]``: lists may be given comma- or space-separated."""
    out = []
    for token in tokens:
        for part in filter(None, (p.strip() for p in str(token).split(","))):
            try:
                out.append(kind(part))
            except ValueError:
                raise ConfigError(f"{what} must be {'whole numbers' if kind is int else 'numbers'}, got {part!r}") \
                    from None
    return out


def check_prune_epochs(epochs: Sequence[int], total: int, flag: str = "--prune-epochs") -> list[int]:
    """Sorted, unique epochs, each a valid pruning epoch of a ``total``-epoch run."""
    if not epochs:
        raise ConfigError(f"{flag} needs at least one epoch")
    bad = [e for e in epochs if e < 0 or e >= total]
    if bad:
        raise ConfigError(f"{flag}: epoch {bad[0]} is outside 0…{total - 1} (--epochs {total}); pruning must start "
                          f"before the last epoch ends")
    return sorted(set(epochs))


def check_ratios(ratios: Sequence[float]) -> list[float]:
    if not ratios:
        raise ConfigError("--ratios needs at least one ratio")
    bad = [r for r in ratios if not RATIO.accepts(r)]  # the rule of every ratio (earlyprune.core.validation)
    if bad:
        raise ConfigError(f"--ratios must be fractions in (0, 1), got {bad[0]}")
    return list(dict.fromkeys(float(r) for r in ratios))
