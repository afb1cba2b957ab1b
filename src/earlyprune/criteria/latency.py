"""A per-layer latency table measured on the current device (for PaT §4.3 latency-aware pruning).

For every channel group, the layers it touches (convolutions, linear layers, normalisation layers) are rebuilt
standalone at a few widths of the group — the group's dimension narrowed, every other dimension and the traced
input shape kept — and timed forward + backward (training latency) on the device and dtype of the model. The
group's latency at width ``w`` is the sum over its layers; what one of its channels costs is the least-squares
slope of that curve over the measured widths (clipped at 0).

Measurements are cached per layer signature (``repr`` of the layer, input shape, dtype, device, pass) in the
process — identical layers (every block of a ResNet stage) and later pruning steps reuse them — and optionally in
a JSON file (``cache_path``) across runs; ``earlyprune train`` keeps one file per machine
(:func:`default_cache_path`), as HALP keeps one latency table per device. Real latency is not proportional to MACs: widths that do not suit the
hardware's tiles run as slowly as wider ones, which the table sees because it times the actual widths.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import warnings
from contextlib import contextmanager
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..core import timing
from ..core.batch import call_model
from ..core.validation import (
    BOOLEAN,
    Callable_,
    Each,
    InstanceOf,
    Interval,
    Options,
    Rule,
    checked,
    rule,
)
from ..graph.groups import ChannelGroup, ChannelGroups
from ..graph.metrics import CHANNEL_LAYERS, is_depthwise
from .gates import channel_dim, is_norm

#: process-wide cache: layer signature → seconds
_CACHE: dict[str, float] = {}

#: environment variable naming the layer-timing cache file of ``earlyprune train`` ("off": none)
CACHE_ENV = "EARLYPRUNE_LATENCY_CACHE"


def machine_key() -> str:
    """16 hex digits identifying what a layer timing depends on beyond the layer's signature: the CPU model and
    the kernels PyTorch picks for it, the PyTorch version, the intra-op thread count and the GPUs."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    facts = [platform.machine(), cpu, torch.backends.cpu.get_cpu_capability(), torch.__version__,
             str(torch.get_num_threads()), *gpus]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


#: the longest time one layer's step may plausibly take; a cached entry above it (or ≤ 0) is measured again
MAX_LAYER_SECONDS = 60.0
#: cache files already warned about in this process
_WARNED: set[Path] = set()


def _plausible(value: Any) -> bool:
    """A cached layer time: a finite number of seconds in (0, MAX_LAYER_SECONDS]."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 < value <= MAX_LAYER_SECONDS)


def default_cache_path() -> Path | None:
    """The layer-timing cache file of ``earlyprune train``: ``$EARLYPRUNE_LATENCY_CACHE`` if set (``off``: none,
    timings are kept in the process only), else one file per machine (:func:`machine_key`) under
    ``$XDG_CACHE_HOME/earlyprune/latency`` (default ``~/.cache``) — so that a second run on the same machine does
    not time the same layers again (tens of seconds on a CPU for a VGG-16)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "none", "0") else Path(value).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "earlyprune" / "latency" / f"{machine_key()}.json"


def _variant(m: nn.Module, c_in: int, c_out: int) -> nn.Module | None:
    """A fresh layer like ``m`` with ``c_in`` input and ``c_out`` output channels (None if not buildable)."""
    bias = getattr(m, "bias", None) is not None
    if isinstance(m, nn.modules.conv._ConvNd):
        groups = c_out if is_depthwise(m) else m.groups
        if is_depthwise(m):
            c_in = c_out
        if c_in % groups or c_out % groups:
            return None
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            return type(m)(c_in, c_out, m.kernel_size, m.stride, m.padding, m.output_padding, groups, bias,
                           m.dilation, m.padding_mode)
        return type(m)(c_in, c_out, m.kernel_size, m.stride, m.padding, m.dilation, groups, bias, m.padding_mode)
    if isinstance(m, nn.Linear):
        return nn.Linear(c_in, c_out, bias=bias)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return type(m)(c_out, eps=m.eps, momentum=m.momentum, affine=m.affine)
    if isinstance(m, nn.GroupNorm):
        return nn.GroupNorm(m.num_groups, c_out, m.eps, m.affine) if c_out % m.num_groups == 0 else None
    if isinstance(m, nn.LayerNorm):
        return nn.LayerNorm(c_out, m.eps, m.elementwise_affine)
    return None


def _channels(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.modules.batchnorm._NormBase):
        return m.num_features, m.num_features
    if isinstance(m, nn.GroupNorm):
        return m.num_channels, m.num_channels
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[0], m.normalized_shape[0]
    raise TypeError(type(m).__name__)  # internal: _narrowed yields only the layer kinds _timed accepts


