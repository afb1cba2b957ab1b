"""Integrations with training stacks people already use, each an optional extra:

* :mod:`earlyprune.integrations.lightning` — ``EarlyPruning``, a PyTorch Lightning callback
  (``pip install "earlyprune[lightning]"``);
* :mod:`earlyprune.integrations.transformers` — ``EarlyPruningCallback``, a Hugging Face ``Trainer`` callback
  that prunes attention heads and MLP neurons (``pip install "earlyprune[transformers]"``).

Importing this package imports neither framework; each submodule says what to install when its framework is
missing. ``earlyprune train`` itself runs under ``torchrun`` (see docs/torchrun.md).
"""
