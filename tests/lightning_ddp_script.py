"""Run by tests/test_integration_lightning.py: a 2-process `ddp` Lightning run on CPU (gloo) with EarlyPruning;
each rank writes its structure and a hash of its weights. Lightning's `ddp` strategy starts the second process by
running this script again."""

import hashlib
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_integration_lightning import LitNet, loader  # noqa: E402

from earlyprune.integrations.lightning import EarlyPruning  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    L.seed_everything(0)
    callback = EarlyPruning(0.5, criterion="taylor", policy="epoch:1", steps=2)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", callbacks=[callback],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    model = LitNet()
    trainer.fit(model, loader(shuffle=True, rank_differs=True))
    # parameters only: BatchNorm statistics are each rank's own between DDP's buffer broadcasts
    digest = hashlib.sha256(b"".join(p.detach().contiguous().numpy().tobytes()
                                     for p in model.parameters())).hexdigest()
    rank = trainer.global_rank
    (out / f"rank{rank}.json").write_text(json.dumps({"structure": callback.pruner.structure(), "hash": digest,
                                                      "events": len(callback.pruner.events),
                                                      "world": trainer.world_size}))
