"""The ``earlyprune report`` subcommand (the parser lives in :mod:`earlyprune.cli`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="Markdown tables and PNG plots of run directories",
                       description="Read run directories (written by `earlyprune train`, `sweep` or `compare`; "
                                   "folders of them and compare directories work too) and write OUT/report.md. "
                                   "Each run directory named here gets its own picture (loss and accuracy per "
                                   "epoch with the pruning epoch marked, EPI with τ, seconds per epoch before and "
                                   "after pruning). Two runs or more are compared: PaT-style tables — policy "
                                   "comparison with the oracle grid, costs — and figures: final accuracy vs prune "
                                   "epoch, EPI curves with τ, accuracy vs training time, EPI vs Kendall/Spearman. "
                                   "Missing or unfinished runs are listed, never silently dropped; runs are never "
                                   "averaged unless they repeat a declared seed (random:A-B,seed=S) or you pass "
                                   "--aggregate.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, folders of run directories, or "
                                                               "compare directories")
    p.add_argument("--out", default="report", metavar="DIR", help="where report.md and the PNGs go "
                                                                   "(default: ./report)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="tables only (no matplotlib needed)")
    p.add_argument("--title", default="earlyprune report", help="the report's heading")
    p.add_argument("--aggregate", action="store_true",
                   help="average runs that differ only by --seed (and identical repeats); cells show mean ± sd and "
                        "n. Default: every run is its own point")


def run_report(args: argparse.Namespace) -> int:
    from ..reports.report import build_report

    report = build_report(args.runs, args.out, plots=args.plots, title=args.title, aggregate=args.aggregate)
    print(f"{report.markdown}: {report.runs} run(s)" + (f", {len(report.plots)} figure(s)" if report.plots else ""))
    for line in report.missing:
        print(f"  missing: {line}")
    return 0
