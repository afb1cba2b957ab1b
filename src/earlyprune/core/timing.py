"""One clock for the package and its benchmarks: device-synchronised timings, medians, paired A/B ratios.

Every timing in earlyprune goes through here — the per-layer latency table (and so ``round_to="auto"``), the
trainer's epoch and pruning times, the pruner's event times and every benchmark script — so they agree on what
a measurement is:

* **device synchronisation** before starting and before stopping the clock (CUDA and MPS run asynchronously:
  without it a GPU step "takes" the time to queue its kernels);
* **warm-up** calls that are not timed (kernel selection, allocator, caches), then the **median** of repeats
  (robust to the rounds a shared machine spends on other work);
* optionally the **process CPU time** beside the wall time (how busy the process was, whatever the load);
* for speed comparisons, :func:`paired_ratio`: A and B timed back to back, alternating which goes first, many
  rounds, the median of the paired ratios — the momentary load of a shared machine hits both sides of a pair
  alike, so the ratio is meaningful where a lone absolute time is not;
* a **training step** — zero the gradients, forward, loss, backward, optimizer step — built once by
  :func:`train_step` and timed by :func:`time_train_step` on the package's clock (:func:`clock`): the trainer's
  speed settings and gain, the step-time predictor and the benchmarks all time their steps so.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .batch import call_model, flat_tensors
from .validation import Interval, Options, checked, rule


def sync(device: torch.device | str | None) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS); nothing to do on the CPU or for None."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_of(obj: Any) -> torch.device:
    """The device of a module's first parameter or buffer, or of a tensor (CPU when there is none)."""
    if isinstance(obj, torch.Tensor):
        return obj.device
    if isinstance(obj, nn.Module):
        for t in obj.parameters():
            return t.device
        for t in obj.buffers():
            return t.device
    return torch.device("cpu")


