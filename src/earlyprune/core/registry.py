"""Name → class registries for criteria and policies (timm-style).

A spec is either an instance (used as is) or a string ``"name"`` / ``"name:arg"``; the part after the colon is
handed to the class's ``from_spec`` so that ``"epoch:3"`` builds ``EpochPolicy(3)``.

Names are stored in run directories (``config.json``, ``summary.json``), so a name never simply disappears: a
renamed entry keeps its old name as an alias (:meth:`Registry.register_alias`, as timm's
``register_model_deprecations``), which still builds the new class — with a :class:`RenamedWarning` — so an old
run resumes, reports and replays.
"""

from __future__ import annotations

import warnings
from typing import Callable, Generic, TypeVar

from .validation import InvalidParameterError, shown

T = TypeVar("T")


class RenamedWarning(FutureWarning):
    """A criterion or policy was asked for by a name that has been replaced (shown by default)."""


class Registry(Generic[T]):
    """A named collection of classes deriving from ``base``."""

    def __init__(self, kind: str, base: type) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: ``@CRITERIA.register("magnitude")``."""

        def decorate(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise InvalidParameterError(f"{cls!r} must subclass {self.base.__name__} to be a {self.kind}")
            if name in self._classes and self._classes[name] is not cls:
                raise InvalidParameterError(f"{self.kind} {name!r} is already registered by "
                                            f"{self._classes[name].__name__}: pick another name")
            if name in self._aliases:
                raise InvalidParameterError(f"{self.kind} {name!r} is the old name of {self._aliases[name]!r}: pick "
                                            f"another name")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def register_alias(self, old: str, new: str) -> None:
        """Keep the retired name ``old`` working for the registered ``new`` (spec arguments included:
        ``"old:3"`` builds ``new`` with ``3``), with a :class:`RenamedWarning` each time it is used."""
        if old in self._classes:
            raise InvalidParameterError(f"{self.kind} {old!r} is a registered name; only a retired name can be an "
                                        f"alias")
        if new not in self._classes:
            raise InvalidParameterError(f"unknown {self.kind} {new!r}; register it before its old name "
                                        f"(available: {', '.join(self.names())})")
        self._aliases[old] = new

    def names(self) -> list[str]:
        """The current names (aliases excluded)."""
        return sorted(self._classes)

    def aliases(self) -> dict[str, str]:
        """Retired name → current name."""
        return dict(self._aliases)

    def __contains__(self, name: str) -> bool:
        return name in self._classes or name in self._aliases

    def resolve(self, name: str) -> str:
        """The current name for ``name`` (itself, or what an alias points to — with a warning)."""
        if name in self._aliases:
            new = self._aliases[name]
            warnings.warn(f"{self.kind} {name!r} has been renamed {new!r}; {name!r} still works but will be removed "
                          f"— write {new!r} in new runs and configurations", RenamedWarning, stacklevel=3)
            return new
        return name

    def get(self, name: str) -> type:
        try:
            return self._classes[self.resolve(name)]
        except KeyError:
            raise InvalidParameterError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def build(self, spec: object, **kwargs) -> T:
        """An instance from a spec string (``"name"`` or ``"name:arg"``) or an existing instance."""
        if isinstance(spec, self.base):
            if kwargs:
                raise InvalidParameterError(f"options {sorted(kwargs)} only apply when the {self.kind} is given by "
                                            f"name")
            return spec  # type: ignore[return-value]
        if not isinstance(spec, str):
            raise InvalidParameterError(
                f"{self.kind} must be a name ({', '.join(self.names())}) or a {self.base.__name__} instance, "
                f"got {shown(spec)}"
            )
        name, sep, arg = spec.partition(":")
        cls = self.get(name.strip())
        if sep:
            return cls.from_spec(arg.strip(), **kwargs)
        return cls(**kwargs)
