"""``earlyprune compare``: policies against the oracle grid over ratios and criteria (PaT Tables 1, 4 and 5).

The plan, per criterion and ratio: the oracle grid (``epoch:K`` for every K of ``oracle_epochs``), then each
policy. Fixed-epoch policies reuse grid runs (``init`` is ``epoch:0``; ``random:A-B`` is drawn ``repeats`` times
with seeds 0…n−1 and each draw is the ``epoch:K`` run it picked — trained once, shared with the grid);
signal-driven policies (``epi``, ``earlycrop``, ``earlybird``) get a run each. ``ltr`` (or ``ltr:rounds=R,rewind=K``)
is Lottery Ticket Rewinding, run with ``--lottery-rounds`` at the ratio as weight sparsity — compare it with runs at
``--granularity weights``. ``POLICY@CRITERION`` pins a
policy to its own criterion (``before@snip``: 3SP, ``before@crop``: CroP), run once per ratio and shown in
every criterion's table; a bare ``before`` becomes ``before:STEPS`` (one fresh batch per pruning step, as
CroPit / SNAP-it). One dense run (``never``) per criterion gives the reference accuracy and time, and the EPI
curves of the whole training. The manifest ``compare.json`` records which run answers which cell; the tables go
to ``compare.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.errors import ConfigError
from ..core.validation import POSITIVE_INT
from ..reports.comparison import DENSE, ORACLE, POLICY, is_automatic, write_manifest
from ..training.config import TrainConfig
from .plan import RunSpec, check_prune_epochs, check_ratios, fixed_epoch_spec, make_spec
from .runner import run_all
from .sweep import grid_root

COMPARE_MD = "compare.md"


def default_policies(epochs: int) -> list[str]:
    """PaT's comparison scaled to ``epochs``: its pre-defined epoch and random range end at 30 of 90 epochs."""
    k = max(1, round(epochs / 3))
    return ["init", f"epoch:{k}", f"random:0-{k}", "epi", "earlycrop", "earlybird"]


def default_oracle_epochs(epochs: int) -> list[int]:
    """0, 1, 2, 4, 8, … up to a third of the run (PaT's early-pruning range: 30 of 90 epochs)."""
    last = max(1, round(epochs / 3))
    grid, k = {0, last}, 1
    while k < last:
        grid.add(k)
        k *= 2
    return sorted(e for e in grid if e < epochs)


#: the Lottery Ticket Rewinding baseline's label in ``--policies`` (not a when-to-prune policy: a training procedure)
LTR = "ltr"


def lottery_options(spec: str, ratio: float) -> tuple[int, int]:
    """``ltr`` / ``ltr:rounds=R,rewind=K`` → ``(R, K)``. Default R: the rounds that Frankle et al.'s 20 % per round
    takes to reach ``ratio``, at most 10 (EarlyCroP: LTR "re-trains the network up to 10 times"); K = 1."""
    from ..policies.base import parse_options

    options = parse_options(LTR, spec.partition(":")[2], {"rounds": int, "rewind": int}) if ":" in spec else {}
    rounds = options.get("rounds", min(10, max(1, math.ceil(math.log(1 - ratio) / math.log(0.8)))))
    rewind = options.get("rewind", 1)
    if rounds < 1 or rewind < 0:
        raise ConfigError(f"--policies {spec}: rounds must be ≥ 1 and rewind ≥ 0")
    return rounds, rewind


def split_policy(entry: str) -> tuple[str, str | None]:
    """``"before@snip"`` → ``("before", "snip")``; ``"epi"`` → ``("epi", None)``."""
    policy, at, criterion = entry.partition("@")
    if at and (not policy.strip() or not criterion.strip()):
        raise ConfigError(f"--policies entry {entry!r}: write POLICY or POLICY@CRITERION, e.g. before@snip")
    return policy.strip(), criterion.strip() if at else None


def _draws(spec: str, repeats: int) -> list[tuple[int, int]]:
    """(seed, epoch) of each draw of ``random:A-B`` (``random:A-B,seed=S``: that one draw)."""
    from ..policies import POLICIES

    if "seed=" in spec:
        return [(-1, POLICIES.build(spec).epoch)]  # type: ignore[attr-defined]
    base = spec if ":" in spec else "random:0-30"
    return [(s, POLICIES.build(f"{base},seed={s}").epoch) for s in range(repeats)]  # type: ignore[attr-defined]


@dataclass
class ComparePlan:
    """Every run of a comparison and the manifest that maps them to table cells."""

    root: Path
    specs: list[RunSpec] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    def add(self, spec: RunSpec) -> str:
        if spec.path not in {s.path for s in self.specs}:
            self.specs.append(spec)
        return spec.name


