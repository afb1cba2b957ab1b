"""Pruning during training outside image classification, with the user's own loss and loop (EarlyCroP §5.3–5.5):

* **language model** — a 2-block causal transformer (d = 64, 4 heads, MLP 256) on a synthetic corpus: token
  sequences from a seeded second-order Markov chain over 24 symbols, whose entropy rate is the best achievable
  validation loss (reported beside it). Structured: the MLP neurons (residual stream, attention and embedding
  kept); unstructured: every linear / attention weight. Metric: validation cross-entropy (log perplexity, nats).
* **regression** — an MLP 10-128-128-1 on scikit-learn's diabetes data (442 patients; 80/20 split, standardised),
  mean squared error. Metric: test RMSE in the target's units.
* **control** — a 3-layer policy network 4-128-128-128-2 (EarlyCroP Table 4's CartPole MLP) trained by REINFORCE
  with a mean-return baseline on a cart-pole written here (the classic equations of Barto, Sutton & Anderson
  1983 as in Gym's CartPole-v1; 16 episodes of at most 200 steps per iteration, no RL package involved).
  Metric: mean return of 64 greedy evaluation episodes (200 = solved).

Each task trains dense, then with ``EarlyPruner`` at ``granularity="channels"`` (hidden units / MLP neurons
removed) and ``"weights"`` (masks), both with the ``crop`` criterion and the ``earlycrop`` policy (capped), in the
user's own loop (``pruner.step(inputs, targets)`` / ``pruner.epoch_end()``) with the task's own loss function.

    python benchmarks/beyond_images.py [--tiny] [--threads 1] [--out benchmarks/results/beyond_images.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import earlyprune
from earlyprune.unstructured import MaskedWeights

HERE = Path(__file__).resolve().parent


# -- language model -----------------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm causal transformer block."""

    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1)
        y = self.ln1(x)
        x = x + self.attn(y, y, y, attn_mask=causal, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    def __init__(self, vocab: int, length: int, d: int = 64, heads: int = 4, hidden: int = 256, blocks: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(length, d))
        self.blocks = nn.Sequential(*[Block(d, heads, hidden) for _ in range(blocks)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(self.blocks(self.emb(x) + self.pos[: x.shape[1]])))

    def keep_stream(self) -> list[nn.Module]:
        """The residual stream's producers (structured pruning keeps the stream, prunes MLP neurons)."""
        return [self.emb] + [b.fc2 for b in self.blocks] + [b.attn for b in self.blocks]


def markov_corpus(n: int, length: int, vocab: int = 24, seed: int = 0) -> tuple[torch.Tensor, float]:
    """``n`` sequences from a seeded second-order Markov chain and its entropy rate (nats per token, under the
    chain's stationary pair distribution estimated from a long run)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, vocab, vocab, generator=g) * 2.5
    probs = logits.softmax(-1)                       # P(x_t | x_{t-2}, x_{t-1})
    seqs = torch.empty(n, length, dtype=torch.long)
    seqs[:, :2] = torch.randint(0, vocab, (n, 2), generator=g)
    for t in range(2, length):
        p = probs[seqs[:, t - 2], seqs[:, t - 1]]
        seqs[:, t] = torch.multinomial(p, 1, generator=g).squeeze(1)
    pairs = torch.zeros(vocab, vocab)
    pairs.index_put_((seqs[:, 1:-1].reshape(-1), seqs[:, 2:].reshape(-1)), torch.ones(seqs[:, 2:].numel()),
                     accumulate=True)
    pairs /= pairs.sum()
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)   # per (a, b) context
    return seqs, float((pairs * entropy).sum())


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# -- control ------------------------------------------------------------------------------------------------
class CartPole:
    """Batched cart-pole (Barto et al. 1983; Gym CartPole-v1's constants and termination), in torch."""

    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    theta_limit, x_limit = 12 * 2 * math.pi / 360, 2.4

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.g = n, generator

    def reset(self) -> torch.Tensor:
        self.state = (torch.rand(self.n, 4, generator=self.g) - 0.5) * 0.1
        self.done = torch.zeros(self.n, dtype=torch.bool)
        return self.state.clone()

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, x_dot, theta, theta_dot = self.state.unbind(1)
        force = torch.where(action == 1, self.force_mag, -self.force_mag)
        total_mass = self.masspole + self.masscart
        pml = self.masspole * self.length
        cos, sin = theta.cos(), theta.sin()
        temp = (force + pml * theta_dot ** 2 * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (self.length * (4 / 3 - self.masspole * cos ** 2 / total_mass))
        x_acc = temp - pml * theta_acc * cos / total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * x_acc
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc
        self.state = torch.stack([x, x_dot, theta, theta_dot], 1)
        reward = (~self.done).float()
        self.done = self.done | (x.abs() > self.x_limit) | (theta.abs() > self.theta_limit)
        return self.state.clone(), reward, self.done.clone()


def policy_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128),
                         nn.ReLU(), nn.Linear(128, 2))


def reinforce_loss(logits: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """REINFORCE: ``−mean(log π(a|s) · (G − b))`` over the visited states."""
    actions, advantages = targets
    return -(logits.log_softmax(-1).gather(1, actions[:, None]).squeeze(1) * advantages).mean()


def rollout(policy: nn.Module, env: CartPole, steps: int, greedy: bool = False):
    """States, actions, returns-to-go of the live steps, and each episode's return."""
    states, actions, rewards, alive = [], [], [], []
    s = env.reset()
    with torch.no_grad():
        for _ in range(steps):
            logits = policy(s)
            a = logits.argmax(1) if greedy else torch.multinomial(logits.softmax(1), 1, generator=env.g).squeeze(1)
            live = ~env.done
            s2, r, _ = env.step(a)
            states.append(s), actions.append(a), rewards.append(r), alive.append(live)
            s = s2
            if bool(env.done.all()):
                break
    r = torch.stack(rewards)                      # (T, n)
    returns = r.flip(0).cumsum(0).flip(0)         # undiscounted return-to-go
    live = torch.stack(alive)
    return (torch.stack(states)[live], torch.stack(actions)[live], returns[live], r.sum(0))


# -- the runs -----------------------------------------------------------------------------------------------
@dataclass
class Task:
    name: str
    build: Callable[[], nn.Module]
    example: Any
    loss_fn: Callable[[Any, Any], torch.Tensor]
    epochs: int
    run_epoch: Callable[[nn.Module, torch.optim.Optimizer, Any], float]   # trains one epoch, returns its loss
    evaluate: Callable[[nn.Module], float]
    metric: str
    ignored: Callable[[nn.Module], list[nn.Module]]
    ratio: float
    lr: float
    extra: dict[str, Any]
    higher_is_better: bool = False


def language_task(tiny: bool) -> Task:
    length = 32
    seqs, entropy = markov_corpus(256 if tiny else 3000, length + 1, seed=0)
    n_val = len(seqs) // 6
    train, val = seqs[n_val:], seqs[:n_val]
    batch = 32

    def run_epoch(model, opt, pruner):
        total, perm = 0.0, torch.randperm(len(train), generator=torch.Generator().manual_seed(pruner.epoch))
        for idx in perm.split(batch):
            x, y = train[idx, :-1], train[idx, 1:]
            opt.zero_grad()
            loss = lm_loss(model(x), y)
            loss.backward()
            opt.step()
            pruner.step(x, y)
            total += loss.item() * len(idx)
        return total / len(train)

    def evaluate(model):
        model.eval()
        with torch.no_grad():
            out = lm_loss(model(val[:, :-1]), val[:, 1:]).item()
        model.train()
        return out

    build = (lambda: TinyLM(24, length, d=32, heads=2, hidden=64)) if tiny else (lambda: TinyLM(24, length))
    return Task("language model (transformer, synthetic Markov corpus)", build, train[:2, :-1], lm_loss,
                2 if tiny else 12, run_epoch, evaluate, "validation loss (nats/token; entropy rate = optimum)",
                lambda m: m.keep_stream(), 0.5, 3e-3, {"entropy_rate": entropy, "train_sequences": len(train)})


def regression_task(tiny: bool) -> Task:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test, train = perm[: len(y) // 5], perm[len(y) // 5:]
    mu, sd = x[train].mean(0), x[train].std(0)
    y_mu, y_sd = y[train].mean(), y[train].std()
    x, yn = (x - mu) / sd, (y - y_mu) / y_sd

    def run_epoch(model, opt, pruner):
        total = 0.0
        order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(pruner.epoch))]
        for idx in order.split(32):
            opt.zero_grad()
            loss = F.mse_loss(model(x[idx]), yn[idx])
            loss.backward()
            opt.step()
            pruner.step(x[idx], yn[idx])
            total += loss.item() * len(idx)
        return total / len(train)

    def evaluate(model):
        model.eval()
        with torch.no_grad():
            out = float(F.mse_loss(model(x[test]) * y_sd + y_mu, y[test]).sqrt())
        model.train()
        return out

    return Task("regression (MLP, sklearn diabetes, MSE)",
                lambda: nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1)),
                x[:2], F.mse_loss, 4 if tiny else 60, run_epoch, evaluate, "test RMSE (disease progression units)",
                lambda m: [], 0.7, 1e-3, {"target_std": float(y[test].std()), "train": len(train), "test": len(test)})


