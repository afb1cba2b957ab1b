import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# the test networks are tiny: one intra-op thread avoids oversubscription on small CI machines
torch.set_num_threads(1)
# layer timings stay in each test process (and its children): no test reads or writes the user's per-machine cache
os.environ.setdefault("EARLYPRUNE_LATENCY_CACHE", "off")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fresh_latency_cache():
    """The process-wide layer-timing cache emptied before and after a test (fake clocks must not meet real ones)."""
    from earlyprune.criteria.latency import clear_cache

    clear_cache()
    yield
    clear_cache()


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.slow`` tests (long fuzzing profiles, sweeps) run only when asked for with ``-m slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: opt in with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
