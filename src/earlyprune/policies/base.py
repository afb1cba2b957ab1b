"""What every when-to-prune policy is.

A policy is one small class registered by name in :data:`POLICIES`. Training runs dense until the policy says
so; then one epoch prunes (PaT Algorithm 1: S iterative steps) and the rest of training is sparse (Algorithm 2).
The pruner asks the policy

* :meth:`Policy.start` once, before training: should epoch 0 already be the pruning epoch?
* :meth:`Policy.update` at the end of every dense epoch with an :class:`EpochReport`: should the **next**
  epoch be the pruning epoch?

``update`` is the only method that may change the policy's state; every query is free of side effects, and
:meth:`state_dict` / :meth:`load_state_dict` let a resumed run decide identically. Policies built on
:meth:`Policy.evaluate` make this structural: ``evaluate`` computes the decision *and the next state* without
touching the policy, ``update`` commits it.

:class:`SignalPolicy` is the base of the policies that watch a signal (EPI, EarlyCroP, Early-Bird): a rule, plus a
cap on dense epochs at which they prune anyway — said in the log (a warning) and in ``pruner.history``
(``trigger_reason = "cap"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..core.registry import Registry
from ..core.validation import Interval, InvalidParameterError, Rule, checked, rule
from ..graph.groups import ChannelGroups


@dataclass
class EpochReport:
    """What the pruner hands a policy at the end of a dense epoch.

    The signals are computed once per epoch by :class:`~earlyprune.signals.SignalRecorder` from what the pruner
    already has (no extra pass over the data); a field is None when it was neither asked for
    (:attr:`Policy.needs_signals`) nor recorded.
    """

    epoch: int                                   #: the epoch that just ended (0-based)
    model: nn.Module
    groups: ChannelGroups
    scores: dict[str, torch.Tensor] | None = None  #: epoch-averaged criterion scores, if accumulated
    ratio: float = 0.0                           #: the pruning target of the run
    extra: dict[str, Any] = field(default_factory=dict)
    #: PaT's N_t: kept channels per group of the sub-network the global ranking of ``scores`` selects at ``ratio``
    structure: list[int] | None = None
    #: EarlyCroP's Δ_t = ‖θ_t − θ_0‖², θ_0 being the parameters when the pruner was built
    weight_change: float | None = None
    #: Early-Bird's mask: |γ| of all BatchNorm layers above one global quantile at ``ratio`` (True = kept)
    bn_mask: torch.Tensor | None = None
    #: the criterion's family, ``"magnitude"`` or ``"gradient"`` (EPI's default τ depends on it)
    criterion_family: str = "magnitude"
    #: every signal recorded this epoch (the JSON-ready record that goes into ``pruner.history``)
    signals: dict[str, Any] = field(default_factory=dict)
    #: EarlyCroP's ``‖θ_0‖²`` (recorded with ``weight_change``)
    initial_norm: float | None = None
    #: optimizer steps (``pruner.step()`` calls) since training started; None: unknown (the step gate is open)
    steps: int | None = None


@dataclass(frozen=True)
class Decision:
    """A policy's answer for one epoch, computed without side effects by :meth:`Policy.evaluate`."""

    trigger: bool                    #: prune in the next epoch?
    reason: str | None = None        #: "signal", "cap" or "schedule" when ``trigger``
    signal: float | None = None      #: the value the rule looked at (EPI_t, the weight-change score, …)
    message: str = ""                #: what the log says
    state: dict[str, Any] | None = field(default=None, repr=False, compare=False)  #: the state to commit