def plan_comparison(base: TrainConfig, *, policies: Sequence[str] | None = None,
                    ratios: Sequence[float] | None = None, criteria: Sequence[str] | None = None,
                    repeats: int = 5, oracle_epochs: Sequence[int] | None = None, dense: bool = True,
                    root: Path | None = None) -> ComparePlan:
    """The runs of a comparison (validated up front: a bad policy or criterion fails before any training)."""
    base = base.validate()
    POSITIVE_INT.check("--repeats", repeats, flag=True)
    policies = list(dict.fromkeys(policies or default_policies(base.epochs)))
    ratios = check_ratios(list(ratios) if ratios else [base.ratio])
    criteria = list(dict.fromkeys(criteria or [base.criterion]))
    grid = check_prune_epochs(list(oracle_epochs) if oracle_epochs is not None else
                              default_oracle_epochs(base.epochs), base.epochs, "--oracle-epochs")
    plan = ComparePlan(root if root is not None else grid_root(base, "compare"))
    cells: list[dict[str, Any]] = []

    if dense:
        for c in criteria:
            spec = make_spec(base, plan.root, criterion=c, ratio=ratios[0], policy="never", what="dense",
                             with_ratio=False)
            cells.append({"kind": DENSE, "label": "dense", "criterion": c, "ratio": None, "runs": [plan.add(spec)]})
    for c in criteria:
        for r in ratios:
            for e in grid:
                spec = fixed_epoch_spec(base, plan.root, c, r, e)
                cells.append({"kind": ORACLE, "label": f"epoch:{e}", "criterion": c, "ratio": r, "epoch": e,
                              "automatic": False, "runs": [plan.add(spec)]})
    labels = []
    for entry in policies:
        policy, pinned = split_policy(entry)
        name = policy.partition(":")[0]
        if name == LTR:
            lottery_options(policy, ratios[0])  # a bad option fails before any training
        elif is_automatic(policy) is None:
            from ..policies import POLICIES

            POLICIES.get(name)  # raises "unknown policy …; available: …"
        labels.append(entry)
        for c in criteria:
            for r in ratios:
                crit = pinned or c
                cell: dict[str, Any] = {"kind": POLICY, "label": entry, "criterion": c, "ratio": r,
                                        "automatic": is_automatic(policy)}
                if name == "random":
                    draws = _draws(policy, repeats)
                    cell["draws"] = [e for _, e in draws]
                    cell["runs"] = [plan.add(fixed_epoch_spec(base, plan.root, crit, r, e)) for _, e in draws]
                    check_prune_epochs(cell["draws"], base.epochs, f"--policies {entry}")
                elif name == LTR:
                    rounds, rewind = lottery_options(policy, r)
                    check_prune_epochs([rewind], base.epochs, f"--policies {entry} (rewind)")
                    spec = make_spec(replace(base, lottery_rounds=rounds, lottery_rewind=rewind), plan.root,
                                     criterion="magnitude", ratio=r, policy="never", what=f"ltr{rounds}-k{rewind}")
                    cell["runs"] = [plan.add(spec)]
                elif name in ("init", "epoch"):
                    e = 0 if name == "init" else int(policy.partition(":")[2])
                    check_prune_epochs([e], base.epochs, f"--policies {entry}")
                    cell["runs"] = [plan.add(fixed_epoch_spec(base, plan.root, crit, r, e))]
                else:
                    spec_policy = f"before:{base.steps}" if policy == "before" else policy
                    spec = make_spec(base, plan.root, criterion=crit, ratio=r, policy=spec_policy, what=policy)
                    cell["runs"] = [plan.add(spec)]
                cells.append(cell)
    plan.manifest = {
        "title": f"{base.model} on {base.dataset}, {base.epochs} epochs, ratio of {base.target}",
        "criteria": criteria, "ratios": ratios, "labels": labels, "policies": policies, "repeats": repeats,
        "oracle_epochs": grid, "base": {k: v for k, v in base.to_dict().items() if k not in ("name", "out_dir")},
        "notes": [f"Oracle: the best of pruning at epochs {', '.join(map(str, grid))} (grid search), every run "
                  f"trained to epoch {base.epochs}. `random` is averaged over {repeats} draws."],
        "cells": cells,
    }
    return plan


def compare(base: TrainConfig, *, policies: Sequence[str] | None = None, ratios: Sequence[float] | None = None,
            criteria: Sequence[str] | None = None, repeats: int = 5, oracle_epochs: Sequence[int] | None = None,
            dense: bool = True, energy: bool = False, country: str = "USA", plots: bool = True,
            dry_run: bool = False, isolate: bool = False, log: Callable[[str], None] = print) -> ComparePlan:
    """Plan, train what is not yet complete, and write ``compare.json`` + ``compare.md`` (and the figures).
    ``isolate`` trains each run in a child process (see :func:`~.runner.ensure_run`)."""
    from ..reports.report import build_report
    from .runner import state

    plan = plan_comparison(base, policies=policies, ratios=ratios, criteria=criteria, repeats=repeats,
                           oracle_epochs=oracle_epochs, dense=dense)
    if dry_run:
        for spec in plan.specs:
            log(f"{state(spec):>9}  {spec.path}  (criterion {spec.config.criterion}, ratio {spec.config.ratio}, "
                f"policy {spec.config.policy})")
        log(f"{len(plan.specs)} runs planned in {plan.root}")
        return plan
    plan.root.mkdir(parents=True, exist_ok=True)
    write_manifest(plan.root, plan.manifest)  # first: a comparison cut short can still be reported
    counts = run_all(plan.specs, energy=energy, country=country, isolate=isolate, log=log)
    build_report([plan.root], plan.root, plots=plots, title=f"Policy comparison: {plan.manifest['title']}",
                 filename=COMPARE_MD)
    log(f"compare: {len(plan.specs)} runs in {plan.root} ({counts['trained']} trained, {counts['resumed']} resumed, "
        f"{counts['skipped']} already complete); tables in {plan.root / COMPARE_MD}")
    return plan