def control_task(tiny: bool) -> Task:
    g = torch.Generator().manual_seed(0)
    env = CartPole(8 if tiny else 16, g)
    iterations = 2 if tiny else 8   # policy updates per "epoch"

    def run_epoch(model, opt, pruner):
        total = 0.0
        g.manual_seed(1000 + pruner.epoch)   # the same episodes' randomness in every run, epoch by epoch
        for _ in range(iterations):
            states, actions, returns, episode = rollout(model, env, 30 if tiny else 200)
            advantages = (returns - returns.mean()) / (returns.std() + 1e-8)
            opt.zero_grad()
            loss = reinforce_loss(model(states), (actions, advantages))
            loss.backward()
            opt.step()
            pruner.step(states, (actions, advantages))
            total += float(episode.mean())
        return total / iterations   # mean training return (higher is better)

    def evaluate(model):
        eval_env = CartPole(64, torch.Generator().manual_seed(123))
        return float(rollout(model, eval_env, 30 if tiny else 200, greedy=True)[3].mean())

    return Task("control (3-layer policy MLP, REINFORCE, cart-pole written here)", policy_net, torch.zeros(2, 4),
                reinforce_loss, 2 if tiny else 25, run_epoch, evaluate, "greedy mean return of 64 episodes (max 200)",
                lambda m: [], 0.7, 3e-3, {"episodes_per_iteration": env.n, "iterations_per_epoch": iterations},
                higher_is_better=True)


