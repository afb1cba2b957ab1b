"""A criterion of your own: one small class, registered by name, used by EarlyPruner and prune() like the built-in
ones — the engine, the selection and the policies never need to know.

The criterion here scores each channel by its BatchNorm scale times the size of the filter that produces it,
``|γ_n| · ‖W_n‖₂`` (network slimming's |γ| combined with a filter norm), divided by the layer's mean: a channel
matters if its filter is large *and* BatchNorm lets its output through, compared with its own layer. (The
ranking is global, across layers: raw filter norms shrink with a layer's fan-in at initialisation, so without
the per-layer normalisation the widest layer would lose all the channels.) A criterion returns one score per
channel of every channel
group (higher = keep); ``group.producers()`` are the convolutions / linear layers whose output channels the group
is, ``group.norms()`` its BatchNorm layers, and ``group.gather(ref, values)`` maps a layer's per-channel values
to the group's channels (coupled layers — residual adds, depthwise convolutions — share one group).

    python examples/custom_criterion.py            # 11 s on a 2-core CPU, 1 thread (2026-11-30)
    EARLYPRUNE_EXAMPLE_TINY=1 python examples/custom_criterion.py

See docs/extending.md for gradient criteria (``uses_gradients``), criteria that run passes of their own
(``needs_batches``), hooks (``attach`` / ``detach``) and how scores are averaged over batches.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

import earlyprune
from earlyprune.criteria import CRITERIA, Criterion

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"
EPOCHS, N_TRAIN, WIDTH = (3, 512, 8) if TINY else (6, 2048, 32)
torch.manual_seed(0)


@CRITERIA.register("bn_weighted_norm")
class BNWeightedNorm(Criterion):
    """``s_n = |γ_n|·‖W_n‖₂ / mean_layer(|γ|·‖W‖₂)``: BatchNorm scale times filter norm, each averaged over the
    group's coupled layers, relative to the group's mean."""

    family = "magnitude"  # scores from the weights (EPI's default τ for magnitude criteria applies)

    def compute(self, groups, batch=None):
        scores = {}
        for g in groups:
            norm = torch.zeros(g.width)
            for ref in g.producers():
                norm += g.gather(ref, ref.module.weight.detach().flatten(1).float().norm(dim=1).cpu())
            gamma = torch.zeros(g.width)
            for ref in g.norms():
                gamma += g.gather(ref, ref.module.weight.detach().abs().float().cpu())
            raw = (norm / max(len(g.producers()), 1)) * (gamma / len(g.norms()) if g.norms() else 1.0)
            scores[g.name] = raw / raw.mean().clamp_min(1e-12)
        return scores


def make_data(n: int, seed: int, classes: int = 10, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    templates = F.avg_pool2d(torch.randn(classes, 3, size, size, generator=torch.Generator().manual_seed(1)), 5, 1, 2)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return templates[y] + 1.2 * torch.randn(n, 3, size, size, generator=g), y


def small_cnn(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 10))


def main() -> None:
    x, y = make_data(N_TRAIN, seed=0)
    x_test, y_test = make_data(1000, seed=1)
    model = small_cnn(WIDTH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # by name, like any built-in criterion (or pass an instance: criterion=BNWeightedNorm())
    pruner = earlyprune.EarlyPruner(model, x[:2], ratio=0.5, criterion="bn_weighted_norm", policy="epoch:2",
                                    optimizer=optimizer, steps=4)
    before = pruner.structure()
    for epoch in range(EPOCHS):
        for idx in torch.randperm(N_TRAIN).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            pruner.step()
        pruner.epoch_end()
        model.eval()
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        model.train()
        print(f"epoch {epoch} {pruner.history[-1]['phase']:<7} test accuracy {acc:6.2%}  channels {pruner.structure()}")
    print(f"\nbn_weighted_norm kept {pruner.structure()} of {before} channels per layer; "
          f"{earlyprune.pruning_outcome(pruner, epochs=EPOCHS).describe()}")

    # the same class also prunes outside a training loop
    other = small_cnn(WIDTH)
    result = earlyprune.prune(other, x[:2], 0.5, criterion=BNWeightedNorm())
    print(f"prune() with it: parameters {result.before.params:,} -> {result.after.params:,}")


if __name__ == "__main__":
    main()
