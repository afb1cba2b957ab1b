"""The training tool behind ``earlyprune train``: configuration, data, the loop, run directories, checkpoints.

.. code-block:: python

    from earlyprune.training import TrainConfig, train
    result = train(TrainConfig(model="resnet20", dataset="cifar10", epochs=90, policy="epi", ratio=0.5))
    result.summary["speedup"], result.run_dir

The trainer is a client of :class:`~earlyprune.EarlyPruner`; see :mod:`.trainer`.
"""

from .config import TrainConfig
from .trainer import RunResult, train

__all__ = ["RunResult", "TrainConfig", "train"]
