"""Argument rules, declared once per parameter and checked by one validator (scikit-learn's
``_parameter_constraints``).

A public class or function declares a table ``{parameter name: Rule}``; a :class:`Rule` is a list of
constraints, **any** of which accepts a value (``rule(Interval(Integral, 1, None), None)``: an integer ≥ 1 or
None). A class extends its base's table with ``{**Base.RULES, "x": rule(...)}`` and decorates ``__init__`` with
``@checked(RULES)``; a function uses ``@checked(TABLE)`` the same way. The command line and the run
configuration derive their checks from the same rules (:mod:`earlyprune.core.argtypes`,
:class:`earlyprune.training.config.TrainConfig`), so a value is accepted or refused alike wherever it is given.

Every refusal has one shape, naming the parameter, the value given and what is accepted::

    ratio must be a number in (0, 1), got 1.2 (the fraction of the target to remove)
    steps must be a positive integer, got 0
    round_to must be an integer ≥ 1 or 'auto', got 'fast'

and raises :class:`InvalidParameterError`, which is both a ``ValueError`` and a ``TypeError`` (a wrong type and a
wrong value are one mistake to the caller). Booleans are never numbers: ``True`` is refused where an integer is
asked for.

Flags (``flag=True``) speak the command line's language: integers are "whole numbers", an option is written
bare (``auto``), and a number that parsed but lies out of range is told the range alone (``--ratio must be in
(0, 1), got 1.5``) — the parser already made it a number.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import reprlib
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Mapping, TypeVar

from torch import nn

from .errors import EarlyPruneError

F = TypeVar("F", bound=Callable[..., Any])


class InvalidParameterError(EarlyPruneError, ValueError, TypeError):
    """An argument that breaks its declared rule (an :class:`~earlyprune.core.errors.EarlyPruneError`, a ``ValueError``
    and a ``TypeError``)."""


class Constraint:
    """One set of accepted values."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self, flag: bool = False) -> str:
        """What it accepts, as the words after "must be"."""
        raise NotImplementedError

    def has_type_of(self, value: Any) -> bool:
        """Whether ``value`` has the kind this constraint is about (then only its range can be wrong)."""
        return False


def _number_kind(kind: type) -> type:
    if kind not in (Integral, Real):
        raise TypeError(  # internal: a rule declared wrong (the rule tables are built at import)
            f"Interval kind must be numbers.Integral or numbers.Real, got {kind!r}")
    return kind


