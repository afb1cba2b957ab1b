"""Data-parallel ``earlyprune train`` under ``torchrun``: one process per device, torch.distributed underneath.

``torchrun --nproc_per_node N -m earlyprune train …`` starts N copies of the same run (``--nnodes`` /
``--rdzv-endpoint`` for several machines, as for any torchrun script). Each copy:

* joins the process group torchrun describes (NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on the CPU);
* builds the same model from the same seed, and trains it through a ``DistributedDataParallel`` wrapper;
* reads its slice of every **global batch** — ``--batch-size`` images per rank, ``--batch-size × N`` per optimizer
  step — from the epoch's permutation, which every rank draws identically from the run's seed
  (:class:`~earlyprune.training.data.BatchLoader` with ``rank`` / ``world_size``), and evaluates its shard of the
  test set; losses, accuracies and image counts are summed over the ranks;
* prunes exactly as the others do (the pruner averages its scores over the ranks before deciding), after which
  the DDP wrapper is rebuilt around the new parameters — the optimizer has already followed on every rank.

Only rank 0 writes the run directory and shows progress; every rank reads the checkpoint on ``--resume`` (the run
directory must be on a file system all ranks see), and a checkpoint is resumed only with the world size it was
written with. At the end each rank hashes its final structure and weights; rank 0 gathers the hashes into
``summary.json`` (``ranks``) and the run fails if they differ.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..core.distributed import (
    Launch,
    broadcast_buffers,
    gather_objects,
    init_from_env,
    model_digest,
    sum_over_ranks,
)
from ..core.errors import ConfigError

T = TypeVar("T")


class DataParallel:
    """This process's part in a (possibly single-process) run."""

    def __init__(self, device_type: str) -> None:
        self.launch: Launch = init_from_env(device_type)

    @property
    def world_size(self) -> int:
        return self.launch.world_size

    @property
    def rank(self) -> int:
        return self.launch.rank

    @property
    def is_main(self) -> bool:
        return self.launch.is_main

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """Under torchrun on CUDA, the rank's own GPU (``cuda:LOCAL_RANK``)."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.launch.local_rank)
        return device

    def in_turn(self, load: Callable[[], T]) -> T:
        """``load()`` on rank 0 first (a download or a cache file is written once), then on the others."""
        if not self.active:
            return load()
        result = load() if self.is_main else None
        dist.barrier()
        return result if self.is_main else load()  # type: ignore[return-value]

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of ``tensor`` (the test set)."""
        return tensor.tensor_split(self.world_size)[self.rank] if self.active else tensor

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training forward runs through: a new ``DistributedDataParallel`` around ``model`` (call again
        after every removal: the parameters it registered are gone), or the model itself."""
        if not self.active:
            return model
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sums(self, values: list[Any]) -> list[float]:
        """Each value summed over the ranks."""
        return sum_over_ranks(values) if self.active else [float(v) for v in values]

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank, so all evaluate and save the same model."""
        if self.active:
            broadcast_buffers(model)

    def agreement(self, model: nn.Module) -> dict[str, Any]:
        """Every rank's hash of the final structure and weights, and whether they are all the same."""
        digests = gather_objects(model_digest(model))
        return {"world_size": self.world_size, "digests": digests, "agree": len(set(digests)) == 1}

    def check_resume(self, state: dict[str, Any], run_dir: Any) -> None:
        """Refuse a checkpoint written by another number of processes."""
        saved = int(state.get("world_size", 1))
        if saved != self.world_size:
            raise ConfigError(
                f"{run_dir} was trained by {saved} process(es) and is resumed by {self.world_size}: the global "
                f"batch (--batch-size × processes), the data each rank reads and the LR schedule would change. "
                f"Resume with the same number of processes (torchrun --nproc_per_node … for a total of {saved})")

    def close(self) -> None:
        if self.launch.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
