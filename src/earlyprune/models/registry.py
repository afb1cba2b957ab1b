"""The model zoo's registry: builders by name, with a one-line description each (``earlyprune models``)."""

from __future__ import annotations

from typing import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}
#: one-line description per registered model (``earlyprune models`` prints them)
DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().split("\n")[0]
        return fn
    return decorate


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered model by name, or ``tv:<name>`` / ``timm:<name>`` from torchvision / timm."""
    if ":" in name:
        from .external import create_external

        return create_external(name, num_classes=num_classes, **kwargs)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}, or tv:<name> / "
                         f"timm:<name> (run `earlyprune models`)")
    return MODELS[name](num_classes=num_classes, **kwargs)


__all__ = ["DESCRIPTIONS", "MODELS", "create_model", "register_model"]