class Policy:
    """Base class of when-to-prune policies.

    A policy implements :meth:`evaluate` (pure: the decision and the state after it) or, minimally,
    :meth:`update`.
    """

    name: ClassVar[str] = "policy"
    #: whether the policy picks its pruning epoch by itself (PaT's "automatic" row in the comparison tables):
    #: True for signal-driven policies and for those whose epoch is fixed by definition (init, before); False for
    #: an epoch chosen by hand or a random baseline
    automatic: ClassVar[bool] = False
    #: whether the pruner must accumulate criterion scores during dense epochs for this policy
    needs_scores: ClassVar[bool] = False
    #: the per-epoch signals the policy reads from its report even when signal recording is off
    #: (``"structure"``, ``"weight_change"``, ``"bn_mask"``; see :mod:`earlyprune.signals`)
    needs_signals: ClassVar[frozenset[str]] = frozenset()
    #: spread the pruning steps over this many batches from the start of the pruning epoch (None: the whole
    #: epoch). A policy that prunes before training (3SP, CroP) sets a few batches.
    pruning_batches: int | None = None
    #: the cumulative step schedule of the pruning epoch, a name of :data:`earlyprune.planning.selection.SCHEDULES`:
    #: PaT's "exponential" (Algorithm 1) by default; ``before`` uses CroPit / SNAP-it's "halving"
    schedule: ClassVar[str] = "exponential"
    #: the decision of the last :meth:`update` (None before the first, or for policies that override update)
    last_decision: Decision | None = None
    #: False for a policy that never prunes (``never``): the pruner then measures nothing for a removal
    prunes: ClassVar[bool] = True

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "Policy":
        raise InvalidParameterError(f"policy {cls.name!r} takes no ':' argument, got {cls.name}:{arg}")

    def validate(self, groups: ChannelGroups, criterion: Any) -> None:
        """Raise a clear error if the policy cannot work with this model or criterion (called by
        :class:`~earlyprune.EarlyPruner` at construction, before any training)."""

    def start(self) -> bool:
        """Prune during epoch 0?"""
        return False

    def epoch_bounds(self) -> tuple[int | None, int | None]:
        """``(earliest, latest)`` epoch the policy can prune in, as far as its definition fixes them (None: it
        depends on a signal, or has no bound). A run checks them against its length before training: a schedule
        that starts after the last epoch would silently train dense."""
        return (0, 0) if self.start() else (None, None)

    def run_length_problem(self, epochs: int, spec: str | None = None, *,
                           flags: bool = False) -> tuple[str | None, str | None]:
        """Whether a run of ``epochs`` epochs (0 … epochs−1) can prune with this policy: ``(error, warning)``.
        An error when the policy's definition puts its pruning epoch after the last one (the run would train
        dense without a word); a warning when only a signal policy's cap lies beyond it. ``spec`` names the
        policy (default: its registered name); ``flags`` words the messages as ``earlyprune train``'s flags."""
        first, last = self.epoch_bounds()
        spec = spec or self.name
        run = f"--epochs {epochs}" if flags else f"a run of {epochs} epochs"
        policy, option = (f"--policy {spec}", "--policy ") if flags else (f"policy {spec!r}", "policy=")
        if first is not None and first >= epochs:
            return (f"{policy} prunes in epoch {first} at the earliest, but {run} trains epochs 0-{epochs - 1}: the "
                    f"run would never prune; choose an epoch below {epochs} (or {option}never for a dense run)", None)
        if last is not None and last >= epochs:
            if first is not None:
                return (f"{policy} may prune as late as epoch {last}, but {run} trains epochs 0-{epochs - 1}: keep "
                        f"the range below {epochs}", None)
            fix = (f"set a cap below {epochs}, e.g. {option}{spec.partition(':')[0]}:cap={epochs - 1}" if epochs > 1
                   else f"a signal needs a dense epoch first: train more epochs, or use {option}epoch:0")
            return None, (f"{policy}: if its signal does not fire, it prunes at its cap, epoch {last}, which {run} "
                          f"never reaches (the run would stay dense); {fix}")
        return None, None

    def scheduled_epoch(self) -> int | None:
        """The epoch the policy prunes in when its definition (or its draw) fixes one — ``epoch:K``'s K, the
        epoch ``random`` drew, 0 for ``init`` — else None (a signal decides). Reports use it to say why a run
        did not prune."""
        return 0 if self.start() else None

    def evaluate(self, report: EpochReport) -> Decision:
        """The decision for ``report`` and the state after it — without changing the policy (asking twice gives
        the same answer)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither evaluate() nor update()")

    def update(self, report: EpochReport) -> bool:
        """Called after each dense epoch; True makes epoch ``report.epoch + 1`` the pruning epoch. Commits the
        state :meth:`evaluate` computed."""
        decision = self.evaluate(report)
        if decision.state is not None:
            self.load_state_dict(decision.state)
        self.last_decision = decision
        return decision.trigger

    def decide(self, report: EpochReport) -> Decision:
        """What :class:`~earlyprune.EarlyPruner` calls after each dense epoch: :meth:`update`, and the decision
        with its reason ("signal", "cap", "schedule"; None when not triggered, or for a policy that overrides
        ``update`` without recording a :class:`Decision`)."""
        self.last_decision = None
        trigger = bool(self.update(report))
        made = self.last_decision
        if made is None:
            return Decision(trigger)
        return Decision(trigger, made.reason if trigger else None, made.signal, made.message if trigger else "")

    def signal(self) -> float | None:
        """The latest value of the signal the policy watches (None if it watches none, or before any)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


