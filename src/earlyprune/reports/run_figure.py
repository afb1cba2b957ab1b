"""The picture of one run: what a user wants to see after ``earlyprune train``.

Four panels over the run's epochs (numbered from 0, integer ticks), the pruning epoch shaded in each:

1. training loss per epoch;
2. test accuracy per epoch (epochs that were not evaluated, ``--eval-every``, are skipped) and training accuracy;
3. the Early Pruning Indicator at the run's ratio during the dense epochs, with the ``epi`` threshold τ and the
   epoch at whose end the policy fired;
4. seconds per epoch (training only, evaluation excluded) coloured by phase, with the medians before and after
   pruning and their ratio.

The title says whether the run pruned — and why not, when it removed nothing. Drawn on a
:class:`matplotlib.figure.Figure` (no pyplot state); matplotlib is the ``report`` extra.
"""

from __future__ import annotations

import re
import statistics
import textwrap
from pathlib import Path
from typing import Any

from ..core.validation import InvalidParameterError
from ..training.config import ratio_text
from .runs import Run

PHASE_COLOURS = {"dense": "#4C72B0", "pruning": "#DD8452", "sparse": "#55A868"}
DPI = 130


def run_tau(run: Run) -> tuple[float | None, str]:
    """τ that ``epi`` uses (or would use) for this run, and where it comes from."""
    from ..criteria import CRITERIA
    from ..policies.epi import EPI

    m = re.match(r"\s*epi:.*\btau=([0-9.]+)", run.policy)
    if m:
        return float(m.group(1)), "this run's epi threshold"
    name = run.criterion.partition(":")[0].strip()
    family = getattr(CRITERIA.get(name), "family", None) if name in CRITERIA else None
    tau = EPI.TAU.get(family) if isinstance(family, str) else None
    own = run.policy.partition(":")[0].strip() == "epi"
    return tau, ("this run's epi threshold" if own else f"τ of epi for {family} criteria (not this run's policy)")


def _shade_pruning(ax: Any, run: Run) -> None:
    epoch = run.prune_epoch
    if epoch is not None:
        ax.axvspan(epoch - 0.5, epoch + 0.5, color=PHASE_COLOURS["pruning"], alpha=0.18, lw=0,
                   label=f"pruning epoch ({epoch})")


