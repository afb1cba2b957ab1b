"""Real torchvision networks: prune with a live optimizer, then keep training.

Skipped where torchvision is not importable (the CPU-only dev venv has none).
"""

import pytest
import torch
import torch.nn.functional as F

torchvision = pytest.importorskip("torchvision")

import earlyprune as ep  # noqa: E402

BATCH = 2
SIZE = 64


def _train_step(model, opt, x, y):
    model.train()
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


@pytest.mark.parametrize("arch", ["resnet50", "mobilenet_v2"])
def test_prune_with_optimizer_then_train(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, 1000, (BATCH,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    _train_step(model, opt, x, y)  # populate the momentum buffers

    before = ep.measure(model, x)
    res = ep.prune(model, x, 0.5, optimizer=opt)
    after = ep.measure(model, x)
    assert after.macs < before.macs
    assert after.params < before.params
    assert res.after.macs == after.macs and res.before.macs == before.macs

    model.eval()
    with torch.no_grad():
        assert model(x).shape == (BATCH, 1000)

    loss = _train_step(model, opt, x, y)
    assert torch.isfinite(loss)

    current = {id(p) for p in model.parameters()}
    opt_params = [p for g in opt.param_groups for p in g["params"]]
    assert len(opt_params) == len(current)
    assert all(id(p) in current for p in opt_params)
    for p in opt_params:
        buf = opt.state[p].get("momentum_buffer")
        assert buf is not None, "momentum buffer lost in surgery"
        assert buf.shape == p.shape


@pytest.mark.parametrize("arch", ["googlenet", "shufflenet_v2_x0_5"])
def test_training_path_on_aux_heads_and_channel_shuffle(arch, tmp_path):
    """GoogLeNet's auxiliary heads follow pruning (traced in training mode); ShuffleNet-V2's shuffled channels are
    kept whole and the rest prunes. Then a training step, and save/load gives the same outputs."""
    import warnings

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    x, y = torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, 1000, (BATCH,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        pruner = ep.EarlyPruner(model, x, 0.5, policy="init", optimizer=opt, steps=1, steps_per_epoch=1)
    assert pruner.groups.graph.mode == ("train" if arch == "googlenet" else "eval")
    assert bool(pruner.groups.kept) == (arch != "googlenet")
    pruner.step()
    assert pruner.done
    model.train()
    opt.zero_grad()
    out = model(x)
    outputs = list(out) if isinstance(out, tuple) else [out]
    sum(F.cross_entropy(o, y) for o in outputs).backward()
    opt.step()
    loaded = ep.load(ep.save(model, tmp_path / "m.safetensors"), getattr(torchvision.models, arch)(weights=None))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
