"""Name → class registries for criteria and policies (timm-style).

A spec is either an instance (used as is) or a string ``"name"`` / ``"name:arg"``; the part after the colon is
handed to the class's ``from_spec`` so that ``"epoch:3"`` builds ``EpochPolicy(3)``.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of classes deriving from ``base``."""

    def __init__(self, kind: str, base: type) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: ``@CRITERIA.register("magnitude")``."""

        def decorate(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{cls!r} must subclass {self.base.__name__} to be a {self.kind}")
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self._classes[name].__name__}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str) -> type:
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def build(self, spec: object, **kwargs) -> T:
        """An instance from a spec string (``"name"`` or ``"name:arg"``) or an existing instance."""
        if isinstance(spec, self.base):
            if kwargs:
                raise ValueError(f"options {sorted(kwargs)} only apply when the {self.kind} is given by name")
            return spec  # type: ignore[return-value]
        if not isinstance(spec, str):
            raise TypeError(
                f"{self.kind} must be a name ({', '.join(self.names())}) or a {self.base.__name__} instance, "
                f"got {type(spec).__name__}"
            )
        name, sep, arg = spec.partition(":")
        cls = self.get(name.strip())
        if sep:
            return cls.from_spec(arg.strip(), **kwargs)
        return cls(**kwargs)
