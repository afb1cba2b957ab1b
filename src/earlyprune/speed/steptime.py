"""How long one training step of a pruned structure takes: the step-time predictor behind ``target="latency"``.

The predicted forward + backward time of the model with ``r_g`` channels removed from every group ``g`` is

    T̂(r) = α · Σ_l t_l(c_in,l(r), c_out,l(r))  +  ρ₀   (+ ρ₁ · A(r) / A(0), not fitted by default)

* ``t_l`` — layer ``l`` (convolution, linear or normalisation layer of a group) timed **standalone**, forward +
  backward, by a :class:`~earlyprune.criteria.LatencyTable` on a grid of its input × output widths (a prunable
  dimension of at most 8 multiples of the alignment ``align`` at every multiple — where kernels step with the
  vector width, e.g. every 16 channels in fp32 on an AVX-512 CPU — a wider one at 1, ¾, ½, ¼ and ⅛ of its original
  width rounded to ``align``), on the model's device, at the training batch size, dtype, autocast and memory
  format, and interpolated piecewise-bilinearly in between (a convolution's MACs are bilinear in its two widths,
  so the interpolation is exact for a MACs-bound layer and follows the measured efficiency loss of narrow ones).
  The widths of a layer follow from ``r``: ``c_out,l = C_out,l − Σ_g r_g·mult(g, l, out)``, likewise for inputs
  (the layers' roles in :class:`~earlyprune.graph.groups.ChannelGroup`);
* ``α`` — standalone layers do not run exactly as inside the model (memory allocation and page faults, caches,
  the input gradient of the first layer), so their sum is scaled;
* ``ρ₀`` — the rest of the step that does not shrink with the widths: one dispatch per operator (hundreds per
  step), the loss, autograd's own bookkeeping — on a CPU in bf16 a CIFAR ResNet-56 at a third of its width still
  takes 43 % of the dense step;
* ``ρ₁·A(r)/A(0)`` — optional: element-wise work that scales with the activations the layers write
  (``A(r) = Σ_l c_out,l·positions_l``).

The coefficients are fitted (:meth:`StepTimePredictor.fit_rest`, least squares, all ≥ 0) to **measured** steps of
the real model, interleaved: the dense one, a calibration structure (every group narrowed uniformly by
``calibration`` of its width, on a pruned copy) and — :func:`refine_step_time`, which the pruner calls with its
first plan — the structure the run is about to reach. Of the forms compared on CIFAR ResNet-20/56
(``benchmarks/README.md``, "Step-time predictor"), ``α·layers + ρ₀`` predicted unseen structures best.

The clock: on a CPU with one intra-op thread, the **CPU time of the process** (immune to other processes sharing
the cores, which on a shared machine inflate wall times 2–3×; see ``benchmarks/README.md``); otherwise wall time
(synchronised on CUDA). Every value here is in seconds of that clock.

:func:`measure_step_time` builds a predictor for a model; :class:`StepTimePredictor` holds only numbers (its
layer curves and ρ), so it is cheap to query, to test with fake curves and to store in a checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import warnings
from bisect import bisect_right
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..core import timing
from ..core.validation import (
    Boolean,
    InstanceOf,
    Interval,
    InvalidParameterError,
    Rule,
    check_args,
    rule,
)
from ..criteria.latency import LatencyTable, _channels, _timed, traced
from ..graph.groups import ChannelGroups
from ..graph.metrics import CHANNEL_LAYERS, _flat_tensors, is_depthwise

#: the coefficients of ``T̂`` (in the order of :meth:`StepTimePredictor.fit_rest`'s columns), and those fitted by
#: default: on CIFAR ResNet-20/56 in fp32 and bf16 + channels_last, ``α·Σt + ρ₀`` fitted to the dense step and the
#: uniform half predicted unseen structures best (median error of the speedup 5 %, 88 % within ±10 %; with the
#: activation term 6–8 % and 64–78 %: ``benchmarks/README.md``, "Step-time predictor")
FIT_TERMS = ("alpha", "rho1", "rho0")
FIT = ("alpha", "rho0")
#: fractions of a dimension's original width timed for the layer curves of wide layers
GRID = (1.0, 0.75, 0.5, 0.25, 0.125)
#: a dimension of at most this many multiples of the alignment is timed at every multiple (narrow layers, where
#: one step of the vector width changes the time most)
DENSE_GRID = 8


# -- layer curves ---------------------------------------------------------------------------------------------
def _interp_index(grid: Sequence[float], x: float) -> tuple[int, float]:
    """Segment ``i`` of ascending ``grid`` holding ``x`` and the weight of ``grid[i + 1]`` (extrapolating linearly
    past both ends)."""
    i = min(max(bisect_right(grid, x) - 1, 0), len(grid) - 2)
    return i, (x - grid[i]) / (grid[i + 1] - grid[i])


@dataclass
class LayerCurve:
    """Measured time of one layer over a grid of its widths (``seconds[i, j]`` at ``in_widths[i]`` ×
    ``out_widths[j]``; a dimension that is never pruned has a single width). ``tied``: one channel dimension
    (normalisation, depthwise convolution): the input width equals the output width."""

    name: str
    in_widths: list[int]
    out_widths: list[int]
    seconds: list[list[float]]
    tied: bool = False
    positions: int = 1   #: output elements per channel and batch (activation count per output channel)

    def time(self, c_in: float, c_out: float) -> float:
        """Piecewise-bilinear interpolation of the grid (linear extrapolation outside it), never below 0."""
        xs, ys, t = self.in_widths, self.out_widths, self.seconds
        if self.tied:
            c_in = c_out
        if len(xs) == 1 and len(ys) == 1:
            return t[0][0]
        if len(xs) == 1:
            j, b = _interp_index(ys, c_out)
            return max(t[0][j] * (1 - b) + t[0][j + 1] * b, 0.0)
        if len(ys) == 1:
            i, a = _interp_index(xs, c_in)
            return max(t[i][0] * (1 - a) + t[i + 1][0] * a, 0.0)
        i, a = _interp_index(xs, c_in)
        j, b = _interp_index(ys, c_out)
        value = ((1 - a) * (1 - b) * t[i][j] + a * (1 - b) * t[i + 1][j] + (1 - a) * b * t[i][j + 1]
                 + a * b * t[i + 1][j + 1])
        return max(value, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "in_widths": list(self.in_widths), "out_widths": list(self.out_widths),
                "seconds": [list(map(float, row)) for row in self.seconds], "tied": self.tied,
                "positions": self.positions}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerCurve":
        return cls(str(data["name"]), [int(v) for v in data["in_widths"]], [int(v) for v in data["out_widths"]],
                   [[float(v) for v in row] for row in data["seconds"]], bool(data.get("tied", False)),
                   int(data.get("positions", 1)))


@dataclass
class Link:
    """Group channel → layer dimension: removing one channel of the group removes ``multiplicity`` entries of
    dimension ``role`` ("in" / "out"; "tied" for one-dimension layers) of curve ``layer``."""

    layer: int
    role: str
    multiplicity: int


@dataclass
class StepTimePredictor:
    """``T̂(r) = α·Σ_l t_l(c_in,l(r), c_out,l(r)) + ρ₀ + ρ₁·A(r)/A(0)`` (see the module docstring).

    Args:
        names: group names, in group order; ``removed`` vectors follow it.
        widths: the groups' original widths.
        curves: one :class:`LayerCurve` per timed layer, at its original widths ``(in_widths[-1],
            out_widths[-1])``.
        links: per group, how its channels narrow the curves.
        rho0, rho1: the rest of the step: constant, and (optional) the part that scales with the activations.
        alpha: the scale of the standalone layer times.
        dense_seconds: the measured step of the original model (the reference of ``target="latency"``).
        info: what was measured (batch size, clock, calibration…), for reports.
    """

    names: list[str]
    widths: list[int]
    curves: list[LayerCurve]
    links: list[list[Link]]
    rho0: float = 0.0
    rho1: float = 0.0
    dense_seconds: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if len(self.links) != len(self.names) or len(self.widths) != len(self.names):
            raise InvalidParameterError(f"names, widths and links must have one entry per group, got "
                                        f"{len(self.names)}, {len(self.widths)} and {len(self.links)} (build the "
                                        f"predictor with measure_step_time(groups), or from_dict of a saved one)")
        self._full = [(c.in_widths[-1], c.out_widths[-1]) for c in self.curves]
        self._a0 = float(sum(c.out_widths[-1] * c.positions for c in self.curves)) or 1.0
        self._touching: list[list[int]] = [[] for _ in self.curves]
        for g, links in enumerate(self.links):
            for layer in sorted({link.layer for link in links}):
                self._touching[layer].append(g)
        # groups sharing a layer: a move of one changes the time saved by a move of the other
        self.neighbours = [sorted({h for link in links for h in self._touching[link.layer]}) for links in self.links]

    # -- widths ------------------------------------------------------------------------------------------------
    def vector(self, removed: Mapping[str, int] | Sequence[int] | np.ndarray) -> np.ndarray:
        """``removed`` as a vector in group order (a mapping may omit groups: 0)."""
        if isinstance(removed, Mapping):
            unknown = set(removed) - set(self.names)
            if unknown:
                raise InvalidParameterError(f"unknown groups {sorted(unknown)}; the predictor knows {self.names}")
            return np.array([int(removed.get(n, 0)) for n in self.names], dtype=np.int64)
        vec = np.asarray(removed, dtype=np.int64)
        if vec.shape != (len(self.names),):
            raise InvalidParameterError(f"removed must have one entry per group ({len(self.names)}), got shape "
                                        f"{vec.shape}")
        return vec

    def layer_widths(self, removed: np.ndarray, layers: Sequence[int] | None = None) -> dict[int, tuple[int, int]]:
        """``layer → (c_in, c_out)`` after removing ``removed`` (for ``layers``, default all)."""
        layers = range(len(self.curves)) if layers is None else layers
        out = {}
        for l in layers:
            c_in, c_out = self._full[l]
            d_in = d_out = d_tied = 0
            for g in self._touching[l]:
                if not removed[g]:
                    continue
                for link in self.links[g]:
                    if link.layer != l:
                        continue
                    if link.role == "in":
                        d_in += removed[g] * link.multiplicity
                    elif link.role == "out":
                        d_out += removed[g] * link.multiplicity
                    else:
                        d_tied = max(d_tied, removed[g] * link.multiplicity)
            if self.curves[l].tied:
                c_in = c_out = max(c_out - max(d_tied, d_out, d_in), 1)
            else:
                c_in, c_out = max(c_in - d_in, 1), max(c_out - d_out, 1)
            out[l] = (c_in, c_out)
        return out

    # -- prediction -------------------------------------------------------------------------------------------
    def _partial(self, removed: np.ndarray, layers: Sequence[int]) -> tuple[float, float]:
        """(layer seconds, activation elements) of ``layers`` after ``removed``."""
        seconds = acts = 0.0
        for l, (c_in, c_out) in self.layer_widths(removed, layers).items():
            curve = self.curves[l]
            seconds += curve.time(c_in, c_out)
            acts += c_out * curve.positions
        return seconds, acts

    def layer_seconds(self, removed: Mapping[str, int] | Sequence[int] | np.ndarray) -> float:
        """``Σ_l t_l``: the timed layers alone, as measured standalone (before the scale ``α``)."""
        return self._partial(self.vector(removed), range(len(self.curves)))[0]

    def predict(self, removed: Mapping[str, int] | Sequence[int] | np.ndarray = ()) -> float:
        """Predicted step seconds ``T̂(r)`` with ``removed[g]`` channels gone from each group (relative to the
        original widths; ``()``: the dense model)."""
        vec = self.vector(removed) if len(removed) else np.zeros(len(self.names), dtype=np.int64)
        seconds, acts = self._partial(vec, range(len(self.curves)))
        return self.alpha * seconds + self.rho0 + self.rho1 * acts / self._a0

    def saving(self, removed: np.ndarray, group: int, more: int) -> float:
        """Seconds saved by removing ``more`` further channels of ``group`` on top of ``removed`` (only the layers
        the group touches are evaluated)."""
        layers = sorted({link.layer for link in self.links[group]})
        before_s, before_a = self._partial(removed, layers)
        after = removed.copy()
        after[group] += more
        after_s, after_a = self._partial(after, layers)
        return self.alpha * (before_s - after_s) + self.rho1 * (before_a - after_a) / self._a0

    def predicted_dense(self) -> float:
        return self.predict()

    def fit_rest(self, measured: Sequence[tuple[np.ndarray, float]], terms: Sequence[str] = FIT) -> None:
        """Fit the coefficients named in ``terms`` (``"alpha"``, ``"rho1"``, ``"rho0"``; the others are 0) to measured
        steps ``[(removed, seconds), …]`` by least squares, all ≥ 0; one measurement fits ``α`` alone. A fit that
        would need a negative coefficient (timing noise) drops that term."""
        rows, rhs = [], []
        for removed, seconds in measured:
            layer_s, acts = self._partial(self.vector(removed), range(len(self.curves)))
            rows.append((layer_s, acts / self._a0, 1.0))
            rhs.append(seconds)
        a, b = np.array(rows), np.array(rhs)
        unknown = set(terms) - set(FIT_TERMS)
        if unknown:
            raise InvalidParameterError(f"terms must be among {', '.join(FIT_TERMS)}, got {sorted(unknown)}")
        terms = [FIT_TERMS.index(t) for t in terms][:len(rows)] if len(rows) >= 2 else [0]
        while True:
            coef = np.zeros(3)
            if terms:
                coef[terms] = np.linalg.lstsq(a[:, terms], b, rcond=None)[0]
            negative = [t for t in terms if coef[t] < 0]
            if not negative:
                break
            terms = [t for t in terms if t != min(negative, key=lambda t: coef[t])]
        if coef[0] <= 0 and coef[1] <= 0 and coef[2] <= 0:   # nothing fits: trust the table
            coef = np.array([1.0, 0.0, 0.0])
        self.alpha, self.rho1, self.rho0 = float(coef[0]), float(coef[1]), float(coef[2])

    # -- state ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "widths": list(self.widths), "curves": [c.to_dict() for c in self.curves],
                "links": [[[k.layer, k.role, k.multiplicity] for k in links] for links in self.links],
                "rho0": self.rho0, "rho1": self.rho1, "alpha": self.alpha, "dense_seconds": self.dense_seconds,
                "info": dict(self.info)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StepTimePredictor":
        return cls(list(data["names"]), [int(w) for w in data["widths"]],
                   [LayerCurve.from_dict(c) for c in data["curves"]],
                   [[Link(int(l), str(r), int(m)) for l, r, m in links] for links in data["links"]],
                   float(data["rho0"]), float(data["rho1"]), data.get("dense_seconds"), dict(data.get("info", {})),
                   float(data.get("alpha", 1.0)))


# -- building a predictor for a model -------------------------------------------------------------------------
def _grid(width: int, align: int) -> list[int]:
    """Widths a prunable dimension is timed at: every multiple of ``align`` for narrow dimensions, else
    :data:`GRID`'s fractions rounded to ``align`` (and the width itself)."""
    if width <= align:
        return [width]
    if width // align <= DENSE_GRID:
        points = {width} | set(range(align, width, align))
    else:
        points = {width} | {max(align, int(round(width * f / align)) * align) for f in GRID}
    return sorted(w for w in points if w <= width)


