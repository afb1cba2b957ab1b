"""The ``earlyprune sweep`` and ``compare`` subcommands (the parser lives in :mod:`earlyprune.cli`).

Both take every option of ``earlyprune train`` (flags and ``--config FILE``) as the base configuration; the
options they vary themselves — policy, ratio, criterion — are replaced by list flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..core.argtypes import whole
from ..experiments import energy
from .train import add_config_arguments, config_from_args

#: train options that sweep / compare set per run
VARIED = frozenset({"policy", "ratio", "criterion", "stop_after"})


def _common(p: argparse.ArgumentParser, default_name: str) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of train options (the base configuration); "
                                                    "flags override it")
    p.add_argument("--ratios", nargs="+", metavar="RATIO", help="pruning ratios, e.g. 0.3 0.5 0.7 or 0.3,0.5,0.7 "
                                                                "(default: the config's ratio, 0.5)")
    p.add_argument("--criteria", nargs="+", metavar="CRITERION", help="importance criteria, e.g. magnitude "
                                                                      "taylor (default: the config's, magnitude)")
    p.add_argument("--energy", choices=energy.MODES, default="auto",
                   help="measure energy and CO2 with codecarbon: auto (when installed, default), on, off")
    p.add_argument("--country", default="USA", metavar="ISO3",
                   help="country whose carbon intensity converts energy to CO2 (default USA)")
    p.add_argument("--in-process", dest="isolate", action="store_false",
                   help="train in this process instead of one child process per run (faster start; but on a CPU "
                        "the peak-memory column then holds the largest run so far)")
    add_config_arguments(p, exclude=VARIED)
    p.set_defaults(default_name=default_name)


def add_sweep_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="the oracle grid: one configuration pruned at each epoch of a list",
                       description="Train the same configuration once per pruning epoch (policy epoch:K), every run "
                                   "to the same final epoch, for each ratio and criterion: the oracle grid search of "
                                   "PaT. Run directories go to OUT_DIR/NAME/<criterion>-r<ratio>-epoch<K>; finished "
                                   "runs are skipped and interrupted ones resumed, so rerun the same command to "
                                   "continue. Then `earlyprune report OUT_DIR/NAME`.")
    p.add_argument("--prune-epochs", nargs="+", required=True, metavar="K",
                   help="epochs at which pruning starts, e.g. 0 2 4 8 12 or 0,2,4,8,12 (each below --epochs)")
    _common(p, "sweep")


def add_compare_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare when-to-prune policies with the oracle grid (PaT Tables 1/4/5)",
                       description="Run each policy over the ratios and criteria, plus the oracle grid (epoch:K for "
                                   "each --oracle-epochs) and a dense run, then write OUT_DIR/NAME/compare.md: top-1 "
                                   "per policy with its prune epoch, the gap to the oracle, whether the policy is "
                                   "automatic, and the costs (time, speedup, MACs, parameters, sparsity, memory, "
                                   "model size, energy/CO2 with codecarbon), plus PNG figures. init, epoch:K and "
                                   "each random draw reuse the grid's runs; rerun to resume.")
    p.add_argument("--policies", nargs="+", metavar="POLICY",
                   help="policies to compare; POLICY@CRITERION pins a criterion (before@snip). Default, scaled to "
                        "--epochs E: init epoch:E/3 random:0-E/3 epi earlycrop earlybird")
    p.add_argument("--repeats", type=whole(1, "repeats"), default=5,
                   help="draws of each random policy, averaged (default 5; PaT: 100)")
    p.add_argument("--oracle-epochs", nargs="+", metavar="K", help="the oracle grid's prune epochs (default 0, 1, "
                                                                   "2, 4, … up to E/3)")
    p.add_argument("--no-dense", dest="dense", action="store_false", help="skip the dense reference runs")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="tables only (no matplotlib needed)")
    p.add_argument("--dry-run", action="store_true", help="list the planned runs and their state; train nothing")
    _common(p, "compare")


def _base(args: argparse.Namespace) -> tuple[Any, list[float] | None, list[str] | None]:
    from ..experiments.plan import parse_numbers

    base = config_from_args(args)
    if base.name is None:
        base.name = args.default_name
    ratios = parse_numbers(args.ratios, float, "--ratios") if args.ratios else None
    criteria = [c for token in args.criteria for c in token.split(",") if c] if args.criteria else None
    return base, ratios, criteria


def run_sweep(args: argparse.Namespace) -> int:
    from ..experiments.plan import parse_numbers
    from ..experiments.sweep import sweep

    base, ratios, criteria = _base(args)
    epochs = parse_numbers(args.prune_epochs, int, "--prune-epochs")
    sweep(base, epochs, ratios=ratios, criteria=criteria, energy=energy.enabled(args.energy), country=args.country,
          isolate=args.isolate)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ..experiments.compare import compare
    from ..experiments.plan import parse_numbers

    base, ratios, criteria = _base(args)
    oracle = parse_numbers(args.oracle_epochs, int, "--oracle-epochs") if args.oracle_epochs else None
    compare(base, policies=args.policies, ratios=ratios, criteria=criteria, repeats=args.repeats,
            oracle_epochs=oracle, dense=args.dense, energy=energy.enabled(args.energy), country=args.country,
            plots=args.plots, dry_run=args.dry_run, isolate=args.isolate)
    return 0
