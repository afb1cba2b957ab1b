"""A removal plan: which channels of which group go, and what remains — the one thing selection hands to the
engine (so the engine, below selection, needs nothing from it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """What to remove: channel indices per group (current numbering) and what remains."""

    remove: dict[str, list[int]]
    structure: list[int]   #: kept channels per group, in group order — PaT's N_t
    names: list[str]
    channels: int          #: channels left (summed over groups)
    macs: float            #: MACs per example left (predicted by the cost model)
    params: float          #: parameters left (predicted)
    seconds: float | None = None  #: predicted step seconds (``target="latency"`` only)

    @property
    def n_removed(self) -> int:
        return sum(len(v) for v in self.remove.values())

    def is_empty(self) -> bool:
        return self.n_removed == 0
