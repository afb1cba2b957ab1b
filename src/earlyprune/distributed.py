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

from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Ranks of the default process group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
        raise TypeError(f"pass the wrapped module ({type(model).__name__}.module), not the {type(model).__name__} "
                        f"wrapper: pruning replaces parameters, so rebuild the wrapper whenever pruner.step() "
                        f"returns True")
