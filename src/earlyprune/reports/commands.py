"""The ``earlyprune report`` subcommand (the parser lives in :mod:`earlyprune.cli`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="Markdown tables and PNG plots of run directories",
                       description="Read run directories (written by `earlyprune train`, `sweep` or `compare`; "
                                   "folders of them and compare directories work too) and write OUT/report.md "
                                   "with PaT-style tables — policy comparison with the oracle grid, costs — and "
                                   "PNG figures: final accuracy vs prune epoch, EPI curves with τ, accuracy vs "
                                   "training time, EPI vs Kendall/Spearman. Missing or unfinished runs are "
                                   "listed, never silently dropped.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, folders of run directories, or "
                                                               "compare directories")
    p.add_argument("--out", default="report", metavar="DIR", help="where report.md and the PNGs go "
                                                                   "(default: ./report)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="tables only (no matplotlib needed)")
    p.add_argument("--title", default="earlyprune report", help="the report's heading")


def run_report(args: argparse.Namespace) -> int:
    from .report import build_report

    report = build_report(args.runs, args.out, plots=args.plots, title=args.title)
    print(f"{report.markdown}: {report.runs} run(s)" + (f", {len(report.plots)} figure(s)" if report.plots else ""))
    for line in report.missing:
        print(f"  missing: {line}")
    return 0