def _is_kind(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Interval(Constraint):
    """Numbers of ``kind`` (``numbers.Integral`` or ``numbers.Real``) between ``low`` and ``high`` (None: no bound);
    ``closed`` says which ends belong to it: "both", "left", "right" or "neither". Reals must be finite.

    ``reasons`` explains an excluded end when a value sits on it (``{0: "0 removes nothing"}``)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"
    reasons: Mapping[float, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _number_kind(self.kind)
        if self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(  # internal: a rule declared wrong (the rule tables are built at import)
                f"closed must be one of both, left, right, neither, got {self.closed!r}")

    def has_type_of(self, value: Any) -> bool:
        return _is_kind(value, self.kind) and (self.kind is Integral or math.isfinite(value))

    def accepts(self, value: Any) -> bool:
        if not self.has_type_of(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        return not (self.high is not None and (value > self.high
                                               or (value == self.high and self.closed in ("left", "neither"))))

    def range_text(self, flag: bool = False) -> str:
        low_in = self.closed in ("both", "left")
        high_in = self.closed in ("both", "right")
        low, high = self.low, self.high
        if self.kind is Integral and flag:  # whole numbers: say the smallest / largest one allowed
            if low is not None and not low_in:
                low, low_in = math.floor(low) + 1, True
            if high is not None and not high_in:
                high, high_in = math.ceil(high) - 1, True
        if low is not None and high is not None:
            return f"in {'[' if low_in else '('}{_fmt(low)}, {_fmt(high)}{']' if high_in else ')'}"
        if low is not None:
            return f"{'≥' if low_in else '>'} {_fmt(low)}"
        if high is not None:
            return f"{'≤' if high_in else '<'} {_fmt(high)}"
        return ""

    def noun(self, flag: bool = False) -> str:
        if self.kind is Integral:
            return "a whole number" if flag else "an integer"
        return "a number"

    def describe(self, flag: bool = False) -> str:
        if not flag and self.low == 0 and self.closed in ("right", "neither"):
            if self.high is None:
                return "a positive integer" if self.kind is Integral else "a positive number"
            if self.kind is Integral:
                return f"a positive integer {'≤' if self.closed == 'right' else '<'} {_fmt(self.high)}"
        return f"{self.noun(flag)} {self.range_text(flag)}".rstrip()


@dataclass(frozen=True)
class Options(Constraint):
    """One of a few values (strings, usually)."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))

    def accepts(self, value: Any) -> bool:
        try:
            return any(value == v and type(value) is type(v) for v in self.values)
        except Exception:  # noqa: BLE001 - a value that cannot be compared is not an option
            return False

    def has_type_of(self, value: Any) -> bool:
        return any(type(value) is type(v) for v in self.values)

    def describe(self, flag: bool = False) -> str:
        shown = [str(v) if flag else repr(v) for v in self.values]
        return shown[0] if len(shown) == 1 else "one of " + ", ".join(shown)


@dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of ``types``, described as ``noun`` (e.g. "a torch.optim.Optimizer")."""

    types: type | tuple[type, ...]
    noun: str

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.types)

    def describe(self, flag: bool = False) -> str:
        return self.noun


@dataclass(frozen=True)
class HasAttributes(Constraint):
    """Any object with the attributes ``names`` (a duck-typed stand-in is fine), described as ``noun``."""

    names: tuple[str, ...]
    noun: str

    def accepts(self, value: Any) -> bool:
        return all(hasattr(value, n) for n in self.names)

    def describe(self, flag: bool = False) -> str:
        return self.noun


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (not 0 / 1, not "yes")."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self, flag: bool = False) -> str:
        return "true or false" if flag else "True or False"


@dataclass(frozen=True)
class Callable_(Constraint):
    """Anything callable, described as ``noun``."""

    noun: str = "a callable"

    def accepts(self, value: Any) -> bool:
        return callable(value)

    def describe(self, flag: bool = False) -> str:
        return self.noun


@dataclass(frozen=True)
class _NoneConstraint(Constraint):
    def accepts(self, value: Any) -> bool:
        return value is None

    def describe(self, flag: bool = False) -> str:
        return "None"


@dataclass(frozen=True)
class Each(Constraint):
    """A list or tuple (``nonempty`` by default; ``containers`` widens the kinds, e.g. sets) whose every item
    meets ``item``."""

    item: Constraint
    nonempty: bool = True
    containers: tuple[type, ...] = (list, tuple)

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, self.containers) or (self.nonempty and not value):
            return False
        return all(self.item.accepts(v) for v in value)

    def describe(self, flag: bool = False) -> str:
        return f"a {'non-empty ' if self.nonempty else ''}list, each {self.item.describe(flag)}"


def _batch_tensors(value: Any, depth: int = 0) -> list[Any] | None:
    """The tensors of example inputs (a tensor, or a tuple / list / dict holding some), None when the value is
    none of those; nesting beyond a few levels is not an input batch."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 4 or not isinstance(value, (tuple, list, dict)):
        return None
    found: list[Any] = []
    for item in (value.values() if isinstance(value, dict) else value):
        found += _batch_tensors(item, depth + 1) or []
    return found


@dataclass(frozen=True)
class ExampleInputs(Constraint):
    """Example inputs to trace a model with: a tensor whose first dimension is a non-empty batch, or a tuple /
    list (positional arguments) or dict (keyword arguments) holding at least one; floating-point values finite."""

    def accepts(self, value: Any) -> bool:
        tensors = _batch_tensors(value)
        if not tensors:
            return False
        batched = [t for t in tensors if t.dim() >= 1]
        if not batched or any(t.shape[0] == 0 for t in batched):
            return False
        return all(bool(t.isfinite().all()) for t in tensors if t.is_floating_point() and not t.is_meta)

    def describe(self, flag: bool = False) -> str:
        return ("a tensor with a non-empty batch dimension first, or a tuple / list / dict holding such tensors, "
                "with finite values")


#: containers with more entries than this (counted to this bound, never further) are shown by :mod:`reprlib`
_SHOWN_ENTRIES = 200


def _entries_beyond(value: Any, bound: int) -> bool:
    """Whether ``value`` holds more than ``bound`` entries, nested ones included — counted only up to the bound,
    so a YAML alias bomb (a few lines that expand to billions of shared entries) costs nothing."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            item = [*item.keys(), *item.values()]
        if isinstance(item, (list, tuple, set, frozenset)):
            seen += len(item)
            if seen > bound:
                return True
            stack.extend(item)
    return False


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut short (a model or a tensor given by mistake must not flood the message, and a huge
    container is never rendered whole)."""
    if _entries_beyond(value, _SHOWN_ENTRIES):
        short = reprlib.Repr()
        short.maxlevel, short.maxlist, short.maxtuple, short.maxdict, short.maxset = 3, 6, 6, 6, 6
        return f"{type(value).__name__} {short.repr(value)[:limit - 20]}…"
    text = repr(value)
    if len(text) <= limit and "\n" not in text:
        return text
    return f"{type(value).__name__} {text.splitlines()[0][:limit - 20]}…"


def _as_constraint(c: Any) -> Constraint:
    if c is None:
        return _NoneConstraint()
    if isinstance(c, Constraint):
        return c
    if isinstance(c, type):
        return InstanceOf(c, f"a {c.__name__}")
    raise TypeError(f"not a constraint: {c!r}")  # internal: a rule declared wrong


def _join(parts: list[str]) -> str:
    return " or ".join(parts)


@dataclass(frozen=True)
class Rule:
    """The values a parameter accepts: any of ``constraints``; ``hint`` (what the parameter is, how to choose it)
    ends every refusal."""

    constraints: tuple[Constraint, ...]
    hint: str = ""

    def accepts(self, value: Any) -> bool:
        return any(c.accepts(value) for c in self.constraints)

    def describe(self, flag: bool = False) -> str:
        return _join([c.describe(flag) for c in self.constraints])

    def message(self, name: str, value: Any, flag: bool = False) -> str:
        """The refusal of ``value`` for parameter ``name`` (see the module docstring for the shape)."""
        typed = [c for c in self.constraints if c.has_type_of(value)]
        accepted = self.describe(flag)
        for c in typed:
            if isinstance(c, Interval) and value in c.reasons:
                accepted = f"{c.range_text(flag)}: {c.reasons[value]}"
                break
        else:
            if flag and len(typed) == 1 and len(self.constraints) == 1 and isinstance(typed[0], Interval) \
                    and typed[0].kind is Real:
                accepted = typed[0].range_text(flag)   # the parser made it a number: the range is what is wrong
        if isinstance(value, float) and not math.isfinite(value):  # inf / nan: said, not just "out of range"
            accepted = accepted.replace("a number", "a finite number", 1)
        hint = f" ({self.hint})" if self.hint else ""
        return f"{name} must be {accepted}, got {shown(value)}{hint}"

    def check(self, name: str, value: Any, flag: bool = False) -> Any:
        """``value`` if accepted, else :class:`InvalidParameterError` with :meth:`message`."""
        if not self.accepts(value):
            raise InvalidParameterError(self.message(name, value, flag))
        return value

    def with_hint(self, hint: str) -> "Rule":
        return Rule(self.constraints, hint)


def rule(*constraints: Any, hint: str = "") -> Rule:
    """A :class:`Rule` from constraints: :class:`Constraint` instances, ``None`` (None is accepted) or a class
    (an instance of it is accepted)."""
    if not constraints:
        raise TypeError("rule() needs at least one constraint")  # internal: a rule declared wrong
    return Rule(tuple(_as_constraint(c) for c in constraints), hint)


def check_args(rules: Mapping[str, Rule], values: Mapping[str, Any], *, flag: bool = False) -> None:
    """Check every ``values[name]`` that has a rule in ``rules``, in the table's order."""
    for name, r in rules.items():
        if name in values:
            r.check(name, values[name], flag)


def checked(rules: Mapping[str, Rule]) -> Callable[[F], F]:
    """Decorator: check the arguments of every call of a function (or ``__init__``) against ``rules``, before
    its body runs. Defaults are checked too (a table and a default that disagree fail at once)."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        unknown = set(rules) - set(signature.parameters)
        if unknown:
            raise TypeError(  # internal: a rule table that does not match its function (fails at import)
                f"rules for {fn.__qualname__} name parameters it does not have: {sorted(unknown)}")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return fn(*args, **kwargs)  # let Python report the wrong call itself
            bound.apply_defaults()
            check_args(rules, bound.arguments)
            return fn(*args, **kwargs)

        wrapper.rules = rules  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


# -- rules shared by several entry points ---------------------------------------------------------------------
#: the run's pruning target: the fraction of the original channels / MACs / parameters to remove. 0 is refused
#: everywhere it is the run's ratio (it would prune nothing); ``select``'s per-step amount may be 0 (AMOUNT)
RATIO = rule(Interval(Real, 0, 1, closed="neither",
                      reasons={0: "a ratio of 0 removes nothing (a dense run is policy 'never')"}),
             hint="the fraction of the target to remove")
#: a cumulative fraction already removed, as :func:`earlyprune.planning.selection.select` and the step schedules take it
AMOUNT = rule(Interval(Real, 0, 1, closed="left"), hint="the fraction of the target to remove")
TARGETS = ("channels", "flops", "params", "latency")
TARGET = rule(Options(TARGETS))
GROUP_RATIO = rule(Interval(Real, 0, 1, closed="right"),
                   hint="the largest fraction of any one group's original channels that may be removed; 1: no limit")
#: what is pruned (:mod:`earlyprune.planning.levels`): channels removed, weights masked, or channels then weights
GRANULARITIES = ("channels", "weights", "both")
GRANULARITY = rule(Options(GRANULARITIES), hint="channels removed, weights masked, or channels then weights")
MIN_CHANNELS = rule(Interval(Integral, 1, None), hint="no layer may collapse")
#: an integer multiple; ``round_to`` itself also takes "auto" (ROUND_TO)
MULTIPLE = rule(Interval(Integral, 1, None))
ROUND_TO = rule(Interval(Integral, 1, None), Options(["auto"]),
                hint="'auto': the multiple measured fastest on this device")
#: the most pruning steps one run may ask for: PaT uses 8; far more only repeats the ranking on almost the same
#: scores, and every step is a removal with optimizer surgery (``steps=100000`` made 100,000 events)
MAX_STEPS = 1000
STEPS = rule(Interval(Integral, 0, MAX_STEPS, closed="right"), hint="pruning steps within the pruning epoch")
POSITIVE_INT = rule(Interval(Integral, 0, None, closed="neither"))
BOOLEAN = rule(Boolean())
#: a file path
PATH = rule(InstanceOf((str, os.PathLike), "a path (str or os.PathLike)"))
#: ``model=`` of every entry point
MODEL = rule(InstanceOf(nn.Module, "a torch.nn.Module"))
#: ``example_inputs=`` of every entry point that traces a model
EXAMPLE_INPUTS = rule(ExampleInputs(), hint="a batch shaped like the training inputs")
#: ``ignored_layers=``: modules whose output channels are kept
IGNORED_LAYERS = rule(Each(InstanceOf(nn.Module, "a torch.nn.Module"), nonempty=False,
                           containers=(list, tuple, set, frozenset)), None, hint="e.g. ignored_layers=[model.fc]")


__all__ = ["AMOUNT", "BOOLEAN", "Boolean", "Callable_", "Constraint", "EXAMPLE_INPUTS", "Each", "ExampleInputs",
           "HasAttributes", "IGNORED_LAYERS", "InstanceOf", "Interval", "InvalidParameterError", "MAX_STEPS",
           "MIN_CHANNELS", "MODEL", "MULTIPLE", "Options", "PATH", "POSITIVE_INT", "RATIO", "ROUND_TO", "Rule", "STEPS",
           "TARGET", "TARGETS", "check_args", "checked", "rule", "shown"]
