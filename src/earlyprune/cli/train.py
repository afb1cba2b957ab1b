"""The ``earlyprune train``, ``models`` and ``info`` subcommands (the parser lives in :mod:`earlyprune.cli`).

``train``'s flags are generated from :class:`~earlyprune.training.config.TrainConfig`, so every option of a
run is a flag and a ``--config`` key, with one help text. Flags default to "not given" so that the precedence
defaults < ``--config`` file < flags can be applied, and so that a resumed run knows which options were asked
to change.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..core.argtypes import parser
from ..core.errors import ConfigError
from ..core.validation import Each, Options, Rule
from ..training.config import (
    TrainConfig,
    check_file_values,
    field_rule,
    load_config_file,
    ratio_text,
)

GROUP_TITLES = {"model": "model", "data": "data", "optimisation": "optimisation", "pruning": "pruning (EarlyPruner)",
                "run": "run directory and output"}


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare string
    return key.strip(), value


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model with early pruning; writes runs/<name>/",
                       description="Train a model with early pruning: dense until the policy triggers, one epoch "
                                   "that prunes, then the smaller model to the end. Writes config.json, "
                                   "metrics.jsonl, summary.json, model.safetensors + structure.json and a checkpoint "
                                   "after every epoch to OUT_DIR/NAME.")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (keys as below, e.g. "
                                                    "batch_size: 256); flags override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint, or "
                                                       "from epoch 0 if it stopped before its first one (only run "
                                                       "options such as --progress may change)")
    p.add_argument("--allow-changed", metavar="SETTING,…", default=None,
                   help="with --resume: let these settings differ from the stored run (e.g. threads,batch-size); "
                        "without it a resume that would change the results (threads, device, PyTorch, data, any "
                        "training option) is refused with the list of differences. Recorded in summary.json")
    add_config_arguments(p)


def add_config_arguments(p: argparse.ArgumentParser, exclude: frozenset[str] = frozenset()) -> None:
    """One flag per :class:`TrainConfig` field (except ``exclude``), grouped, defaulting to "not given" — shared
    by ``train`` and the commands that run trainings (``sweep``, ``compare``)."""
    groups = {key: p.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = "" if default in (None, {}, []) else f" (default: {default})"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": meta["help"] + shown}
        group = groups[meta["group"]]
        if f.name in ("model_args", "pruner_args"):
            group.add_argument(flag.removesuffix("s"), dest=f.name, action="append", type=_key_value,
                               metavar="KEY=VALUE", **kw)
            continue
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if "bare" in meta:                  # e.g. --channels-last alone means "on"
            kw.update(nargs="?", const=meta["bare"])
        flag_rule = field_rule(f)   # the field's rule (earlyprune.core.validation) gives the flag's parser
        first = flag_rule.constraints[0]
        if isinstance(first, Options) and len(flag_rule.constraints) == 1:
            kw["choices"] = first.values   # argparse says "invalid choice: …" and lists them in --help
        elif isinstance(first, Each):       # a list flag: one value per word, each checked by the item's rule
            kw.update(nargs="+", type=parser(Rule((first.item,)), f.name), metavar=f.name.upper().rstrip("S"))
        else:
            kw["type"] = parser(flag_rule, f.name)
        group.add_argument(flag, **kw)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    for key in ("model_args", "pruner_args"):
        if key in values:
            values[key] = dict(values[key])
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The configuration of ``--config FILE`` (if given) with the flags applied on top (not yet validated)."""
    flags = _overrides(args)
    values = load_config_file(args.config) if getattr(args, "config", None) is not None else {}
    if values:
        check_file_values(values, str(args.config))
    values = {k.replace("-", "_"): v for k, v in values.items()}
    for key in ("model_args", "pruner_args"):
        if isinstance(values.get(key), dict) and key in flags:
            flags[key] = {**values[key], **flags[key]}
    return TrainConfig.from_dict({**values, **flags}, source=getattr(args, "config", None) or "flags")


def run_train(args: argparse.Namespace) -> int:
    from ..training.trainer import train

    if args.resume is not None:
        if args.config is not None:
            raise ConfigError("--config starts a new run; --resume continues a stored one: pass only one of them")
        result = train(resume=args.resume, overrides=_overrides(args), allow_changed=args.allow_changed)
    else:
        if args.allow_changed is not None:
            raise ConfigError("--allow-changed applies to --resume only (a new run has nothing to change)")
        result = train(config_from_args(args))
    from ..training.summary import format_summary

    if result.run_dir is not None and result.is_main:   # under torchrun: rank 0 only
        print(format_summary(result.summary, title=f"\n{result.run_dir}"))
        print(draw_run_figure(result.run_dir))
    return 0


