"""Model zoo: small builders registered by name (``create_model("resnet20", num_classes=10)``)."""

from . import mobilenet, resnet, resnet_cifar, small_cnn, vgg  # noqa: F401  (registration)
from .registry import DESCRIPTIONS, MODELS, create_model, register_model

__all__ = ["DESCRIPTIONS", "MODELS", "create_model", "register_model"]
