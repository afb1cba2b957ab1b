"""Models from other packages: ``tv:<name>`` (torchvision) and ``timm:<name>`` (timm), built without weights."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from ..core.errors import ConfigError, MissingDependencyError

PREFIXES = {"tv": "torchvision", "timm": "timm"}


def _import(package: str, spec: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingDependencyError(f"model {spec!r} needs the {package} package, which is not installed: "
                                     f"pip install {package}") from None


def create_external(spec: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build ``tv:<name>`` or ``timm:<name>`` with randomly initialised weights."""
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
        return module.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if not module.is_model(name):
        raise ConfigError(f"unknown timm model {name!r}; see timm.list_models()")
    return module.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
