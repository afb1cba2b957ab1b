"""Rank-consistent pruning under ``torch.distributed`` (DDP).

Every rank must remove exactly the same channels, or the replicas stop having the same shapes. Weight-based
scores (``magnitude``, ``l1``, ``bn_scale``) and scores read from parameter gradients (``taylor`` on BatchNorm
layers — DDP has already averaged them) agree across ranks by themselves; scores from each rank's own
activations or extra passes (gates: ``taylor`` without BatchNorm, ``snip``, ``crop``, ``grasp``) do not. So the
pruner averages every score vector over the ranks before anything reads it — the selection, the compute- or
latency-aware rescaling, the signals and the policy — which makes the ranking the one a single process would
compute on the union of the ranks' batches (for equal batch counts) and every decision identical.
``round_to="auto"`` and the policies that read timings are kept consistent the same way: rank 0's choice wins.

The model passed to the pruner must be the bare module (``ddp.module``): a pruning step replaces parameters, so
the ``DistributedDataParallel`` wrapper must be rebuilt after it — ``EarlyPruner.step()`` returns True then::

    if pruner.step(x, y):
        ddp = DistributedDataParallel(model, device_ids=[rank])
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .errors import UsageError
from .validation import InvalidParameterError


def world_size() -> int:
    """Ranks of the default process group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default process group (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass(frozen=True)
class Launch:
    """Where this process stands in a ``torchrun`` launch (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False   #: True when :func:`init_from_env` created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str) -> Launch:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL for CUDA, gloo for the CPU. A plain single process — or a
    group the caller already initialised — is returned as it is."""
    if dist.is_available() and dist.is_initialized():
        return Launch(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Launch()
    if not dist.is_available():
        raise UsageError("WORLD_SIZE > 1 (a torchrun launch) but this torch build has no torch.distributed: run "
                         "without torchrun, or install a torch build with distributed support")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Launch(dist.get_rank(), dist.get_world_size(), local, True)


def sum_over_ranks(values: Sequence[float | torch.Tensor]) -> list[float]:
    """Each value summed over the ranks (one all-reduce of a float64 vector); unchanged in a single process."""
    flat = torch.stack([torch.as_tensor(v, dtype=torch.float64).detach().cpu().reshape(()) for v in values])
    if world_size() > 1:
        flat = flat.to(_device())
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return flat.cpu().tolist()


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics: each rank updates its own between DDP's
    broadcasts), so all ranks evaluate and save the same model."""
    if world_size() == 1:
        return
    for buf in model.buffers():
        if dist.get_backend() == "nccl" or buf.device.type == "cpu":
            dist.broadcast(buf, src=0)
        else:
            tmp = buf.detach().cpu()
            dist.broadcast(tmp, src=0)
            buf.copy_(tmp)


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order, on every rank (``[value]`` in a single process)."""
    if world_size() == 1:
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def model_digest(model: nn.Module) -> str:
    """SHA-256 of the model's structure and state: every state-dict entry's name, shape, dtype and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{list(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo / mpi reduce CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def average_scores(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every group's score vector averaged over the ranks (one all-reduce of their concatenation); unchanged
    in a single process. The result is identical on every rank."""
    if world_size() == 1:
        return dict(scores)
    names = sorted(scores)
    parts = [torch.as_tensor(scores[n]).detach() for n in names]
    flat = torch.cat([p.reshape(-1).to(torch.float64) for p in parts]).to(_device())
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = (flat / world_size()).cpu()
    out, offset = {}, 0
    for name, p in zip(names, parts):
        out[name] = flat[offset:offset + p.numel()].reshape(p.shape).to(dtype=p.dtype if p.is_floating_point()
                                                                            else torch.float32, device=p.device)
        offset += p.numel()
    return out


def broadcast_object(value: Any) -> Any:
    """``value`` of rank 0 on every rank (unchanged in a single process)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_unwrapped(model: nn.Module) -> None:
    """Refuse a DDP / DataParallel wrapper: pruning replaces parameters, which the wrapper cannot follow."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    if isinstance(model, wrappers):
        raise InvalidParameterError(f"pass the wrapped module ({type(model).__name__}.module), not the "
                                    f"{type(model).__name__} wrapper: pruning replaces parameters, so rebuild the "
                                    f"wrapper whenever pruner.step() returns True")
