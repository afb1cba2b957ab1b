"""The fields of a run's records that are measured on the machine, and a view of a record without them: what two
runs of the trainer that must be identical are compared on."""

from __future__ import annotations

from typing import Any

#: measured, not computed: they differ between two otherwise identical runs
TIMING = {"seconds", "pruner_seconds", "images_per_second", "eval_seconds", "load_average", "gain", "compile",
          "cpu_seconds", "pruner_cpu_seconds", "overhead_seconds", "overhead_cpu_seconds"}


def untimed(obj: Any) -> Any:
    """``obj`` (nested dicts and lists) without the keys in :data:`TIMING`."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj
