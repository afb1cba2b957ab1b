"""Import an optional framework, or say which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..core.errors import MissingDependencyError


def require(module: str, extra: str, what: str) -> ModuleType:
    """``importlib.import_module(module)``, or a :class:`MissingDependencyError` (an ImportError) naming the pip extra
    that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{what} needs the {module!r} package, which is not installed: "
                          f'pip install "earlyprune[{extra}]"  ({exc})') from exc
