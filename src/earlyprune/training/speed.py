"""Speed settings measured on the machine, not assumed, and what pruning gained — for ``earlyprune train``.

* :func:`choose_settings` — ``--precision auto`` / ``--channels-last auto``: a few real training steps of a copy of
  the model in every candidate mode (fp32, and bf16 on a CPU or bf16 / fp16 on CUDA; NCHW and channels_last),
  interleaved round by round; a mode other than fp32 / NCHW is taken only when it is at least
  :data:`MIN_GAIN` faster by the median of the paired ratios. CPUs differ by an order of magnitude here: bf16
  autocast trains 2–3× faster than fp32 on an AVX512-BF16 CPU and 12–17× slower on an AVX2-only one (issue 10);
* :func:`measure_gain` — after the pruning epoch, a few steps of the pruned model beside a copy of the dense one
  kept from the start of the pruning epoch: the measured per-step speedup, the predicted one (``target=
  "latency"``), the MACs-ideal, and the reasons when the pruned model is not faster;
* :func:`compile_decision` — ``--compile``: compile the pruned model once the pruning epoch is over (never the
  dense model: its shapes are about to change), time a few steps, and keep it only if the compile time is paid
  back over the remaining steps;
* :func:`~earlyprune.planning.timebudget.budget_ratio` — ``--time-budget B``: the step-time ratio to remove so
  that the whole run takes ``B`` of the dense run's time, given when the policy triggered (it lives with the rest of
  the time budget in :mod:`earlyprune.planning.timebudget`; imported here for the trainer).

Timings use :func:`earlyprune.core.timing.clock`'s clock (process CPU time on a one-thread CPU, wall time otherwise).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..core import timing
from ..planning.timebudget import budget_fraction, budget_ratio  # noqa: F401  (the trainer's import)

#: a mode other than plain fp32 / NCHW must be at least this much faster (median paired ratio) to be chosen
MIN_GAIN = 0.05
#: ``--compile auto`` compiles only when the remaining training would take at least this many seconds (a compile
#: costs 50–150 s on a 2-core CPU for a CIFAR ResNet, ``benchmarks/README.md``)
COMPILE_MIN_REMAINING_S = 1800.0
#: a pruned model less than this much faster than dense gets a warning
NOT_FASTER = 1.05


@dataclass
class SpeedSettings:
    """What ``--precision`` / ``--channels-last`` resolved to, and the timings behind it."""

    precision: str
    channels_last: bool
    measured: dict[str, float] = field(default_factory=dict)   #: median seconds per training step per mode
    speedup: dict[str, float] = field(default_factory=dict)    #: median paired ratio t(fp32) / t(mode)
    clock: str = "wall"
    seconds_spent: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeedSettings":
        return cls(**data)


def _mode_name(precision: str, channels_last: bool) -> str:
    return precision + ("-cl" if channels_last else "")


def _autocast(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def _has_4d(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has bf16 matrix units: CUDA compute capability 8.0+, or a CPU with AMX-BF16 or
    AVX512-BF16. Where it has not, bf16 autocast is emulated — 12-17x *slower* than fp32 on an AVX2-only CPU."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def hardware_settings(model: nn.Module, x: torch.Tensor, device: torch.device, precision: str,
                      channels_last: str | bool) -> SpeedSettings:
    """Resolve ``"auto"`` from what the hardware says, without timing anything (the same choice on every machine
    of a kind, whatever its load): bf16 where the device has bf16 matrix units (:func:`native_bf16`), else fp16
    on CUDA devices with tensor cores (capability 7.0+), else fp32; channels_last for models with 2-D
    convolutions fed images (oneDNN and cuDNN pick their fastest convolution kernels for it: 15 % per step for a
    CIFAR ResNet-20 in fp32 on an AVX2 EPYC, benchmarks/README.md). ``"measure"`` is :func:`choose_settings`."""
    if precision == "auto":
        if native_bf16(device):
            precision = "bf16"
        elif device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 7:
            precision = "fp16"
        else:
            precision = "fp32"
    cl = (_has_4d(model) and x.dim() == 4) if channels_last == "auto" else channels_last in (True, "on")
    return SpeedSettings(precision, bool(cl), clock=timing.clock(device))


def choose_settings(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable[[Any, Any], torch.Tensor],
                    device: torch.device, precision: str, channels_last: str | bool, rounds: int = 3,
                    min_gain: float = MIN_GAIN) -> SpeedSettings:
    """Resolve ``precision`` ("auto" or a name) and ``channels_last`` ("auto", or a bool / "on" / "off") by timing
    training steps of a copy of ``model`` on the batch ``(x, y)`` in every candidate mode."""
    fixed_cl = None if channels_last == "auto" else channels_last in (True, "on")
    precisions = ([precision] if precision != "auto"
                  else ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else []))
    layouts = [fixed_cl] if fixed_cl is not None else ([False, True] if _has_4d(model) and x.dim() == 4 else [False])
    modes = [(p, c) for p in precisions for c in layouts]
    if len(modes) == 1:
        return SpeedSettings(modes[0][0], bool(modes[0][1]), clock=timing.clock(device))
    steps = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), timing.Stopwatch() as spent:
        for p, c in modes:
            net = copy.deepcopy(model).to(memory_format=torch.channels_last) if c else copy.deepcopy(model)
            inputs = x.contiguous(memory_format=torch.channels_last) if c else x.contiguous()
            opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
            steps[(p, c)] = timing.train_step(net, opt, inputs, y, loss_fn=loss_fn, autocast=_autocast(p))
            steps[(p, c)]()                                  # warm-up (kernel choice, allocator)
        samples: dict[tuple[str, bool], list[float]] = {m: [] for m in modes}
        for _ in range(rounds):   # interleaved: a load spike hits every mode of the round alike
            for mode in modes:
                samples[mode].append(timing.time_train_step(steps[mode], device=device))
        del steps
    base = modes[0]   # fp32 (or the fixed precision), NCHW (or the fixed layout): the simplest mode
    speedup = {_mode_name(*m): statistics.median(a / b for a, b in zip(samples[base], samples[m])) for m in modes}
    best = max(modes, key=lambda m: speedup[_mode_name(*m)])
    chosen = best if speedup[_mode_name(*best)] >= 1.0 + min_gain else base
    return SpeedSettings(chosen[0], bool(chosen[1]), {_mode_name(*m): statistics.median(samples[m]) for m in modes},
                         speedup, timing.clock(device), spent.seconds)


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable[[Any, Any], torch.Tensor],
                 autocast: torch.dtype | None) -> Callable[[], Any]:
    """Forward + loss + backward of ``model`` on ``(x, y)``: :func:`earlyprune.core.timing.train_step` without an
    optimizer (gradients left in ``.grad``: use on copies)."""
    return timing.train_step(model, None, x, y, loss_fn=loss_fn, autocast=autocast)


#: paired rounds of dense and pruned steps that time the per-step gain after the pruning epoch
GAIN_ROUNDS = 5


def paired_steps(a: Callable[[], None], b: Callable[[], None], device: torch.device, rounds: int = 5
                 ) -> tuple[float, float, float]:
    """Median seconds of ``a`` and ``b`` and the median of the paired ratios ``t(a) / t(b)`` over ``rounds``
    back-to-back rounds (alternating which goes first), after one warm-up each, on the package's clock
    (:func:`earlyprune.core.timing.paired_ratio`)."""
    result = timing.paired_ratio(a, b, rounds=rounds, warmup=1, device=device, cpu=timing.clock(device) == "cpu")
    return result.a_seconds, result.b_seconds, result.ratio


def measure_gain(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 loss_fn: Callable[[Any, Any], torch.Tensor], autocast: torch.dtype | None, *, dense_macs: float,
                 pruned_macs: float, predicted: tuple[float, float] | None = None, target: str = "channels",
                 ratio: float | None = None, round_to: Any = None, widths: list[int] | None = None,
                 rounds: int = GAIN_ROUNDS) -> dict[str, Any]:
    """Time forward + backward of the dense copy and of the pruned model side by side (copies: the training
    model's gradients and statistics are untouched) and say what pruning gained, and why not if nothing."""
    device = timing.device_of(pruned)
    pruned_copy = copy.deepcopy(pruned)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        t_dense, t_pruned, speedup = paired_steps(step_seconds(dense, x, y, loss_fn, autocast),
                                                  step_seconds(pruned_copy, x, y, loss_fn, autocast), device, rounds)
    del pruned_copy
    ideal = dense_macs / pruned_macs if pruned_macs else None
    gain: dict[str, Any] = {"measured_dense_step_s": t_dense, "measured_pruned_step_s": t_pruned,
                            "measured_speedup": speedup, "macs_ideal_speedup": ideal,
                            "fraction_of_ideal": speedup / ideal if ideal else None, "clock": timing.clock(device),
                            "batch_size": int(x.shape[0]), "rounds": rounds}
    if predicted is not None:
        p_dense, p_pruned = predicted
        gain.update(predicted_dense_step_s=p_dense, predicted_pruned_step_s=p_pruned,
                    predicted_speedup=p_dense / p_pruned if p_pruned else None,
                    prediction_error=(p_pruned / p_dense) / (t_pruned / t_dense) - 1 if p_dense and t_dense else None)
        if target == "latency" and ratio is not None:   # what the time target asked for, and how much of it
            asked = 1.0 / (1.0 - ratio)
            gain["asked_speedup"] = asked
            gain["fraction_of_asked"] = speedup / asked
    gain["reasons"] = reasons(gain, target, round_to, widths) if speedup < NOT_FASTER else []
    return gain


def reasons(gain: dict[str, Any], target: str, round_to: Any, widths: list[int] | None) -> list[str]:
    """Why a pruned model is not faster, in the user's terms."""
    out = []
    ideal = gain.get("macs_ideal_speedup") or 1.0
    if ideal < 1.25:
        out.append(f"it removed mostly low-cost channels (MACs only {1 - 1 / ideal:.0%} fewer); try "
                   f"target='latency'" if target != "latency" else "the MACs barely fell")
    multiple = round_to if isinstance(round_to, int) else 1
    if widths and multiple < 8 and sum(w % 8 != 0 for w in widths) > len(widths) / 2:
        out.append("most kept widths are not multiples of 8 (vector-width steps make such layers as slow as wider "
                   "ones); try round_to='auto' or 8/16")
    if ideal >= 1.25 and (gain.get("fraction_of_ideal") or 1.0) < 0.6:
        out.append(f"the narrow layers run at {gain['fraction_of_ideal']:.0%} of their MACs-ideal on this device "
                   f"(kernels, memory-bound layers); try target='latency', which measures it")
    return out or ["the model is too small for the device to gain from narrower layers"]


@dataclass
class CompileDecision:
    """What ``--compile`` did after the pruning epoch."""

    mode: str
    compiled: bool = False
    compile_seconds: float | None = None
    eager_step_s: float | None = None
    compiled_step_s: float | None = None
    remaining_steps: int = 0
    projected_gain_s: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Time steps on ``model`` itself without changing its training: buffers (BatchNorm statistics) and gradients
    are restored on exit, the random streams forked."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    device = timing.device_of(model)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        with torch.no_grad():
            for b, value in buffers:
                b.copy_(value)
        for p, g in grads:
            p.grad = g


def compile_decision(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     loss_fn: Callable[[Any, Any], torch.Tensor], autocast: torch.dtype | None,
                     remaining_steps: int, rounds: int = 3) -> tuple[nn.Module | None, CompileDecision]:
    """``--compile off|auto|on`` once the pruning epoch is over: the compiled module to train with (None: eager)
    and the record. ``auto`` compiles only when the remaining eager training is long enough
    (:data:`COMPILE_MIN_REMAINING_S`) and keeps the compiled model only if the measured saving over the remaining
    steps exceeds the compile time."""
    decision = CompileDecision(mode, remaining_steps=remaining_steps)
    if mode == "off" or remaining_steps <= 0:
        decision.reason = "off" if mode == "off" else "no steps left"
        return None, decision
    device = timing.device_of(model)
    eager = step_seconds(model, x, y, loss_fn, autocast)
    with preserved(model):
        if mode == "auto":
            remaining = timing.time_train_step(eager, device=device, warmup=1) * remaining_steps
            if remaining < COMPILE_MIN_REMAINING_S:
                decision.reason = (f"the remaining training ({remaining:.0f} s) is too short to pay back a compile "
                                   f"(auto compiles from {COMPILE_MIN_REMAINING_S:.0f} s)")
                return None, decision
        compiled = torch.compile(model)
        with timing.Stopwatch(device) as clock:
            step_seconds(compiled, x, y, loss_fn, autocast)()
        decision.compile_seconds = clock.seconds
        t_eager, t_comp, _ = paired_steps(eager, step_seconds(compiled, x, y, loss_fn, autocast), device, rounds)
    decision.eager_step_s, decision.compiled_step_s = t_eager, t_comp
    decision.projected_gain_s = (t_eager - t_comp) * remaining_steps
    if mode == "on" or decision.projected_gain_s > 0:
        decision.compiled = True
        decision.reason = "on" if mode == "on" else "pays back its compile time over the remaining steps"
        return compiled, decision
    decision.reason = "compiled steps were not faster: training continues eagerly"
    return None, decision


#: oneDNN's channels_last backward of a 1×1 stride-2 convolution with 2, 4 or 6 input channels crashed torch 2.13.0
#: on an AMD Zen 3 CPU (AVX2; issue 10); this reproduces it in a child process
_NARROW_PROBE = """
import torch
torch.set_num_threads(1)
for cin in (2, 4, 6):
    conv = torch.nn.Conv2d(cin, 16, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(32, cin, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    for _ in range(2):
        conv(x).sum().backward()
"""


@functools.lru_cache(maxsize=1)
def narrow_channels_last_crashes() -> bool:
    """Whether narrow channels_last convolutions crash this CPU's oneDNN backward (checked once per process, in a
    child process so that a crash does not take the training down)."""
    try:
        proc = subprocess.run([sys.executable, "-c", _NARROW_PROBE], capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return True   # cannot tell: stay on the safe side
    return proc.returncode != 0
