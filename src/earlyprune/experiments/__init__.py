"""Experiments built on the trainer: the oracle grid (``sweep``) and policy comparisons (``compare``).

``plan.py`` names and configures runs, ``runner.py`` makes each one exist (skip / resume / train),
``energy.py`` measures them with codecarbon when installed, ``sweep.py`` and ``compare.py`` plan the runs,
``commands.py`` is the CLI. Tables and figures come from :mod:`earlyprune.reports`.
"""

from .compare import compare, plan_comparison
from .sweep import sweep, sweep_specs

__all__ = ["compare", "plan_comparison", "sweep", "sweep_specs"]