def _timed(m: nn.Module) -> bool:
    return isinstance(m, CHANNEL_LAYERS) or (isinstance(m, nn.Module) and is_norm(m))


class LatencyTable:
    """Latency of each channel group's layers as a function of the group's width, measured on this device.

    Args:
        fractions: widths to time, as fractions of each group's current width (rounded to its removal unit).
        repeats: timed runs per layer and width (the median is kept); ``warmup`` untimed runs before them.
        backward: time forward + backward (training) instead of forward only.
        batch_size: the batch size to time at (the first dimension of every input); None keeps the traced
            example inputs' — pass the training batch size when the example batch is smaller.
        cache_path: optional JSON file that keeps measurements across runs (read once, rewritten on change).
        timer: ``timer(fn) -> seconds`` to replace the clock (tests).
        autocast: time under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``), as mixed-precision
            training runs; None times in the parameters' dtype.
        channels_last: time 4-D inputs in ``channels_last`` memory format, as ``--channels-last`` training runs.
        clock: ``"wall"`` (default), ``"cpu"`` (process CPU time) or ``"auto"`` (see :func:`earlyprune.core.timing.clock`).
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "fractions": rule(Each(Interval(Real, 0, 1, closed="right"))),
        "repeats": rule(Interval(Integral, 1, None)),
        "warmup": rule(Interval(Integral, 0, None)),
        "backward": BOOLEAN,
        "batch_size": rule(Interval(Integral, 0, None, closed="neither"), None),
        "cache_path": rule(InstanceOf((str, os.PathLike), "a path"), None),
        "timer": rule(Callable_("callable as timer(fn) -> seconds"), None),
        "autocast": rule(InstanceOf(torch.dtype, "a torch.dtype (e.g. torch.bfloat16)"), None),
        "channels_last": BOOLEAN,
        "clock": rule(Options(timing.CLOCKS)),
    }

    @checked(RULES)
    def __init__(self, fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25), repeats: int = 5, warmup: int = 2,
                 backward: bool = True, batch_size: int | None = None, cache_path: str | Path | None = None,
                 timer: Callable[[Callable[[], Any]], float] | None = None, autocast: torch.dtype | None = None,
                 channels_last: bool = False, clock: str = "wall") -> None:
        self.clock = clock
        self.batch_size = batch_size
        self.autocast, self.channels_last = autocast, bool(channels_last)
        self.fractions = tuple(sorted({float(f) for f in fractions} | {1.0}, reverse=True))
        self.repeats, self.warmup, self.backward = repeats, warmup, bool(backward)
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._timer = timer
        self._file_loaded = False
        self.measured = 0   #: layer timings taken by this table (cache misses)
        self._info: dict[str, tuple[nn.Module, int, int, tuple[int, ...]]] = {}
        self._runs: dict[str, tuple[Callable[[], None], torch.device]] = {}

    # -- public -------------------------------------------------------------------------------------------------
    def table(self, groups: ChannelGroups) -> dict[str, list[tuple[int, float]]]:
        """``{group: [(width, seconds of the group's layers), …]}`` at the configured fractions of each width."""
        shapes = input_shapes(groups)
        with self._file_cache():
            return {g.name: [(w, self.group_latency(groups, g, w, shapes)) for w in self.widths(g)] for g in groups}

    def savings(self, groups: ChannelGroups) -> dict[str, float]:
        """Seconds saved per removed channel of each group: the least-squares slope of latency over width, ≥ 0."""
        result = {}
        for name, points in self.table(groups).items():
            if len(points) < 2:
                result[name] = 0.0
                continue
            w = np.array([p[0] for p in points], dtype=np.float64)
            t = np.array([p[1] for p in points], dtype=np.float64)
            slope = float(((w - w.mean()) * (t - t.mean())).sum() / ((w - w.mean()) ** 2).sum())
            result[name] = max(slope, 0.0)
        return result

    def widths(self, group: ChannelGroup) -> list[int]:
        unit = max(group.unit_size, 1)
        widths = {max(unit, int(round(group.width * f / unit)) * unit) for f in self.fractions}
        return sorted((w for w in widths if w <= group.width), reverse=True)

    def group_latency(self, groups: ChannelGroups, group: ChannelGroup, width: int,
                      shapes: dict[nn.Module, tuple[int, ...]] | None = None) -> float:
        """Seconds for one forward (+ backward) of the group's layers with the group narrowed to ``width``."""
        shapes = shapes if shapes is not None else input_shapes(groups)
        return self._total(_narrowed([(group, group.width - width)], shapes), shapes)

    def structure_latency(self, groups: ChannelGroups, removed: dict[str, int],
                          shapes: dict[nn.Module, tuple[int, ...]] | None = None) -> float:
        """Seconds for one forward (+ backward) of **every** timed layer of the model with each group narrowed by
        ``removed[group name]`` channels (missing names: 0) — the predicted layer time of a pruned structure."""
        shapes = shapes if shapes is not None else input_shapes(groups)
        with self._file_cache():
            return self._total(_narrowed([(g, int(removed.get(g.name, 0))) for g in groups], shapes), shapes)

    def _total(self, change: dict[int, list[Any]], shapes: dict[nn.Module, tuple[int, ...]]) -> float:
        total = 0.0
        for m, d_in, d_out in change.values():
            c_in, c_out = _channels(m)
            total += self._layer_time(m, max(c_in - d_in, 1), max(c_out - d_out, 1), shapes[m])
        return total

    def structure_layers(self, groups: ChannelGroups, removed: dict[str, int],
                         shapes: dict[nn.Module, tuple[int, ...]] | None = None) -> dict[str, int]:
        """``{layer signature: how many layers of the model have it}`` with each group narrowed by
        ``removed[group name]`` channels — what :meth:`structure_latency` sums, for timing the signatures one
        :meth:`sample` at a time (``round_to="auto"`` does, in interleaved rounds)."""
        shapes = shapes if shapes is not None else input_shapes(groups)
        counts: dict[str, int] = {}
        for m, d_in, d_out in _narrowed([(g, int(removed.get(g.name, 0))) for g in groups], shapes).values():
            c_in, c_out = _channels(m)
            args = (m, max(c_in - d_in, 1), max(c_out - d_out, 1), shapes[m])
            key, build = self._layer(*args)
            if build is not None:
                counts[key] = counts.get(key, 0) + 1
                self._info[key] = args
        return counts

    def sample(self, key: str) -> float:
        """One uncached timing (seconds) of the layer with signature ``key`` from :meth:`structure_layers`: a
        single forward (+ backward), the device synchronised around it. The layer and its input are built once
        and kept until :meth:`release`."""
        return self._sample(*self._info[key])

    def release(self) -> None:
        """Forget the layers :meth:`sample` built."""
        self._runs.clear()
        self._info.clear()

    def _sample(self, m: nn.Module, c_in: int, c_out: int, in_shape: tuple[int, ...]) -> float:
        key, build = self._layer(m, c_in, c_out, in_shape)
        if build is None:
            return 0.0
        if key not in self._runs:
            self._runs[key] = build()
        run, device = self._runs[key]
        return (float(self._timer(run)) if self._timer is not None
                else timing.time_once(run, device=device, cpu=timing.clock(device, self.clock) == "cpu"))

    # -- internals ----------------------------------------------------------------------------------------------
    def _layer(self, m: nn.Module, c_in: int, c_out: int, in_shape: tuple[int, ...]
               ) -> tuple[str, Callable[[], tuple[Callable[[], None], torch.device]] | None]:
        """The signature of ``m`` narrowed to ``c_in`` / ``c_out`` channels, and a builder of its timed call
        (None when such a layer cannot be built)."""
        # the timing must not move the training's random streams (layer init, inputs): fork them
        with torch.random.fork_rng(devices=[]):
            layer = _variant(m, c_in, c_out)
        if layer is None:
            return "", None
        ref_param = next(m.parameters(), None)
        device = ref_param.device if ref_param is not None else torch.device("cpu")
        dtype = ref_param.dtype if ref_param is not None else torch.float32
        shape = list(in_shape)
        shape[channel_dim(m)] = c_in
        if self.batch_size is not None and len(shape) > 1:
            shape[0] = self.batch_size
        cl = self.channels_last and len(shape) == 4
        key = (f"{layer!r}|{tuple(shape)}|{dtype}|{device.type}|{'fwd+bwd' if self.backward else 'fwd'}"
               f"{'|autocast=' + str(self.autocast) if self.autocast is not None else ''}{'|cl' if cl else ''}")
        if timing.clock(device, self.clock) == "cpu":
            key += "|cpu-time"

        def build() -> tuple[Callable[[], None], torch.device]:
            cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                return self._run(layer, shape, device, dtype, cl), device

        return key, build

    def _layer_time(self, m: nn.Module, c_in: int, c_out: int, in_shape: tuple[int, ...]) -> float:
        key, build = self._layer(m, c_in, c_out, in_shape)
        if build is None:
            return 0.0
        if key in _CACHE:
            return _CACHE[key]
        run, device = build()
        cpu = timing.clock(device, self.clock) == "cpu"
        seconds = (float(self._timer(run)) if self._timer is not None else timing.seconds(
            timing.measure(run, repeats=self.repeats, warmup=self.warmup, device=device, cpu=cpu), cpu))
        _CACHE[key] = seconds
        self.measured += 1
        return seconds

    def _run(self, layer: nn.Module, shape: list[int], device: torch.device, dtype: torch.dtype,
             cl: bool) -> Callable[[], None]:
        layer = layer.to(device=device, dtype=dtype).train()
        x = torch.randn(shape, device=device, dtype=dtype)
        if cl:
            layer = layer.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(self.backward)

        def run() -> None:
            with torch.autocast(device.type, dtype=self.autocast, enabled=self.autocast is not None):
                y = layer(x)
            if self.backward:
                y.backward(torch.ones_like(y))

        return run

    @contextmanager
    def _file_cache(self) -> Iterator[None]:
        """Read the cache file before a batch of timings; rewrite it after, if anything new was measured."""
        self._load()
        before = self.measured
        yield
        if self.measured != before:
            self._save()

    def _load(self) -> None:
        if self._file_loaded or self.cache_path is None:
            return
        self._file_loaded = True
        try:
            data = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")  # internal: caught below
        except (OSError, ValueError) as exc:   # a cache is never worth a failed run: measure again, rewrite it
            warnings.warn(f"layer-timing cache {self.cache_path} is unreadable ({exc}); measuring again and "
                          f"rewriting it", stacklevel=4)
            data = {}
        for key, value in _CACHE.items():   # this process's own measurements win
            data[key] = value
        good = {k: float(v) for k, v in data.items() if _plausible(v)}
        bad = [k for k in data if k not in good]
        if bad and self.cache_path not in _WARNED:   # a hand-edited or foreign file: those layers are timed again
            _WARNED.add(self.cache_path)
            warnings.warn(f"layer-timing cache {self.cache_path}: {len(bad)} of {len(data)} entries are not a "
                          f"layer time (each must be a number of seconds in (0, {MAX_LAYER_SECONDS:g}]; e.g. "
                          f"{data[bad[0]]!r}); measuring those layers again and rewriting the file", stacklevel=4)
        _CACHE.update(good)

    def _save(self) -> None:
        if self.cache_path is None:
            return
        try:   # atomically: runs in parallel may share the file
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            if self.cache_path.exists():  # keep what other processes measured meanwhile
                self._file_loaded = False
                self._load()
            tmp = self.cache_path.with_name(f"{self.cache_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(_CACHE, indent=0, sort_keys=True))
            tmp.replace(self.cache_path)
        except OSError as exc:   # a read-only home, a full disk: the timings stay in this process
            warnings.warn(f"cannot write the layer-timing cache {self.cache_path} ({exc}); the timings are kept "
                          f"in this process only (set {CACHE_ENV}=off to stop trying)", stacklevel=4)
            self.cache_path = None

    def __repr__(self) -> str:
        return (f"LatencyTable(fractions={self.fractions}, repeats={self.repeats}, backward={self.backward}, "
                f"batch_size={self.batch_size}, autocast={self.autocast}, channels_last={self.channels_last})")


def _narrowed(removals: list[tuple[ChannelGroup, int]], shapes: dict[nn.Module, tuple[int, ...]]
              ) -> dict[int, list[Any]]:
    """``id(layer) → [layer, input channels removed, output channels removed]`` for the timed layers the groups
    touch, each group narrowed by its count (a layer consuming several groups loses the sum)."""
    change: dict[int, list[Any]] = {}
    for group, removed in removals:
        local: dict[int, list[Any]] = {}
        for ref in group.layers:
            m = ref.module
            if not _timed(m) or m not in shapes:
                continue
            entry = local.setdefault(id(m), [m, 0, 0])
            if is_depthwise(m) or not isinstance(m, CHANNEL_LAYERS):  # one channel dimension for in and out
                entry[1] = entry[2] = max(entry[2], removed * ref.multiplicity)
            elif ref.role == "out":
                entry[2] += removed * ref.multiplicity
            else:
                entry[1] += removed * ref.multiplicity
        for key, (m, d_in, d_out) in local.items():
            entry = change.setdefault(key, [m, 0, 0])
            entry[1] += d_in
            entry[2] += d_out
    return change


def traced(groups: ChannelGroups, modules: Iterable[nn.Module], record: Callable[[nn.Module, Any, Any], None]) -> None:
    """One forward pass of the groups' model on its example inputs (eval mode, no gradients; the mode restored)
    with ``record(module, inputs, output)`` hooked on each of ``modules``."""
    model = groups.model
    handles = [m.register_forward_hook(record) for m in modules]
    was_training = model.training
    try:
        with torch.no_grad():
            call_model(model.eval(), groups.example_inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def input_shapes(groups: ChannelGroups) -> dict[nn.Module, tuple[int, ...]]:
    """Input shape of every timed layer of the groups, from one forward pass on the example inputs."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(mod: nn.Module, inputs: Any, output: Any) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and mod not in shapes:
            shapes[mod] = tuple(inputs[0].shape)
    traced(groups, {ref.module for g in groups for ref in g.layers if _timed(ref.module)}, record)
    return shapes


def clear_cache() -> None:
    """Forget every in-process measurement."""
    _CACHE.clear()