class Stopwatch:
    """Times a block: ``with Stopwatch(device) as clock: …`` then ``clock.seconds`` (wall) and
    ``clock.cpu_seconds`` (process CPU time). The device is synchronised on entry and exit;
    :meth:`elapsed` reads the running time without synchronising (for progress displays)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self._t0 = self._c0 = 0.0

    def __enter__(self) -> "Stopwatch":
        sync(self.device)
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._c0

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0


@dataclass(frozen=True)
class Timing:
    """What :func:`measure` measured: the median seconds per call, and every sample."""

    seconds: float                                        #: median wall seconds per call
    samples: list[float] = field(default_factory=list)    #: wall seconds per call, one per repeat
    cpu_seconds: float | None = None                      #: median process CPU seconds per call (``cpu=True``)

    @property
    def minimum(self) -> float:
        return min(self.samples) if self.samples else self.seconds


#: what a timing reads: ``"wall"`` (elapsed time), ``"cpu"`` (process CPU time) or ``"auto"`` (see :func:`clock`)
CLOCKS = ("auto", "cpu", "wall")
#: the rule of every ``clock=`` argument
CLOCK = rule(Options(CLOCKS))
#: the rules of the timing functions' counts (:mod:`earlyprune.core.validation`)
TIMING_RULES = {
    "number": rule(Interval(Integral, 1, None), hint="calls per sample"),
    "repeats": rule(Interval(Integral, 1, None), hint="timed samples, their median kept"),
    "rounds": rule(Interval(Integral, 1, None), hint="paired rounds, their median ratio kept"),
    "warmup": rule(Interval(Integral, 0, None), hint="untimed calls first"),
}


def _rules(*names: str) -> dict:
    return {n: TIMING_RULES[n] for n in names}


def clock(device: torch.device | str | None, choice: str = "auto") -> str:
    """Which clock a timing on ``device`` reads: ``choice`` itself, or for ``"auto"`` the process CPU time on a CPU
    with one intra-op thread (other processes on a shared machine inflate wall times of the same work 2–3×; CPU
    time counts only this process's work) and wall time otherwise (several threads, GPUs)."""
    CLOCK.check("clock", choice)
    if choice != "auto":
        return choice
    on_cpu = device is None or torch.device(device).type == "cpu"
    return "cpu" if on_cpu and torch.get_num_threads() == 1 else "wall"


_clock = clock   # for the functions below whose ``clock`` argument names the choice


def seconds(result: "Timing", cpu: bool) -> float:
    """The median of ``result`` on the chosen clock."""
    return result.cpu_seconds if cpu and result.cpu_seconds is not None else result.seconds


def _once(fn: Callable[[], Any], device: torch.device | str | None, number: int) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``number`` back-to-back calls of ``fn``."""
    with Stopwatch(device) as clock:
        for _ in range(number):
            fn()
    return clock.seconds / number, clock.cpu_seconds / number


@checked(_rules("number"))
def time_once(fn: Callable[[], Any], *, device: torch.device | str | None = None, number: int = 1,
              cpu: bool = False) -> float:
    """Wall seconds (process CPU seconds with ``cpu``) per call of ``number`` back-to-back calls of ``fn`` (one
    sample, device synchronised) — for benchmarks that interleave their own rounds; :func:`measure` adds the
    warm-up and the median."""
    return _once(fn, device, number)[1 if cpu else 0]


@checked(_rules("repeats", "warmup", "number"))
def measure(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 2, number: int = 1,
            device: torch.device | str | None = None, cpu: bool = False) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` samples of ``number`` calls each (the device
    synchronised around every sample); the median seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu_s = _once(fn, device, number)
        walls.append(wall)
        cpus.append(cpu_s)
    return Timing(statistics.median(walls), walls, statistics.median(cpus) if cpu else None)


@dataclass(frozen=True)
class PairedRatio:
    """What :func:`paired_ratio` measured: ``ratio`` = median over rounds of ``t(a) / t(b)``."""

    ratio: float                    #: median of the paired ratios t(a)/t(b)
    iqr: tuple[float, float]        #: their first and third quartiles
    a_seconds: float                #: median seconds per call of a
    b_seconds: float                #: median seconds per call of b
    ratios: list[float] = field(default_factory=list)   #: every round's ratio

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "iqr": list(self.iqr), "a_seconds": self.a_seconds,
                "b_seconds": self.b_seconds, "ratios": list(self.ratios)}


@checked(_rules("rounds", "warmup", "number"))
def paired_ratio(a: Callable[[], Any], b: Callable[[], Any], *, rounds: int = 21, warmup: int = 2, number: int = 1,
                 device: torch.device | str | None = None, alternate: bool = True, cpu: bool = False) -> PairedRatio:
    """Compare two callables side by side: each round times ``number`` calls of ``a`` and of ``b`` back to back
    (``b`` first every other round when ``alternate``, so neither side always runs on a warmer cache), and the
    result is the median of the rounds' ratios ``t(a) / t(b)`` — a < 1 means a is faster. ``cpu``: process CPU
    time instead of wall time."""
    for _ in range(warmup):
        a()
        b()
    ratios, ta, tb = [], [], []
    for i in range(rounds):
        side = 1 if cpu else 0
        if alternate and i % 2:
            t_b, t_a = _once(b, device, number)[side], _once(a, device, number)[side]
        else:
            t_a, t_b = _once(a, device, number)[side], _once(b, device, number)[side]
        ta.append(t_a)
        tb.append(t_b)
        ratios.append(t_a / t_b if t_b > 0 else float("inf"))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return PairedRatio(statistics.median(ratios), (quartiles[0], quartiles[2]), statistics.median(ta),
                       statistics.median(tb), ratios)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer | None, inputs: Any, targets: Any = None, *,
               loss_fn: Callable[[Any, Any], torch.Tensor] | None = F.cross_entropy,
               autocast: torch.dtype | None = None) -> Callable[[], torch.Tensor]:
    """One training step as a callable: zero the gradients, forward on ``inputs`` (a tensor, a tuple of positional
    or a dict of keyword arguments; under ``torch.autocast`` with ``autocast`` when given), loss, backward and the
    ``optimizer``'s step; returns the loss.

    ``optimizer=None`` stops after the backward pass (the gradients are left in ``.grad``: time a copy);
    ``loss_fn=None`` takes the mean of every floating output as the loss (a step without labels, as the step-time
    predictor times any model).
    """
    device_type = device_of(model).type

    def step() -> torch.Tensor:
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
            out = call_model(model, inputs)
            loss = loss_fn(out, targets) if loss_fn is not None else None
        if loss is None:   # in float32, outside autocast
            loss = sum(t.float().mean() for t in flat_tensors(out) if t.is_floating_point())
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        return loss

    return step


def time_train_step(step: Callable[[], Any], *, device: torch.device | str | None = None, repeats: int = 1,
                    warmup: int = 0, number: int = 1, clock: str = "auto") -> float:
    """Seconds per call of a training ``step`` (:func:`train_step`) on ``clock`` (:func:`clock`'s choice for
    ``device``: process CPU time on a one-thread CPU, wall time otherwise): ``warmup`` untimed calls, then the
    median of ``repeats`` device-synchronised samples of ``number`` calls. The defaults take one sample, for
    callers that interleave their own rounds."""
    cpu = _clock(device, clock) == "cpu"
    return seconds(measure(step, repeats=repeats, warmup=warmup, number=number, device=device, cpu=cpu), cpu)


__all__ = ["CLOCK", "CLOCKS", "PairedRatio", "Stopwatch", "Timing", "clock", "device_of", "measure", "paired_ratio",
           "seconds", "sync", "time_once", "time_train_step", "train_step"]
