"""Reports of training runs: read run directories, build PaT-style Markdown tables and PNG figures.

Clients of the run directories only (``config.json``, ``metrics.jsonl``, ``summary.json``): ``runs.py`` reads
them, ``comparison.py`` arranges them by criterion, ratio and policy (with the oracle grid), ``tables.py`` and
``plots.py`` (matplotlib, optional) draw them, ``report.py`` writes ``report.md``.
"""

from .comparison import Cell, Comparison, infer_comparisons, load_comparison
from .report import Report, build_report
from .runs import MissingRun, Run, RunError, collect, load_run

__all__ = ["Cell", "Comparison", "MissingRun", "Report", "Run", "RunError", "build_report", "collect",
           "infer_comparisons", "load_comparison", "load_run"]
