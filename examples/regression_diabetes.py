"""Prune an MLP regressor during training, with your own loss (MSE) and loop: channels, then weights.

scikit-learn's diabetes data (442 patients, 10 features, disease progression after one year): an MLP
10-128-128-1 trained with Adam on the mean squared error. Three runs from the same initialisation — dense,
`granularity="channels"` (hidden units removed: a smaller, faster network) and `granularity="weights"`
(90 % of the weights masked: a smaller file, same speed) — each pruned by EarlyCroP's `crop` criterion when its
`earlycrop` policy sees the weights settle. Prints the test RMSE and what pruning left.

    python examples/regression_diabetes.py          # 47 s on the shared 2-core dev CPU (2026-11-30)
"""
# requires: sklearn

import os
import tempfile

import torch
import torch.nn.functional as F
from sklearn.datasets import load_diabetes
from torch import nn

import earlyprune

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"
EPOCHS = 4 if TINY else 60

x, y = load_diabetes(return_X_y=True)
x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]
perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
test, train = perm[:88], perm[88:]
x = (x - x[train].mean(0)) / x[train].std(0)
y_mean, y_std = y[train].mean(), y[train].std()
y_norm = (y - y_mean) / y_std


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1))


def rmse(model: nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        value = F.mse_loss(model(x[test]) * y_std + y_mean, y[test]).sqrt().item()
    model.train()
    return value


for granularity, ratio in ((None, None), ("channels", 0.7), ("weights", 0.9)):
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pruner = earlyprune.EarlyPruner(model, x[:2], ratio or 0.5, granularity=granularity or "channels",
                                    criterion="crop", policy="never" if granularity is None else
                                    f"earlycrop:cap={max(1, EPOCHS // 4)}", optimizer=optimizer,
                                    loss_fn=F.mse_loss, steps=2)
    for epoch in range(EPOCHS):
        order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))]
        for idx in order.split(32):
            optimizer.zero_grad()
            F.mse_loss(model(x[idx]), y_norm[idx]).backward()
            optimizer.step()
            pruner.step(x[idx], y_norm[idx])          # the batch: crop scores it with passes of its own
        pruner.epoch_end()
    stats = pruner.stats()
    path = earlyprune.save(model, os.path.join(tempfile.mkdtemp(), "model.safetensors"))
    print(f"{granularity or 'dense':8}  test RMSE {rmse(model):6.2f}  pruned in epoch {pruner.prune_epoch}  "
          f"parameters {stats.params:6,}  weight sparsity {stats.weight_sparsity:6.1%}  "
          f"file {path.stat().st_size / 1024:5.1f} KiB")
