"""argparse value parsers shared by every ``earlyprune`` subcommand, derived from the argument rules of
:mod:`earlyprune.core.validation`: a flag accepts exactly what the API parameter of the same rule accepts, and a bad
value is one clear line (exit status 2) in the rule's words."""

from __future__ import annotations

import argparse
from numbers import Integral, Real
from typing import Any, Callable

from .validation import RATIO, ROUND_TO, Interval, Options, Rule, rule


def _convert(r: Rule, text: str) -> Any:
    """``text`` read as the first kind of value ``r`` names that it parses as (an option, an integer, a number);
    the text itself when none does (then the rule refuses it)."""
    for c in r.constraints:
        if isinstance(c, Options):
            for option in c.values:
                if isinstance(option, str) and text.strip().lower() == option.lower():
                    return option
        elif isinstance(c, Interval):
            try:
                return int(text) if c.kind is Integral else float(text)
            except ValueError:
                continue
    return text


def parser(r: Rule, name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` for a flag whose value follows ``r``; errors name the parameter ``name``."""

    def parse(text: str) -> Any:
        value = _convert(r, text)
        if not r.accepts(value):
            raise argparse.ArgumentTypeError(r.message(name, value, flag=True))
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


#: a fraction to remove, strictly between 0 and 1 (:data:`earlyprune.core.validation.RATIO`)
ratio = parser(RATIO, "ratio")
#: ``auto`` or a whole number ≥ 1 (:data:`earlyprune.core.validation.ROUND_TO`)
whole_or_auto = parser(ROUND_TO, "round_to")


def whole(minimum: int, name: str = "value") -> Callable[[str], int]:
    """A whole number ≥ ``minimum``."""
    return parser(rule(Interval(Integral, minimum, None)), name)


def number(text: str) -> float:
    """Any finite number."""
    return parser(rule(Interval(Real, None, None)), "value")(text)
