"""Every script in examples/ runs, at a tiny size, as a user would start it (see examples/README.md)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def _requires(script: Path) -> list[str]:
    match = re.search(r"^# requires:\s*(.+)$", script.read_text(encoding="utf-8"), flags=re.M)
    return [name.strip() for name in match.group(1).split(",")] if match else []


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_runs_at_tiny_size(script, tmp_path):
    missing = [name for name in _requires(script) if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)}")
    env = {**os.environ, "EARLYPRUNE_EXAMPLE_TINY": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
