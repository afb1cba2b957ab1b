"""What the callbacks say after a pruning step: one line per event, through the framework's own logging (rank
zero only), so that a Lightning or Hugging Face run says what was removed and the new size, as
``earlyprune train`` does."""

from __future__ import annotations

from typing import Any


def event_lines(pruner: Any, since: int) -> list[str]:
    """One line for each event of ``pruner`` after the first ``since``: the step, what it removed, the new size."""
    events = pruner.events[since:]
    if not events:
        return []
    stats = pruner.stats()
    dense = pruner.dense_stats
    size = (f"{stats.params:,} parameters ({stats.params / dense.params:.0%} of dense), {stats.macs:,} MACs "
            f"({stats.macs / dense.macs:.0%})" if dense.params and dense.macs else f"{stats.params:,} parameters")
    lines = []
    for e in events:
        what = "weights masked" if e.get("level") == "weights" else "channels removed"
        lines.append(f"earlyprune: epoch {e.get('epoch')}, pruning step {e.get('step')}: {int(e.get('removed', 0)):,} "
                     f"{what}; the model now has {size}")
    return lines


__all__ = ["event_lines"]