def structure_links(groups: ChannelGroups) -> tuple[list[nn.Module], list[list[Link]]]:
    """The timed layers of ``groups`` and, per group, which of their dimensions its channels narrow."""
    layers: list[nn.Module] = []
    index: dict[int, int] = {}
    links: list[list[Link]] = []
    for g in groups:
        mine: dict[tuple[int, str], Link] = {}
        for ref in g.layers:
            m = ref.module
            if not _timed(m):
                continue
            if id(m) not in index:
                index[id(m)] = len(layers)
                layers.append(m)
            tied = is_depthwise(m) or not isinstance(m, CHANNEL_LAYERS)
            role = "tied" if tied else ref.role
            key = (index[id(m)], role)
            if key in mine:
                mine[key].multiplicity = (max(mine[key].multiplicity, ref.multiplicity) if tied
                                          else mine[key].multiplicity + ref.multiplicity)
            else:
                mine[key] = Link(index[id(m)], role, ref.multiplicity)
        links.append(list(mine.values()))
    return layers, links


def _shapes(groups: ChannelGroups, layers: Sequence[nn.Module]) -> dict[nn.Module, tuple[tuple[int, ...], int]]:
    """Input shape and output positions per channel (per example) of every layer, from one traced forward."""
    found: dict[nn.Module, tuple[tuple[int, ...], int]] = {}

    def record(mod: nn.Module, inputs: Any, output: Any) -> None:
        if mod in found or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        out = output if isinstance(output, torch.Tensor) else _flat_tensors(output)[0]
        channels = _channels(mod)[1]
        found[mod] = (tuple(inputs[0].shape), max(out.numel() // max(out.shape[0] * channels, 1), 1)
                      if out.dim() > 1 else 1)
    traced(groups, layers, record)
    return found


def layer_curves(groups: ChannelGroups, table: LatencyTable, align: int = 8
                 ) -> tuple[list[LayerCurve], list[list[Link]]]:
    """Time every layer of ``groups`` over its width grid with ``table`` (cached per layer signature)."""
    layers, links = structure_links(groups)
    prunable_in = {link.layer for group_links in links for link in group_links if link.role in ("in", "tied")}
    prunable_out = {link.layer for group_links in links for link in group_links if link.role in ("out", "tied")}
    shapes = _shapes(groups, layers)
    units = {l: 1 for l in range(len(layers))}
    for g, group_links in zip(groups, links):
        for link in group_links:
            units[link.layer] = math.lcm(units[link.layer], g.unit_size * link.multiplicity)
    curves = []
    with table._file_cache():
        for l, m in enumerate(layers):
            c_in, c_out = _channels(m)
            tied = is_depthwise(m) or not isinstance(m, CHANNEL_LAYERS)
            if m not in shapes:   # not reached by the traced forward: nothing to time
                curves.append(LayerCurve(_name(groups, m), [c_in], [c_out], [[0.0]], tied, 1))
                continue
            shape, positions = shapes[m]
            step = math.lcm(align, units[l])
            outs = _grid(c_out, step) if l in prunable_out else [c_out]
            ins = outs if tied else (_grid(c_in, step) if l in prunable_in else [c_in])
            if tied:
                seconds = [[table._layer_time(m, w, w, shape) for w in outs]]
                curves.append(LayerCurve(_name(groups, m), [outs[-1]], outs, seconds, True, positions))
            else:
                seconds = [[table._layer_time(m, i, o, shape) for o in outs] for i in ins]
                curves.append(LayerCurve(_name(groups, m), ins, outs, seconds, False, positions))
    return curves, links


def _name(groups: ChannelGroups, m: nn.Module) -> str:
    return groups._name_of(m)


def batched(inputs: Any, batch_size: int) -> Any:
    """``inputs`` (tensor, tuple/list or dict) with every tensor's first dimension tiled to ``batch_size``."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0 or inputs.shape[0] == batch_size:
            return inputs
        return inputs[torch.arange(batch_size, device=inputs.device) % inputs.shape[0]].clone()
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(batched(x, batch_size) for x in inputs)
    if isinstance(inputs, dict):
        return {k: batched(v, batch_size) for k, v in inputs.items()}
    return inputs


def time_step(model: nn.Module, inputs: Any, *, autocast: torch.dtype | None = None, repeats: int = 5,
              warmup: int = 2, clock: str = "auto") -> float:
    """Median seconds (on :func:`earlyprune.core.timing.clock`'s clock) of one forward + backward of ``model`` on
    ``inputs`` (loss: the mean of every floating output; :func:`earlyprune.core.timing.train_step` without an
    optimizer), on ``model``'s device, in train mode. Gradients are left in ``.grad``: time a copy."""
    device = timing.device_of(model)
    step = timing.train_step(model, None, inputs, loss_fn=None, autocast=autocast)
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return timing.time_train_step(step, device=device, repeats=repeats, warmup=warmup, clock=clock)


def uniform_removal(groups: ChannelGroups, fraction: float, align: int = 8) -> dict[str, int]:
    """Channels to remove from each group to narrow it by about ``fraction`` (kept widths rounded to ``align``
    and to the group's removal unit; groups narrower than that are left alone)."""
    out = {}
    for g in groups:
        step = math.lcm(align, g.unit_size, g.width_multiple)
        if g.width <= step:
            continue
        keep = max(step, int(round(g.width * (1 - fraction) / step)) * step)
        if keep < g.width:
            out[g.name] = g.width - keep
    return out


def pruned_copy(model: nn.Module, example_inputs: Any, removed: Mapping[str, int],
                ignored_layers: Sequence[nn.Module] = ()) -> nn.Module:
    """A deep copy of ``model`` with the last ``removed[name]`` channels of each group physically removed."""
    from ..graph.plan import Plan
    from ..surgery.engine import PruningEngine

    twin = copy.deepcopy(model)
    names = {m: n for n, m in model.named_modules()}
    twin_modules = dict(twin.named_modules())
    ignored = [twin_modules[names[m]] for m in ignored_layers if m in names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = ChannelGroups(twin, example_inputs, ignored_layers=ignored)
    remove = {g.name: list(range(g.width - removed[g.name], g.width)) for g in groups
              if removed.get(g.name, 0) > 0}
    PruningEngine(groups).apply(Plan(remove=remove, structure=[], names=groups.names, channels=0, macs=0.0,
                                     params=0.0))
    return twin


def measure_step_time(groups: ChannelGroups, *, batch_size: int | None = None, autocast: torch.dtype | None = None,
                      channels_last: bool = False, align: int = 8, calibration: float | None = 0.5,
                      table: LatencyTable | None = None, repeats: int = 5, clock: str = "auto"
                      ) -> StepTimePredictor:
    """Build the :class:`StepTimePredictor` of ``groups.model`` by measuring it on its device.

    Args:
        groups: the model's channel groups, **before** pruning (the reference of every prediction).
        batch_size: the training batch size (None: the example inputs').
        autocast: the training autocast dtype (None: the parameters' dtype).
        channels_last: time 4-D inputs in channels_last memory format, as the training does.
        align: grid widths are multiples of this (use the multiple kept widths are rounded to).
        calibration: fraction by which a uniformly narrowed copy is timed to fit the rest of the step (``ρ₀``,
            ``ρ₁``); None fits ``ρ₀`` alone from the dense step.
        table: the layer timer (default: forward + backward, ``repeats`` runs, same clock).
        repeats: timed runs per measurement (median kept).
        clock: ``"auto"``, ``"cpu"`` or ``"wall"`` (see :func:`earlyprune.core.timing.clock`).
    """
    model = groups.model
    device = timing.device_of(model)
    if table is None:
        table = LatencyTable(repeats=repeats, warmup=2, batch_size=batch_size, autocast=autocast,
                             channels_last=channels_last, clock=clock)
    watch = timing.Stopwatch()
    watch.__enter__()
    curves, links = layer_curves(groups, table, align)
    predictor = StepTimePredictor(groups.names, groups.widths(), curves, links)
    inputs = batched(groups.example_inputs, batch_size) if batch_size else groups.example_inputs
    inputs = _to_format(inputs, channels_last)

    removals = [np.zeros(len(groups), dtype=np.int64)]
    uniform = uniform_removal(groups, calibration, align) if calibration else {}
    if uniform:
        removals.append(predictor.vector(uniform))
    medians, _ = _measure_structures(groups, predictor, removals, inputs, autocast, channels_last, repeats, clock)
    points = list(zip(removals, medians))
    dense = points[0][1]
    predictor.fit_rest(points)
    predictor.dense_seconds = dense
    predictor.info = {"batch_size": batch_size or _batch_size_of(groups.example_inputs), "autocast": str(autocast) if autocast else None,
                      "channels_last": bool(channels_last), "align": align, "device": device.type,
                      "clock": timing.clock(device, clock), "calibration": calibration,
                      "measured": [float(s) for _, s in points],
                      "predicted": [predictor.predict(r) for r, _ in points],
                      "points": [[[int(v) for v in r], float(t)] for r, t in points], "repeats": repeats,
                      "layer_timings": table.measured, "seconds_spent": watch.elapsed()}
    return predictor


def _measure_structures(groups: ChannelGroups, predictor: StepTimePredictor, removals: Sequence[np.ndarray],
                        inputs: Any, autocast: torch.dtype | None, channels_last: bool, repeats: int, clock: str
                        ) -> tuple[list[float], list[float]]:
    """Median step seconds of the model at each structure (``removals[0]`` must be the unpruned one), timed
    interleaved round by round on copies, and the median paired ratio of each to the first."""
    model = groups.model
    device = timing.device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        nets = []
        for removed in removals:
            names = {n: int(r) for n, r in zip(predictor.names, removed) if r}
            nets.append(pruned_copy(model, groups.example_inputs, names, groups.ignored_layers) if names
                        else copy.deepcopy(model))
        if channels_last:
            nets = [net.to(memory_format=torch.channels_last) for net in nets]
        for net in nets:
            time_step(net, inputs, autocast=autocast, repeats=1, warmup=1, clock=clock)
        times: list[list[float]] = [[] for _ in nets]
        for _ in range(repeats):   # interleaved: a drift of the machine affects all alike
            for net, out in zip(nets, times):
                out.append(time_step(net, inputs, autocast=autocast, repeats=1, warmup=0, clock=clock))
        del nets
    medians = [statistics.median(t) for t in times]
    ratios = [statistics.median(a / b for a, b in zip(t, times[0])) for t in times]
    return medians, ratios


def refine_step_time(predictor: StepTimePredictor, groups: ChannelGroups, removed: np.ndarray, *,
                     batch_size: int | None = None, autocast: torch.dtype | None = None, channels_last: bool = False,
                     repeats: int = 5, clock: str = "auto") -> None:
    """Measure the structure a plan is about to reach (``removed`` channels per group, from the original widths,
    on a pruned copy of the still-unpruned ``groups.model``) beside the dense model and refit the coefficients to all
    the measured structures — so that the prediction is calibrated where the selection needs it most."""
    removed = predictor.vector(removed)
    if not removed.any() or any(np.array_equal(removed, np.array(r)) for r, _ in predictor.info.get("points", [])):
        return
    inputs = batched(groups.example_inputs, batch_size) if batch_size else groups.example_inputs
    inputs = _to_format(inputs, channels_last)
    _, ratios = _measure_structures(groups, predictor, [np.zeros_like(removed), removed], inputs, autocast,
                                    channels_last, repeats, clock)
    points = [(np.array(r, dtype=np.int64), float(t)) for r, t in predictor.info.get("points", [])]
    dense = predictor.dense_seconds if predictor.dense_seconds else predictor.predict()
    points.append((removed, dense * ratios[1]))   # paired with the dense model, on the dense run's scale
    predictor.fit_rest(points)
    predictor.info["points"] = [[[int(v) for v in r], float(t)] for r, t in points]
    predictor.info["measured"] = [float(t) for _, t in points]
    predictor.info["predicted"] = [predictor.predict(r) for r, _ in points]


def _batch_size_of(inputs: Any) -> int | None:
    tensors = [t for t in _flat_tensors(inputs) if t.dim()]
    return int(tensors[0].shape[0]) if tensors else None


def _to_format(inputs: Any, channels_last: bool) -> Any:
    if not channels_last:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs.contiguous(memory_format=torch.channels_last) if inputs.dim() == 4 else inputs
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to_format(x, True) for x in inputs)
    if isinstance(inputs, dict):
        return {k: _to_format(v, True) for k, v in inputs.items()}
    return inputs


@dataclass
class StepTime:
    """How ``target="latency"`` measures the training step it predicts (pass as ``step_time=`` to
    :class:`~earlyprune.EarlyPruner` / :func:`~earlyprune.prune` to change the defaults).

    Args:
        batch_size: the training batch size; None: the batch size of the batches the pruner sees (else the
            example inputs').
        autocast: the training autocast dtype (e.g. ``torch.bfloat16``); None: the parameters' dtype.
        channels_last: time in channels_last memory format; None: as the example inputs are laid out.
        calibration: fraction of every group removed in the calibration copy (see :func:`measure_step_time`);
            None: no calibration copy.
        repeats: timed runs per measurement.
        clock: ``"auto"``, ``"cpu"`` or ``"wall"``.
        cache_path: JSON file keeping the layer timings across runs.
        refine: also measure the structure the first plan reaches and refit the predictor to it
            (:func:`refine_step_time`).
    """

    batch_size: int | None = None
    autocast: torch.dtype | None = None
    channels_last: bool | None = None
    calibration: float | None = 0.5
    repeats: int = 5
    clock: str = "auto"
    cache_path: str | None = None
    refine: bool = True

    RULES: ClassVar[dict[str, Rule]] = {
        "batch_size": rule(Interval(Integral, 0, None, closed="neither"), None),
        "autocast": rule(InstanceOf(torch.dtype, "a torch.dtype (e.g. torch.bfloat16)"), None),
        "channels_last": rule(Boolean(), None),
        "calibration": rule(Interval(Real, 0, 1, closed="neither"), None,
                            hint="the fraction of every group removed in the calibration copy"),
        "repeats": rule(Interval(Integral, 1, None)),
        "clock": timing.CLOCK,
        "cache_path": rule(InstanceOf((str, os.PathLike), "a path"), None),
        "refine": rule(Boolean()),
    }

    def __post_init__(self) -> None:
        check_args(self.RULES, {f: getattr(self, f) for f in self.RULES})

    def _channels_last(self, groups: ChannelGroups) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        first = _first_4d(groups.example_inputs)
        return bool(first is not None and first.is_contiguous(memory_format=torch.channels_last)
                    and not first.is_contiguous())

    def refit(self, predictor: StepTimePredictor, groups: ChannelGroups, removed: np.ndarray, *,
              batch_size: int | None = None) -> None:
        """:func:`refine_step_time` with these settings (nothing if ``refine`` is off)."""
        if self.refine:
            refine_step_time(predictor, groups, removed, batch_size=self.batch_size or batch_size,
                             autocast=self.autocast, channels_last=self._channels_last(groups),
                             repeats=self.repeats, clock=self.clock)

    def measure(self, groups: ChannelGroups, *, batch_size: int | None = None, align: int = 8
                ) -> StepTimePredictor:
        """The predictor of ``groups.model`` (``batch_size``: the one seen in training, used when
        :attr:`batch_size` is None)."""
        channels_last = self._channels_last(groups)
        table = LatencyTable(repeats=self.repeats, warmup=2, batch_size=self.batch_size or batch_size,
                             autocast=self.autocast, channels_last=channels_last, clock=self.clock,
                             cache_path=self.cache_path)
        return measure_step_time(groups, batch_size=self.batch_size or batch_size, autocast=self.autocast,
                                 channels_last=channels_last, align=align, calibration=self.calibration, table=table,
                                 repeats=self.repeats, clock=self.clock)


def _first_4d(inputs: Any) -> torch.Tensor | None:
    for t in _flat_tensors(inputs):
        if t.dim() == 4:
            return t
    return None