TASKS = {"language": language_task, "regression": regression_task, "control": control_task}


def run(task: Task, granularity: str | None, seed: int = 0, cap: int | None = None) -> dict[str, Any]:
    """Train ``task`` dense (granularity None) or pruned at that granularity; returns metrics and what pruning
    did."""
    torch.manual_seed(seed)
    model = task.build()
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    cap = cap if cap is not None else max(1, task.epochs // 4)
    pruner = earlyprune.EarlyPruner(
        model, task.example, task.ratio, criterion="crop", optimizer=opt, loss_fn=task.loss_fn,
        policy="never" if granularity is None else f"earlycrop:cap={cap}",
        granularity=granularity or "channels", steps=2,
        ignored_layers=task.ignored(model) if granularity == "channels" else None)
    before = pruner.stats()
    t0 = time.perf_counter()
    curve = []
    for _ in range(task.epochs):
        train_value = task.run_epoch(model, opt, pruner)
        pruner.epoch_end()
        curve.append({"epoch": len(curve), "train": train_value, "eval": task.evaluate(model), "phase":
                      pruner.history[-1]["phase"]})
    seconds = time.perf_counter() - t0
    after = pruner.stats()
    evals = [c["eval"] for c in curve]
    out = {"granularity": granularity or "dense", "final": evals[-1],
           "best": max(evals) if task.higher_is_better else min(evals), "prune_epoch":
           pruner.prune_epoch, "seconds": seconds, "params": after.params, "params_dense": before.params,
           "weight_sparsity": after.weight_sparsity, "node_sparsity": after.node_sparsity, "curve": curve}
    if granularity == "weights":
        w = MaskedWeights(model)
        out["masked_weights_nonzero"] = int(sum(torch.count_nonzero(t.value.detach()[~t.mask]) for t in w))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--out", type=Path, default=HERE / "results" / "beyond_images.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"date": date.today().isoformat(), "threads": args.threads, "torch": torch.__version__,
                               "machine": platform.processor() or platform.machine(), "tasks": {}}
    if args.out.is_file() and not args.tiny:  # rerunning some tasks keeps the others' results
        results["tasks"] = json.loads(args.out.read_text()).get("tasks", {})
    for key in args.tasks:
        task = TASKS[key](args.tiny)
        entry = results["tasks"][key] = {"name": task.name, "metric": task.metric, "epochs": task.epochs,
                                         "ratio": task.ratio, **task.extra, "runs": {}}
        for granularity in (None, "channels", "weights"):
            res = run(task, granularity)
            entry["runs"][res["granularity"]] = res
            print(f"{key:10} {res['granularity']:8} {task.metric}: {res['final']:.4g} (best {res['best']:.4g})  "
                  f"prune epoch {res['prune_epoch']}  weight sparsity {res['weight_sparsity'] or 0:.1%}  node sparsity "
                  f"{res['node_sparsity'] or 0:.1%}  {res['seconds']:.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
