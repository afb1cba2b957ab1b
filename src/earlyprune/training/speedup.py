"""Speed settings, the phase that makes a run's steps fast and says what pruning gained.

Before training: ``--precision`` / ``--channels-last`` resolved on the built model (:func:`resolve_speed`), and a
``--speed-profile``'s earlier measurements handed to the pruner (:func:`apply_profile`). After the pruning epoch:
the per-step gain timed against the dense copy (:func:`time_gain`) and the ``--compile`` decision
(:func:`compile_pruned`). At the end, the first run given a profile writes it (:func:`write_profile`). The
measurements themselves are :mod:`.speed`'s; this module applies them to a :class:`~.run.Run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..core.distributed import broadcast_object
from ..core.timing import Stopwatch
from ..graph.metrics import ModelStats
from ..planning.rounding import AutoRoundTo, RoundToChoice
from ..speed.steptime import StepTimePredictor
from . import speed_profile
from .checkpoint import write_json_atomic
from .precision import Precision
from .run import Run
from .speed import (
    CompileDecision,
    SpeedSettings,
    choose_settings,
    compile_decision,
    hardware_settings,
    measure_gain,
    narrow_channels_last_crashes,
)

#: the run directory's record of what --precision / --channels-last resolved to (a resume reads it back)
SPEED = "speed.json"


def resolve_speed(run: Run) -> None:
    """--precision / --channels-last: as given, as recorded by the run (resume), or measured now ("auto"); and the
    smallest width the device survives in channels_last."""
    cfg = run.cfg
    stored = run.run_dir / SPEED if run.run_dir is not None else None
    if stored is not None and stored.exists():
        run.speed = SpeedSettings.from_dict(json.loads(stored.read_text()))
    elif (cfg.precision == "measure" or cfg.channels_last == "measure") and (run.profile or {}).get("speed"):
        run.speed = SpeedSettings.from_dict(run.profile["speed"])   # measured by the run that wrote the profile
        run.progress.log(f"speed settings from --speed-profile {cfg.speed_profile}: {run.speed.precision}"
                         f"{', channels_last' if run.speed.channels_last else ''}")
    elif cfg.precision == "measure" or cfg.channels_last == "measure":
        x, y = run.batch()
        precision = "auto" if cfg.precision == "measure" else cfg.precision
        layout = "auto" if cfg.channels_last == "measure" else cfg.channels_last
        run.progress.log("measuring the speed settings (a few training steps per precision and memory layout) …")
        with Stopwatch(run.device) as clock:
            run.speed = broadcast_object(   # under torchrun rank 0 measures: every rank trains alike
                choose_settings(run.model, x, y, run.step_loss(), run.device, precision, layout)
                if run.parallel.is_main else None)
        run.setup_seconds = (clock.seconds, clock.cpu_seconds)
        times = ", ".join(f"{m} {1e3 * t:.0f} ms" for m, t in run.speed.measured.items())
        run.progress.log(f"speed settings measured ({run.speed.clock} time per training step: {times}): "
                         f"{run.speed.precision}{', channels_last' if run.speed.channels_last else ''}")
    else:   # fixed, or "auto": from what the hardware says, nothing timed (the same on every run of the machine)
        run.speed = hardware_settings(run.model, run.train_loader.normalise(run.train_loader.x[:1]), run.device,
                                      cfg.precision, cfg.channels_last)
    run.precision = Precision(run.speed.precision, run.device)
    run.channels_last = run.speed.channels_last
    run.train_loader.channels_last = run.test_loader.channels_last = run.channels_last
    run.min_channels = cfg.min_channels
    if run.channels_last and run.device.type == "cpu" and cfg.min_channels < 8 and narrow_channels_last_crashes():
        run.min_channels = 8
        run.progress.log("channels_last convolutions with 2-6 input channels crash this CPU's oneDNN backward "
                         "(checked in a subprocess): every group keeps at least 8 channels")


def write_settings(run: Run) -> None:
    """speed.json, which a resume reads instead of measuring again (rank 0, when the run writes)."""
    if run.writing and run.speed is not None:
        write_json_atomic(run.run_dir / SPEED, run.speed.to_dict())  # type: ignore[operator]


def apply_profile(run: Run) -> None:
    """--speed-profile: the rounding choice and the step-time predictor a previous run measured, given to the
    pruner as a resumed run's state gives them (nothing of it is measured again)."""
    profile, pruner = run.profile, run.pruner
    if not profile:
        return
    if profile.get("round_to") is not None and isinstance(pruner.round_to, AutoRoundTo):
        pruner.round_to_choice = RoundToChoice.from_dict(profile["round_to"])
        pruner.round_to = pruner.round_to_choice.value
    if profile.get("predictor") is not None and run.cfg.target == "latency":
        pruner.predictor = StepTimePredictor.from_dict(profile["predictor"])
    run.progress.log(f"measurements from --speed-profile {run.cfg.speed_profile}: "
                     + ", ".join(k for k in ("speed", "round_to", "predictor", "time_budget") if profile.get(k)))


