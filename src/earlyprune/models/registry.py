"""The model zoo's registry: builders by name, with a one-line description each (``earlyprune models``)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Callable

from torch import nn

from ..core.errors import ConfigError
from ..core.validation import Interval, InvalidParameterError, rule

#: constructor-argument rules shared by the zoo's models (each model class declares its table with them, so
#: ``--model-arg width=0`` is refused before a layer of width 0 is built)
NUM_CLASSES = rule(Interval(Integral, 1, None), hint="classes of the dataset")
IN_CHANNELS = rule(Interval(Integral, 1, None), hint="channels of the input images")
WIDTH = rule(Interval(Integral, 1, None), hint="channels of the first stage")
WIDTH_MULT = rule(Interval(Real, 0, None, closed="neither"), hint="multiplies every layer's width")

MODELS: dict[str, Callable[..., nn.Module]] = {}
#: one-line description per registered model (``earlyprune models`` prints them)
DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise InvalidParameterError(f"model {name!r} is already registered")
        MODELS[name] = fn
        DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().split("\n")[0]
        return fn
    return decorate


def model_builder(name: str, in_channels: int = 3) -> Callable[..., nn.Module]:
    """The constructor :func:`create_model` calls for ``name`` (a registered model, or ``tv:<name>`` /
    ``timm:<name>`` for ``in_channels``-channel images): an unknown name or a missing package is refused here, so
    that what the constructor then raises is about its arguments."""
    if ":" in name:
        from .external import external_builder

        return external_builder(name, in_channels)
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}, or tv:<name> / "
                          f"timm:<name> (run `earlyprune models`)")
    return MODELS[name]


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered model by name, or ``tv:<name>`` / ``timm:<name>`` from torchvision / timm."""
    return model_builder(name, kwargs.get("in_channels", 3))(num_classes=num_classes, **kwargs)


__all__ = ["DESCRIPTIONS", "IN_CHANNELS", "MODELS", "NUM_CLASSES", "WIDTH", "WIDTH_MULT", "create_model",
           "model_builder", "register_model"]
