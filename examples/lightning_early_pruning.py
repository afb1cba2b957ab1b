"""Prune a CNN early in a PyTorch Lightning run, resume from a checkpoint, and load the pruned model back.

    python examples/lightning_early_pruning.py [OUT_DIR]

The LightningModule below is written as usual — nothing in it knows about pruning. The EarlyPruning callback
trains it dense for one epoch, removes half of its channels during the next one, and keeps the optimizer, the LR
scheduler and the checkpoints consistent with the smaller model.
"""
# requires: lightning

import os
import sys
import tempfile

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from earlyprune.integrations.lightning import EarlyPruning, load_from_checkpoint

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"
EPOCHS = 3 if TINY else 8
WIDTH = 8 if TINY else 32


class LitCNN(L.LightningModule):
    def __init__(self, width: int = WIDTH, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 4))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)]


def data(n: int) -> torch.utils.data.DataLoader:
    """A synthetic 4-class task: which of two colour channels is brighter on average."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)


def main(out_dir: str) -> None:
    L.seed_everything(0)
    loader = data(128 if TINY else 2048)
    pruning = EarlyPruning(0.5, criterion="magnitude", policy="epoch:1", steps=4, min_channels=2)
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", callbacks=[pruning], default_root_dir=out_dir,
                        logger=False, enable_progress_bar=not TINY)
    model = LitCNN()
    trainer.fit(model, loader)
    print("channels per group:", pruning.pruner.structure(), "| phases:",
          [h["phase"] for h in pruning.pruner.history])
    stats = pruning.pruner.stats()
    print(f"parameters {stats.params:,}, MACs {stats.macs:,} ({1 - stats.node_sparsity:.0%} of the channels left)")

    # the checkpoint stores the pruned structure: the module is rebuilt, pruned, then loaded
    checkpoint = trainer.checkpoint_callback.best_model_path
    loaded = load_from_checkpoint(LitCNN, checkpoint).eval()
    x = next(iter(loader))[0]
    with torch.no_grad():
        same = torch.equal(loaded(x), model.eval()(x))
    print(f"reloaded {os.path.basename(checkpoint)}: identical outputs = {same}")

    # resuming works the same way: trainer.fit(LitCNN(), loader, ckpt_path=checkpoint) with the callback


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="earlyprune-lightning-"))