def draw_run_figure(run_dir: Path) -> str:
    """Draw ``run_dir/run.png`` (the run's picture, as ``earlyprune report`` draws it) and say where it is — or,
    without matplotlib, how to get it. Never fails the run: the figure is a view of files already written."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return (f"{'figure':28}pip install 'earlyprune[report]' for a picture of the run "
                f"(then: earlyprune report {run_dir})")
    from ..reports.run_figure import draw_run
    from ..reports.runs import load_run

    try:
        path = draw_run(load_run(run_dir), Path(run_dir) / "run.png")
    except (ValueError, OSError) as exc:
        return f"{'figure':28}not drawn ({exc})"
    return f"{'figure':28}{path}  (loss, accuracy, EPI, seconds per epoch)"


def add_models_parser(sub: Any) -> None:
    sub.add_parser("models", help="list the models `earlyprune train --model` accepts",
                   description="List the registered models, and whether tv:<name> (torchvision) and timm:<name> "
                               "(timm) models are available.")


def run_models(args: argparse.Namespace) -> int:
    import importlib.util

    from ..models import DESCRIPTIONS, MODELS

    width = max(len(n) for n in MODELS) + 2
    for name in sorted(MODELS, key=lambda n: (n.rstrip("0123456789"), len(n), n)):
        print(f"{name:<{width}}{DESCRIPTIONS.get(name, '')}")
    for prefix, package in (("tv", "torchvision"), ("timm", "timm")):
        found = importlib.util.find_spec(package) is not None
        state = "available" if found else f"needs `pip install {package}`"
        print(f"{prefix + ':<name>':<{width}}any {package} classification model, built without weights ({state})")
    return 0


def add_info_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="print the summary of a run directory",
                       description="Print what a training run gained (summary.json), or how far an unfinished run "
                                   "got.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `earlyprune train`, e.g. runs/<name>")
    p.add_argument("--json", action="store_true", help="print summary.json as is")


def run_info(args: argparse.Namespace) -> int:
    from ..training import rundir
    from ..training.summary import epoch_seconds, format_summary

    run_dir = Path(args.run_dir)
    cfg = rundir.read_config(run_dir)
    summary = rundir.read_summary(run_dir)
    rows = rundir.read_metrics(run_dir)
    if args.json:
        print(json.dumps(summary if summary is not None else {"complete": False, "epochs": len(rows)}, indent=1))
        return 0
    ratio = (summary or {}).get("ratio") or cfg.ratio   # --time-budget replaces the ratio when pruning starts
    budget = f" (time budget {cfg.time_budget:.0%})" if getattr(cfg, "time_budget", None) else ""
    precision = ((summary or {}).get("speed_settings") or {}).get("precision") or cfg.precision
    print(f"{run_dir}: {cfg.model} on {cfg.dataset}, criterion {cfg.criterion}, policy {cfg.policy}, "
          f"ratio {ratio_text(cfg, ratio)}{budget}, {cfg.epochs} epochs, {precision}")
    if summary is not None and summary.get("epochs") == len(rows):
        print(format_summary(summary))
        return 0
    print(f"incomplete: {len(rows)} of {cfg.epochs} epochs done (epochs 0–{len(rows) - 1}); continue with "
          f"`earlyprune train --resume {run_dir}`" if rows else
          f"incomplete: no epoch done yet; continue with `earlyprune train --resume {run_dir}`")
    for r in rows[-5:]:
        acc = "   n/a" if r.get("test_accuracy") is None else f"{r['test_accuracy']:6.2%}"
        print(f"  epoch {r['epoch']:3d} {r['phase']:<7} test acc {acc}  {epoch_seconds(r):6.1f}s  params {r['params']:,}")
    return 0


def interrupted(args: argparse.Namespace) -> int:
    print(f"\nearlyprune {args.command}: interrupted; the last completed epoch's checkpoint is kept "
          f"(continue with `earlyprune train --resume <run dir>`)", file=sys.stderr)
    return 130
