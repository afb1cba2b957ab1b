"""A when-to-prune policy of your own: one small class, registered by name.

The policy here ("stable") prunes once the sub-network the criterion would select has stopped changing: the
structure similarity Ψ of PaT Eq. 5 between the structures of consecutive epochs stays at or above ``psi`` for
``k`` epochs in a row — a simpler cousin of EPI, which compares with the last r epochs at once. Like the built-in
signal policies it has a cap: if the rule has not fired after ``cap`` dense epochs, it prunes anyway (and says so).

A policy sees an ``EpochReport`` at the end of every dense epoch and answers "should the next epoch prune?".
``evaluate`` computes that answer and the state after it without side effects (the pruner and the reports may
ask twice); ``update`` — inherited — commits it. ``state_dict`` lets a resumed run decide identically.

    python examples/custom_policy.py            # 17 s on a 2-core CPU, 1 thread (2026-11-30)
    EARLYPRUNE_EXAMPLE_TINY=1 python examples/custom_policy.py

See docs/extending.md for the other signals a policy can read (weight change, Early-Bird masks, EPI).
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

import earlyprune
from earlyprune.policies import POLICIES, SignalPolicy
from earlyprune.policies.base import parse_options

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"
EPOCHS, N_TRAIN, WIDTH = (4, 512, 8) if TINY else (10, 2048, 32)
torch.manual_seed(0)


@POLICIES.register("stable")
class Stable(SignalPolicy):
    """Prune when Ψ(N_t, N_{t−1}) ≥ psi (PaT Eq. 5) for ``k`` consecutive epochs, or at the cap.

    Spec: ``stable`` or ``stable:psi=0.99,k=2,cap=5``.
    """

    needs_signals = frozenset({"structure"})  # N_t: kept channels per group of the sub-network at the ratio

    def __init__(self, psi: float = 0.99, k: int = 2, cap: int | None = SignalPolicy.DEFAULT_CAP) -> None:
        super().__init__(cap)
        if not 0 < psi <= 1:
            raise ValueError(f"psi must be in (0, 1], got {psi!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number ≥ 1, got {k!r}")
        self.psi, self.k = float(psi), k
        self._previous: list[int] | None = None
        self._streak = 0

    @classmethod
    def from_spec(cls, arg, **kwargs):
        return cls(**{**kwargs, **parse_options("stable", arg, {"psi": float, "k": int, "cap": int})})

    def _advance(self, report):
        """Pure: (signal, fired?, the next state) — SignalPolicy adds the cap and commits in update()."""
        if report.structure is None:
            return None, False, {"previous": self._previous, "streak": self._streak}
        psi = None if self._previous is None else earlyprune.structure_similarity(report.structure, self._previous)
        streak = self._streak + 1 if psi is not None and psi >= self.psi else 0
        return psi, streak >= self.k, {"previous": list(report.structure), "streak": streak}

    def _own_state(self):
        return {"previous": self._previous, "streak": self._streak}

    def _load_own_state(self, state):
        self._previous, self._streak = state["previous"], int(state["streak"])

    def __repr__(self):
        return f"Stable(psi={self.psi:g}, k={self.k}, cap={self.cap})"


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
    model = small_cnn(WIDTH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = earlyprune.EarlyPruner(model, x[:2], ratio=0.5, policy=f"stable:psi=0.99,k=2,cap={EPOCHS // 2}",
                                    optimizer=optimizer, steps=4)
    for epoch in range(EPOCHS):
        for idx in torch.randperm(N_TRAIN).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            pruner.step()
        pruner.epoch_end()
        entry = pruner.history[-1]
        signal = entry["policy_signal"]
        print(f"epoch {epoch} {entry['phase']:<7} Ψ to the previous epoch "
              f"{'–' if signal is None else f'{signal:.4f}'}"
              + (f"  -> epoch {epoch + 1} prunes ({entry['trigger_reason']})" if entry["trigger"] else ""))
    print(f"\n{earlyprune.pruning_outcome(pruner, epochs=EPOCHS).describe()}")

    # a fresh policy restored from the state reaches the same decisions (what --resume relies on)
    restored = POLICIES.build("stable:psi=0.99,k=2")
    restored.load_state_dict(pruner.policy.state_dict())
    assert restored.state_dict() == pruner.policy.state_dict()


if __name__ == "__main__":
    main()
