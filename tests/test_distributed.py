"""Under torch.distributed every rank must remove the same channels: scores are averaged over the ranks."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nets import ResidualNet
from torch import nn

import earlyprune as ep
from earlyprune.core.distributed import average_scores, check_unwrapped, world_size

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        mean = average_scores({"a": torch.tensor([rank + 1.0, 2.0 * rank]), "b": torch.tensor([float(rank)])})
        torch.manual_seed(0)                                  # same initial weights on every rank …
        model = ResidualNet()
        gen = torch.Generator().manual_seed(100 + rank)       # … different data per rank, as with a sampler
        x, y = torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 5, (8,), generator=gen)
        local = ep.EarlyPruner(ResidualNet(), x[:2], 0.5, criterion="snip", policy="epoch:0", optimizer=None,
                               steps=1, steps_per_epoch=1, loss_fn=nn.functional.cross_entropy)
        local_scores = local.criterion.compute(local.groups, _batch(x, y))
        local_structure = ep.select(local.groups, local_scores, 0.5).structure
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        pruner = ep.EarlyPruner(model, x[:2], 0.5, criterion="snip", policy="epoch:0", optimizer=opt, steps=1,
                                steps_per_epoch=1, loss_fn=nn.functional.cross_entropy)
        changed = pruner.step(x, y)
        res = ep.prune(ResidualNet(), x[:2], 0.5, criterion="snip", batches=[(x, y)],
                       loss_fn=nn.functional.cross_entropy, round_to="auto")
        masked = ResidualNet()
        wres = ep.prune(masked, x[:2], 0.9, granularity="weights", criterion="crop", batches=[(x, y)],
                        loss_fn=nn.functional.cross_entropy)
        kept = torch.cat([m.flatten() for m in ep.unstructured.MaskedWeights(masked).masks().values()])
        result = {"world": world_size(), "mean": {k: v.tolist() for k, v in mean.items()}, "changed": changed,
                  "structure": pruner.structure(), "oneshot": res.structure, "round_to": res.round_to,
                  "local_structure": local_structure, "weights": wres.weight_structure,
                  "kept_positions": int(kept.nonzero().sum())}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _batch(x, y):
    from earlyprune.criteria import Batch

    return Batch(x, y, nn.functional.cross_entropy)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ranks_with_different_data_prune_the_same_channels(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert r0["world"] == r1["world"] == WORLD
    assert r0["mean"] == r1["mean"] == {"a": [1.5, 1.0], "b": [0.5]}
    assert r0["local_structure"] != r1["local_structure"]  # each rank alone would remove other channels …
    assert r0["changed"] and r1["changed"]
    assert r0["structure"] == r1["structure"]              # … but all remove the same channels
    assert r0["oneshot"] == r1["oneshot"] and r0["round_to"] == r1["round_to"]
    assert r0["weights"] == r1["weights"] and r0["kept_positions"] == r1["kept_positions"]  # same weight masks


def test_a_ddp_wrapper_is_refused_with_the_fix():
    check_unwrapped(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"DataParallel\.module"):
        ep.prune(nn.DataParallel(ResidualNet()), torch.randn(2, 3, 8, 8), 0.5)
    assert world_size() == 1
    scores = {"a": torch.tensor([1.0, 2.0])}
    assert average_scores(scores)["a"] is scores["a"]      # a single process passes them through
