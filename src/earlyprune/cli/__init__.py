"""The ``earlyprune`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from .. import __version__
from ..core.errors import ConfigError, EarlyPruneError
from ..core.argtypes import ratio, whole
from ..core.validation import TARGETS
from .experiment import add_compare_parser, add_sweep_parser, run_compare, run_sweep
from .report import add_report_parser, run_report
from .train import (add_info_parser, add_models_parser, add_train_parser, interrupted, run_info,
                                run_models, run_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="earlyprune", description="Prune whole channels early in training.")
    parser.add_argument("--version", action="version", version=f"earlyprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a small CNN on the bundled digits with early pruning (~30-60 s on "
                               "a CPU)",
                          description="Train a small CNN on scikit-learn's bundled 8x8 digits: dense until the "
                                      "policy triggers (epi capped at half the epochs), prune half of the measured "
                                      "training-step time during one epoch, "
                                      "train the smaller model on; then print what pruning gained. Runs the "
                                      "trainer of `earlyprune train`.")
    demo.add_argument("--epochs", type=whole(1, "epochs"), default=12, help="training epochs (default 12)")
    demo.add_argument("--ratio", type=ratio, default=0.5, help="fraction of the --target to remove (default 0.5)")
    demo.add_argument("--target", default="channels", choices=TARGETS,
                      help="what --ratio counts (default channels, PaT's; latency: the measured training-step time)")
    demo.add_argument("--prune-epoch", type=whole(0, "prune_epoch"), default=None,
                      help="prune during this epoch (the epoch:K policy) instead of the default policy")
    demo.add_argument("--policy", default=None, help="when-to-prune policy (default: epi capped at half the epochs, "
                                                            "epi:cap=6 for 12)")
    demo.add_argument("--out-dir", default=None, help="also write the run directory under this folder (default: "
                                                      "keep everything in memory)")
    demo.add_argument("--criterion", default="magnitude", help="importance criterion (default magnitude)")
    demo.add_argument("--steps", type=whole(1, "steps"), default=4, help="pruning steps within the epoch (default 4)")
    demo.add_argument("--width", type=whole(1, "width"), default=64, help="channels of the first layer (default 64)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quiet", action="store_true", help="print only the summary")
    add_train_parser(sub)
    add_models_parser(sub)
    add_info_parser(sub)
    add_sweep_parser(sub)
    add_compare_parser(sub)
    add_report_parser(sub)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from ..criteria import CRITERIA
    from .demo import run_demo, summary

    if args.criterion not in CRITERIA:
        raise ConfigError(f"unknown criterion {args.criterion!r}; choose one of {', '.join(CRITERIA.names())}")
    if args.prune_epoch is not None and args.policy is not None:
        raise ConfigError("--prune-epoch K is the policy epoch:K; pass --prune-epoch or --policy, not both")
    if args.prune_epoch is not None and args.prune_epoch >= args.epochs:
        raise ConfigError(f"--prune-epoch ({args.prune_epoch}) must be below --epochs ({args.epochs}) so the pruned "
                          f"model trains on")
    policy = f"epoch:{args.prune_epoch}" if args.prune_epoch is not None else args.policy
    result = run_demo(epochs=args.epochs, ratio=args.ratio, policy=policy, criterion=args.criterion,
                      steps=args.steps, width=args.width, seed=args.seed, out_dir=args.out_dir, target=args.target,
                      log=(lambda _msg: None) if args.quiet else print)
    print(summary(result))
    return 0


def _show_warning(command: str, message: Warning | str, category: type[Warning], quiet: bool) -> None:
    """A warning in the errors' shape (one line, no source location); none on a rank other than 0 (``quiet``),
    nor one the run's progress log already printed."""
    if quiet or getattr(category, "already_logged", False):
        return
    print(f"earlyprune {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # under torchrun every rank runs this: only rank 0 says warnings (the ranks decide alike, so the others would
    # repeat each one); errors are said by every rank that meets one
    quiet_rank = os.environ.get("RANK", "0").strip() not in ("", "0")
    logging.basicConfig(level=logging.ERROR if quiet_rank else logging.WARNING, format="%(message)s")
    commands = {"demo": _demo, "train": run_train, "models": run_models, "info": run_info, "sweep": run_sweep,
                "compare": run_compare, "report": run_report}
    try:
        with warnings.catch_warnings():  # warnings in the errors' shape: one line, no source location
            warnings.showwarning = lambda message, category, *_, **__: _show_warning(args.command, message,
                                                                                     category, quiet_rank)
            return commands[args.command](args)
    except (EarlyPruneError, ValueError, TypeError, OSError) as exc:  # user errors: one line, no stack trace
        message = " ".join(str(exc).split())
        print(f"earlyprune {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
