"""Models from other packages: ``tv:<name>`` (torchvision) and ``timm:<name>`` (timm), built without weights."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

from ..core.errors import ConfigError, MissingDependencyError

PREFIXES = {"tv": "torchvision", "timm": "timm"}


def _import(package: str, spec: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingDependencyError(f"model {spec!r} needs the {package} package, which is not installed: "
                                     f"pip install {package}") from None


def external_builder(spec: str, in_channels: int = 3) -> Callable[..., nn.Module]:
    """The constructor of ``tv:<name>`` or ``timm:<name>``, called as ``(num_classes=, in_channels=, **kwargs)``:
    the name, the package and (torchvision) the channel count are checked here, before any argument is."""
    prefix, _, name = spec.partition(":")
    if prefix not in PREFIXES or not name:
        raise ConfigError(f"external models are named tv:<name> or timm:<name>, got {spec!r}")
    package = PREFIXES[prefix]
    module = _import(package, spec)
    if prefix == "tv":
        if in_channels != 3:
            raise ConfigError(f"torchvision models take 3-channel images; {spec!r} cannot train on "
                              f"{in_channels}-channel data (choose another dataset or a model from "
                              f"`earlyprune models`)")
        names = set(module.models.list_models(module.models))
        if name not in names:
            raise ConfigError(f"unknown torchvision classification model {name!r}; see "
                              f"torchvision.models.list_models(torchvision.models)")

        def build_tv(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
            return module.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return build_tv
    if not module.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}; see timm.list_models()")

    def build_timm(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        return module.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    return build_timm


def create_external(spec: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build ``tv:<name>`` or ``timm:<name>`` with randomly initialised weights."""
    return external_builder(spec, in_channels)(num_classes=num_classes, in_channels=in_channels, **kwargs)
