"""The model zoo: sizes of the standard networks, and every family builds, runs and prunes."""

import pytest
import torch

import earlyprune as ep
from earlyprune.models import MODELS, create_model

# parameter counts of the standard CIFAR-10 variants (10 classes), as published for these architectures
PARAMS = {"resnet20": 272_474, "resnet56": 855_770, "resnet110": 1_730_714, "resnet18": 11_173_962,
          "resnet34": 21_282_122, "resnet50": 23_520_842, "vgg16": 14_724_042, "vgg19": 20_035_018,
          "mobilenet_v1": 3_217_226}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_standard_sizes(name):
    with torch.device("meta"):  # no memory, no initialisation cost
        model = create_model(name, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name,kwargs", [("resnet18", {"width": 4}), ("resnet50", {"width": 4}),
                                         ("vgg16", {"width_mult": 0.0625}), ("mobilenet_v1", {"width_mult": 0.25})])
def test_new_families_run_and_prune(name, kwargs):
    model = create_model(name, num_classes=5, **kwargs)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 5)
    dense = ep.measure(model, x)
    ep.prune(model, x, 0.5, steps=1)
    after = ep.measure(model, x, baseline=dense)
    assert after.macs < dense.macs and model.eval()(x).shape == (2, 5)


def test_every_registered_model_takes_in_channels_and_num_classes():
    for name in MODELS:
        with torch.device("meta"):
            model = create_model(name, num_classes=3, in_channels=1)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == 1, name
