"""Your own data-parallel training loop with early pruning, launched by torchrun.

    torchrun --nproc_per_node 2 examples/torchrun_ddp_loop.py      # 2 processes (gloo on CPU, NCCL on GPUs)
    python examples/torchrun_ddp_loop.py                           # the same loop in one process

Every rank must remove the same channels: EarlyPruner averages its scores over the ranks before it decides. It
works on the bare module; the DistributedDataParallel wrapper is rebuilt whenever a step pruned, because the
pruned layers got new parameters (the optimizer has already followed them).
"""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import earlyprune

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"
EPOCHS, IMAGES, BATCH = (3, 256, 16) if TINY else (10, 8192, 64)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4))


def main() -> None:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if distributed and torch.cuda.is_available() \
        else torch.device("cpu")

    torch.manual_seed(0)                                    # the same initial model on every rank
    g = torch.Generator().manual_seed(0)
    x = torch.randn(IMAGES, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    x, y = x[rank::world].to(device), y[rank::world].to(device)   # this rank's shard
    steps_per_epoch = len(x) // BATCH

    model = make_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = earlyprune.EarlyPruner(model, x[:2], 0.5, criterion="magnitude", policy="epoch:1", steps=4,
                                    optimizer=optimizer, steps_per_epoch=steps_per_epoch)

    def wrap(m: nn.Module) -> nn.Module:
        return DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None) \
            if distributed else m

    ddp = wrap(model)
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * BATCH:(i + 1) * BATCH]
            optimizer.zero_grad()
            loss = F.cross_entropy(ddp(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            if pruner.step():                               # channels were removed: new parameters
                ddp = wrap(model)
            total += loss.item()
        pruner.epoch_end()
        if rank == 0:
            print(f"epoch {epoch}: {pruner.history[-1]['phase']:<7} loss {total / steps_per_epoch:.3f} "
                  f"channels {pruner.structure()}")
    if rank == 0:
        earlyprune.save(model, os.path.join(tempfile.gettempdir(), "ddp_pruned.safetensors"))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