def _epochs_axis(ax: Any, n_epochs: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(-0.6, max(n_epochs - 1, 0) + 0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (numbered from 0)")
    ax.grid(alpha=0.3)


def _legend(ax: Any) -> None:
    handles, names = ax.get_legend_handles_labels()
    if handles:
        unique = dict(zip(names, handles))
        # two columns of wrapped labels: a legend wider than its panel is clipped or runs into the next one
        ax.legend(list(unique.values()), [textwrap.fill(k, 38) for k in unique], fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)


def headline(run: Run) -> str:
    """Whether and when the run pruned, in one line (the figure's subtitle)."""
    summary = run.summary or {}
    params = summary.get("params") or {}
    if run.pruned is False:
        return textwrap.fill("NOT PRUNED — " + (run.not_pruned_reason or ""), width=130)
    if run.prune_epoch is None:
        return "not pruned yet (run unfinished)"
    parts = []
    if params.get("reduction"):
        parts.append(f"{params['reduction']:.0%} of the parameters removed")
    if summary.get("granularity") in ("weights", "both") and summary.get("weight_sparsity") is not None:
        parts.append(f"{summary['weight_sparsity']:.0%} of the weights zeroed by masks")
    return f"pruned during epoch {run.prune_epoch}" + "".join(f", {p}" for p in parts)


def _ratio_text(run: Run) -> str:
    """The ratio the run pruned to: a time budget replaces the configured one when pruning starts."""
    summary = run.summary or {}
    budget = summary.get("time_budget") or {}
    ratio = summary.get("ratio")
    text = ratio_text(run.config, round(ratio, 3) if isinstance(ratio, float) else None)
    return text + (f" (chosen by --time-budget {budget['budget']:g})" if budget.get("budget") is not None
                   and budget.get("ratio") is not None else "")


def speed_note(run: Run) -> str:
    """The run's speed in the summary's words and numbers (one definition everywhere): the whole run against its
    dense-equivalent, and the measured per-step gain with its MACs-ideal bound."""
    summary = run.summary or {}
    if summary.get("granularity") == "weights":
        return "weights masked, not removed: no time saved (the epochs differ by noise and masking cost)"
    notes = []
    speedup = summary.get("speedup")
    if speedup:
        notes.append(f"run {speedup:.2f}× as fast as its dense-equivalent" if speedup >= 1 else
                     f"run {1 / speedup:.2f}× slower than its dense-equivalent (one-time costs, a short run)")
    gain = summary.get("gain") or {}
    if gain.get("measured_speedup"):
        notes.append(f"per step {gain['measured_speedup']:.2f}× measured (MACs-ideal "
                     f"{gain['macs_ideal_speedup']:.2f}×)")
    return ", ".join(notes)


def _data_text(run: Run) -> str:
    """The dataset with the subsets used (a 30 % on 1,500 images is not a 30 % on CIFAR-10)."""
    c = run.config
    name = str(c.get("dataset", "?"))
    if name.startswith("folder:"):
        name = "folder:" + Path(name[len("folder:"):]).name
    subsets = [f"{c[k]:,} {k.split('_')[0]} images" for k in ("train_subset", "test_subset") if c.get(k)]
    return name + (f" ({', '.join(subsets)})" if subsets else "")


def draw_run(run: Run, path: str | Path) -> Path:
    """Write the picture of ``run`` to ``path`` (PNG) and return the path: loss, accuracy, EPI and seconds per
    epoch, one panel each, under a title that says whether the run pruned."""
    from .plots import _matplotlib

    Figure = _matplotlib()
    if not run.rows:
        raise InvalidParameterError(f"{run.path} has no finished epoch yet: nothing to draw")
    n = max(int(r["epoch"]) for r in run.rows) + 1
    fig = Figure(figsize=(12.5, 8.4), layout="constrained")
    axes = fig.subplots(2, 2)
    c = run.config
    fig.suptitle(f"{run.name}: {c.get('model')} on {_data_text(run)}, criterion {run.criterion}, policy "
                 f"{run.policy}, ratio {_ratio_text(run)}\n{headline(run)}",
                 fontsize=11)
    for panel, ax in ((_loss_panel, axes[0][0]), (_accuracy_panel, axes[0][1]), (_epi_panel, axes[1][0]),
                      (_seconds_panel, axes[1][1])):
        panel(ax, run, n)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _loss_panel(ax: Any, run: Run, n: int) -> None:
    """Training loss (mean over the epoch's batches) and test loss per epoch."""
    rows = run.rows
    _shade_pruning(ax, run)
    loss = [(int(r["epoch"]), r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    if loss:
        ax.plot(*zip(*loss), "-o", ms=3.5, color="black", label="training loss")
    test = [(int(r["epoch"]), r["test_loss"]) for r in rows if r.get("test_loss") is not None]
    if test:
        ax.plot(*zip(*test), "--s", ms=3.5, color="0.45", label="test loss")
    ax.set_ylabel("cross-entropy")
    ax.set_title("loss per epoch (training: mean over the epoch's batches)", fontsize=10)
    _epochs_axis(ax, n)
    _legend(ax)



def _accuracy_panel(ax: Any, run: Run, n: int) -> None:
    """Test accuracy (with the final value) and training accuracy per epoch."""
    rows = run.rows
    _shade_pruning(ax, run)
    acc = [(int(r["epoch"]), 100 * r["test_accuracy"]) for r in rows if r.get("test_accuracy") is not None]
    if acc:
        ax.plot(*zip(*acc), "-o", ms=4, color="#C44E52", label="test accuracy")
        last_e, last_a = acc[-1]
        ax.annotate(f"final {last_a:.2f}%", (last_e, last_a), textcoords="offset points", xytext=(0, -14),
                    ha="right", fontsize=8, color="#C44E52")
    train = [(int(r["epoch"]), 100 * r["train_accuracy"]) for r in rows if r.get("train_accuracy") is not None]
    if train:
        ax.plot(*zip(*train), ":", color="0.4", label="training accuracy (augmented batches)")
    ax.set_ylabel("top-1 accuracy (%)")
    skipped = len(rows) - len(acc)
    ax.set_title("accuracy per epoch" + (f" ({skipped} epoch(s) not evaluated)" if skipped else ""), fontsize=10)
    _epochs_axis(ax, n)
    _legend(ax)



def _epi_panel(ax: Any, run: Run, n: int) -> None:
    """EPI at the run's ratio during the dense epochs, the threshold τ and when the policy fired."""
    rows = run.rows
    curve = run.epi_curve(run.ratio)
    tau, tau_source = run_tau(run)
    trigger = next((int(r["epoch"]) for r in rows if (r.get("pruner") or {}).get("trigger")), None)
    _shade_pruning(ax, run)
    if curve:
        ax.plot(*zip(*curve), "-o", ms=4, color="#8172B2", label=f"EPI at ratio {run.ratio:g}")
    if tau is not None:
        ax.axhline(tau, color="black", ls="--", lw=1.1, label=f"τ = {tau:g} ({tau_source})")
    if trigger is not None:
        reason = (rows[trigger].get("pruner") or {}).get("trigger_reason") if trigger < len(rows) else None
        ax.axvline(trigger, color="0.25", ls=":", lw=1.2,
                   label=f"policy fired after epoch {trigger}" + (f" ({reason})" if reason else ""))
    if not curve:
        ax.text(0.5, 0.5, textwrap.fill("no EPI value recorded: EPI compares an epoch's structure with earlier "
                                        "ones, so it starts at epoch 1 (pruning started before, or signals were "
                                        "not recorded)", 60), transform=ax.transAxes,
                ha="center", va="center", fontsize=8, color="0.35")
    else:
        low = min(v for _, v in curve)
        ax.set_ylim(min(low, tau if tau is not None else low) - 0.02, 1.005)
        if curve[0][0] > 0:
            ax.text(0.02, 0.03, f"EPI starts at epoch {curve[0][0]}: it compares with earlier epochs",
                    transform=ax.transAxes, fontsize=8, color="0.35")
    ax.set_ylabel("EPI (structure stability)")
    ax.set_title("Early Pruning Indicator during the dense epochs", fontsize=10)
    # EPI exists for dense epochs only: show them and the pruning epoch, not the sparse tail
    last_dense = max([e for e, _ in curve] + [trigger if trigger is not None else 0,
                                               run.prune_epoch if run.prune_epoch is not None else n - 1])
    _epochs_axis(ax, min(n, max(last_dense + 2, 3)))
    _legend(ax)



def _seconds_panel(ax: Any, run: Run, n: int) -> None:
    """Seconds per epoch by phase, the pruning steps' share, the phase medians and the run's speed."""
    from ..training.summary import epoch_seconds, phase_seconds

    rows = run.rows
    epochs = [int(r["epoch"]) for r in rows]
    secs = [epoch_seconds(r) if r.get("seconds") is not None else 0.0 for r in rows]
    phases = [r.get("phase", "dense") for r in rows]
    steps = [sum(float(e.get("seconds", 0.0)) for e in r.get("events") or []) for r in rows]
    for phase, colour in PHASE_COLOURS.items():
        xs = [e for e, p in zip(epochs, phases) if p == phase]
        if xs:
            ax.bar(xs, [s - t for s, t, p in zip(secs, steps, phases) if p == phase], color=colour, width=0.7,
                   label=phase)
    stepped = [(e, s, t) for e, s, t in zip(epochs, secs, steps) if t > 0]
    if stepped:  # the pruning steps (scoring, removal, round_to="auto"'s timing) on top of the training
        ax.bar([e for e, _, _ in stepped], [t for *_, t in stepped], bottom=[s - t for _, s, t in stepped],
               color="white", edgecolor="0.3", hatch="///", width=0.7,
               label="of which pruning steps")
    dense, sparse = phase_seconds(rows)  # the medians `earlyprune info` prints (dense: warm-up epoch 0 left out)
    for med, colour, name in ((dense, PHASE_COLOURS["dense"], "dense"), (sparse, PHASE_COLOURS["sparse"], "pruned")):
        if med is not None:
            ax.axhline(med, color=colour, ls="--", lw=1, label=f"{name} median {med:.2f} s")
    note = [textwrap.fill(speed_note(run), 70)] if speed_note(run) else []
    loads = [float(r["load_average"]) for r in rows if r.get("load_average") is not None]
    cpus = (run.summary or {}).get("cpu_count")
    if loads and cpus and statistics.median(loads) > cpus:
        ax.text(0.02, 0.97, f"machine busy: load average {statistics.median(loads):.1f} on {cpus} CPUs —\n"
                f"other jobs slowed these times", transform=ax.transAxes, va="top", fontsize=8, color="#C44E52")
    ax.set_ylabel("seconds (training only)")
    ax.set_title("seconds per epoch" + ("\n" + ", ".join(note) if note else ""), fontsize=10)
    ax.set_ylim(0, max(secs) * 1.25 if secs and max(secs) > 0 else 1)
    _epochs_axis(ax, n)
    _legend(ax)