def write_profile(run: Run) -> bool:
    """The first run given --speed-profile writes what it measured (rank 0), once its pruning has started (before,
    the predictor and the rounding choice may not exist yet). True if it wrote."""
    cfg, pruner = run.cfg, run.pruner
    if (cfg.speed_profile is None or run.profile is not None or not run.parallel.is_main
            or Path(cfg.speed_profile).exists() or pruner.phase == "dense"):
        return False
    speed = run.speed.to_dict() if run.speed is not None and run.speed.measured else None
    choice = pruner.round_to_choice.to_dict() if pruner.round_to_choice is not None else None
    predictor = pruner.predictor.to_dict() if pruner.predictor is not None else None
    budget = ({k: run.budget[k] for k in ("budget", "dense_epochs", "spent_before", "gain_timing")}
              if run.budget else None)
    path = speed_profile.write(cfg.speed_profile, speed_profile.identity(cfg, run.environment), speed=speed,
                               round_to=choice, predictor=predictor, time_budget=budget)
    run.progress.log(f"measurements written to --speed-profile {path}")
    return True


def compile_pruned(run: Run, next_epoch: int) -> None:
    """--compile, once the pruning epoch is over (never during it: the shapes change at every pruning step)."""
    if run.compiled is not None:
        return
    earlier = next((r["compile"] for r in run.rows if r.get("compile")), None)
    if earlier is not None:   # decided before a resume: keep the decision, do not measure again
        run.compiled = CompileDecision(**earlier)
        if run.compiled.compiled:
            run.net = torch.compile(run.net)
        return
    x, y = run.batch()
    remaining = (run.cfg.epochs - next_epoch) * len(run.train_loader)
    if run.parallel.active and run.cfg.compile == "auto":   # timings differ per rank; the ranks must agree
        run.compiled = CompileDecision("auto", remaining_steps=remaining,
                                       reason="auto does not compile under torchrun (use --compile on)")
        return
    compiled, run.compiled = compile_decision(run.cfg.compile, run.net, x, y, run.step_loss(), run.precision.dtype,
                                             remaining)
    if compiled is not None:   # the training steps go through it (the DDP wrapper under torchrun)
        run.net = compiled
    if run.cfg.compile != "off":
        run.progress.log(f"--compile {run.cfg.compile}: {'compiled' if run.compiled.compiled else 'eager'} "
                         f"({run.compiled.reason})")


def time_gain(run: Run, stats: ModelStats) -> dict[str, Any]:
    """Time a few steps of the pruned model beside the dense copy; predicted vs measured; warn if not faster."""
    import numpy as np

    pruner = run.pruner
    predicted = None
    if pruner.predictor is not None:
        p = pruner.predictor
        removed = np.array(p.widths) - np.array(pruner.groups.widths())
        predicted = (p.predict(), p.predict(removed))
    x, y = run.batch()
    gain = measure_gain(run.dense_copy, run.model, x, y, run.step_loss(), run.precision.dtype,  # type: ignore[arg-type]
                        dense_macs=run.dense_stats.macs, pruned_macs=stats.macs, predicted=predicted,
                        target=run.cfg.target, ratio=pruner.ratio, round_to=pruner.round_to,
                        widths=pruner.groups.widths())
    run.gain = gain
    line = (f"pruned model: {gain['measured_speedup']:.2f}x faster per training step than dense (measured, "
            f"{gain['clock']} time); MACs-ideal {gain['macs_ideal_speedup']:.2f}x")
    if predicted is not None:
        line += f"; predicted {gain['predicted_speedup']:.2f}x"
    run.progress.log(line)
    if gain["reasons"]:
        run.warn("the pruned model is not faster than the dense one: " + "; ".join(gain["reasons"]))
    return gain