POLICIES: Registry[Policy] = Registry("policy", Policy)


def optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def parse_options(spec: str, arg: str, types: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """``"tau=0.95,r=3"`` → ``{"tau": 0.95, "r": 3}``, with a clear error naming the spec and the known options."""
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise InvalidParameterError(f"policy '{spec}:{arg}': expected comma-separated key=value options among "
                             f"{', '.join(types)}, got {part!r}")
        try:
            options[key] = types[key](value.strip())
        except ValueError:
            raise InvalidParameterError(f"policy '{spec}:{arg}': bad value {value.strip()!r} for {key}") from None
    return options


#: ``cap=`` of the signal policies
CAP = rule(Interval(Integral, 1, None), None, hint="the latest pruning epoch; None: no cap")
#: ``min_steps=`` of the signal policies
MIN_STEPS = rule(Interval(Integral, 0, None), hint="optimizer steps of training before the rule may fire")


def check_cap(cap: Any) -> int | None:
    return CAP.check("cap", cap)


class SignalPolicy(Policy):
    """A policy that watches a per-epoch signal and fires by a rule — or at the cap on dense epochs.

    Subclasses implement :meth:`_advance` (pure: signal, rule fired?, next own state) and :meth:`_own_state` /
    :meth:`_load_own_state`.

    Args:
        cap: the latest pruning epoch: if the rule has not fired after ``cap`` dense epochs (epochs
            ``0 … cap−1``), epoch ``cap`` prunes, with a warning in the log and ``trigger_reason = "cap"`` in the
            history. None: no cap (the run may stay dense). The default, 30, is PaT's "pre-defined" epoch —
            the last one it found not to cost accuracy in the 90-epoch ImageNet recipe (Table 1) — and the
            upper end of its random baseline; shorter recipes should lower it.
        min_steps: optimizer steps of training before the rule may fire (the signal is computed and recorded
            all the same). A signal computed a few steps after initialisation says the structure is "stable"
            only because nothing has moved yet: frontier runs on 4,000 CIFAR-10 images fired EPI after 31 steps
            (benchmarks/results/frontier_long.md). Counted in steps, the wait does not depend on the dataset's
            size. The default, 1,000 steps, is about 2.5 epochs of all of CIFAR-10 at batch 128, where EPI at
            50 % stays below PaT's τ for longer anyway (benchmarks/results/cifar10_full/), and a fraction of one
            epoch of PaT's ImageNet runs, whose earliest EPI prune is epoch 5: it binds only where epochs are short.
    """

    DEFAULT_CAP: ClassVar[int] = 30
    DEFAULT_MIN_STEPS: ClassVar[int] = 1000
    automatic = True
    RULES: ClassVar[dict[str, Rule]] = {"cap": CAP, "min_steps": MIN_STEPS}

    @checked(RULES)
    def __init__(self, cap: int | None = DEFAULT_CAP, min_steps: int = DEFAULT_MIN_STEPS) -> None:
        self.cap = cap
        self.min_steps = min_steps
        self._signal: float | None = None

    def _advance(self, report: EpochReport) -> tuple[float | None, bool, dict[str, Any]]:
        raise NotImplementedError

    def _own_state(self) -> dict[str, Any]:
        return {}

    def _load_own_state(self, state: dict[str, Any]) -> None:
        pass

    def trained_enough(self, report: EpochReport) -> bool:
        """Whether ``min_steps`` optimizer steps have been taken (True when the report does not say)."""
        return report.steps is None or report.steps >= self.min_steps

    def evaluate(self, report: EpochReport) -> Decision:
        signal, fired, own = self._advance(report)
        state = {"signal": signal, **own}
        fired = fired and self.trained_enough(report)
        if fired:
            return Decision(True, "signal", signal, f"{self!r} fires (signal {signal:.4g}): epoch "
                                                    f"{report.epoch + 1} prunes", state)
        if self.cap is not None and report.epoch + 1 >= self.cap:
            return Decision(True, "cap", signal, f"{self!r} did not fire within its cap of {self.cap} dense "
                                                 f"epochs: pruning at the cap, epoch {report.epoch + 1}", state)
        return Decision(False, None, signal, "", state)

    def signal(self) -> float | None:
        return self._signal

    def epoch_bounds(self) -> tuple[int | None, int | None]:
        return None, self.cap  # the rule fires when it fires; the cap is the latest

    def state_dict(self) -> dict[str, Any]:
        return {"signal": self._signal, **self._own_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._signal = None if state.get("signal") is None else float(state["signal"])
        self._load_own_state(state)
