"""Energy and CO₂ of a run through ``codecarbon`` — optional: used only when it is installed.

codecarbon's offline tracker estimates the energy of the CPU, GPU and RAM while a run trains, and the CO₂ from the
country's carbon intensity (``--country``, ISO 3166 alpha-3). The totals go to ``energy.json`` in the run
directory, summed over the invocations of a resumed run.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import ConfigError, MissingDependencyError
from ..reports.runs import ENERGY
from ..training.checkpoint import write_json_atomic

MODES = ("auto", "on", "off")


def available() -> bool:
    return importlib.util.find_spec("codecarbon") is not None


def enabled(mode: str) -> bool:
    """Whether to measure: ``on`` requires codecarbon, ``auto`` uses it when installed, ``off`` never."""
    if mode not in MODES:
        raise ConfigError(f"--energy must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "on" and not available():
        raise MissingDependencyError("--energy on needs codecarbon: pip install codecarbon (or use --energy auto/off)")
    return mode == "on" or (mode == "auto" and available())


@contextmanager
def measure_energy(active: bool, country: str = "USA") -> Iterator[dict[str, Any]]:
    """Track the block; afterwards the yielded dict holds ``kwh`` and ``co2_kg`` (empty when not active)."""
    result: dict[str, Any] = {}
    if not active:
        yield result
        return
    import codecarbon

    tracker = codecarbon.OfflineEmissionsTracker(country_iso_code=country, save_to_file=False, log_level="error")
    tracker.start()
    try:
        yield result
    finally:
        co2 = tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        result.update(kwh=float(getattr(data, "energy_consumed", 0.0) or 0.0), co2_kg=float(co2 or 0.0),
                      source=f"codecarbon {getattr(codecarbon, '__version__', '?')} (offline, {country})")


def add_energy(run_dir: Path, measured: dict[str, Any]) -> None:
    """Add one invocation's energy to ``energy.json``."""
    if not measured:
        return
    path = run_dir / ENERGY
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"kwh": 0.0, "co2_kg": 0.0,
                                                                                  "invocations": 0}
    write_json_atomic(path, {"kwh": old["kwh"] + measured["kwh"], "co2_kg": old["co2_kg"] + measured["co2_kg"],
                             "invocations": old.get("invocations", 0) + 1, "source": measured["source"]})
