"""Lightning callback: prunes mid-training with the Trainer's own optimizer and scheduler, keeps learning,
resumes from checkpoints before and after the pruning event to the same structure, reloads a pruned checkpoint
with identical outputs, and prunes identically on both ranks of a 2-process ddp run (CPU, gloo)."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

L = pytest.importorskip("lightning.pytorch")

from earlyprune.integrations.lightning import (EarlyPruning, PrunedCheckpointMixin,  # noqa: E402
                                               load_from_checkpoint)


class LitNet(L.LightningModule):
    """A small CNN; a user's module as it would be written without earlyprune."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.losses.append(loss.item())
        return loss

    def on_train_epoch_start(self):
        self.losses = []

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def on_train_epoch_end(self):
        if getattr(self, "losses", None):  # (a run resumed at an epoch's end trains no batch of it)
            self.epoch_losses = getattr(self, "epoch_losses", []) + [sum(self.losses) / len(self.losses)]

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)]


def loader(shuffle: bool = False, rank_differs: bool = False) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=shuffle)


def _trainer(tmp_path, epochs, callback, precision="32-true", extra=(), **kw):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", callbacks=[callback, *extra], precision=precision,
                     logger=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                     deterministic=True, **kw)


def _fit(tmp_path, epochs=4, precision="32-true", ckpt_path=None, model=None, validate=False, module=None, **kw):
    L.seed_everything(0)
    callback = EarlyPruning(0.5, policy="epoch:1", steps=2, min_channels=4, module=module)
    # with validation, checkpoints are written at validation end — before the callback's epoch end
    extra = [L.callbacks.ModelCheckpoint(save_on_train_epoch_end=False)] if validate else []
    trainer = _trainer(tmp_path, epochs, callback, precision, extra=extra, **kw)
    model = model or LitNet()
    trainer.fit(model, loader(), val_dataloaders=loader() if validate else None, ckpt_path=ckpt_path)
    return trainer, callback, model


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])   # CPU: Lightning turns 16-mixed into bf16
def test_prunes_mid_training_and_keeps_learning(tmp_path, precision):
    trainer, callback, model = _fit(tmp_path, epochs=5, precision=precision)
    pruner = callback.pruner
    assert [h["phase"] for h in pruner.history] == ["dense", "pruning", "sparse", "sparse", "sparse"]
    assert sum(pruner.structure()) == 16 and min(pruner.structure()) >= 4   # half of the 32 channels
    opt = trainer.optimizers[0]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert all(opt.state[p]["momentum_buffer"].shape == p.shape for p in model.parameters() if p in opt.state)
    assert trainer.lr_scheduler_configs[0].scheduler.optimizer is opt
    losses = model.epoch_losses
    assert losses[4] < losses[3] < losses[2] < losses[0]          # still learning after the pruning epoch


# before / after the pruning event (epoch 1); with validation, Lightning saves at validation end, before the
# callback's epoch end: the resumed callback finishes that epoch
@pytest.mark.parametrize("stop_after, validate", [(1, False), (3, False), (1, True)])
def test_resume_before_and_after_the_pruning_event_ends_the_same(tmp_path, stop_after, validate):
    _, reference, ref_model = _fit(tmp_path / "full", epochs=4, validate=validate)
    first, _, _ = _fit(tmp_path / "part", epochs=stop_after, validate=validate)
    ckpt = first.checkpoint_callback.best_model_path
    _, resumed, model = _fit(tmp_path / "part", epochs=4, ckpt_path=ckpt, validate=validate)
    assert resumed.pruner.structure() == reference.pruner.structure()
    assert [h["phase"] for h in resumed.pruner.history] == ["dense", "pruning", "sparse", "sparse"]
    for (name, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_a_pruned_checkpoint_loads_with_identical_outputs(tmp_path):
    trainer, callback, model = _fit(tmp_path, epochs=3, module="net")          # prune the submodule
    assert callback.pruner.groups.names[0].startswith("0")                     # names relative to model.net
    ckpt = trainer.checkpoint_callback.best_model_path
    x = next(iter(loader()))[0]
    with torch.no_grad():
        expected = model.eval()(x)
        loaded = load_from_checkpoint(LitNet, ckpt)
        assert type(loaded) is LitNet
        assert torch.equal(loaded.eval()(x), expected)

        class MixedNet(PrunedCheckpointMixin, LitNet):
            pass

        assert torch.equal(MixedNet.load_from_checkpoint(ckpt).eval()(x), expected)
    with pytest.raises(RuntimeError, match="size mismatch"):     # without the replay, Lightning refuses
        LitNet.load_from_checkpoint(ckpt)


def test_two_ddp_ranks_prune_identically(tmp_path):
    script = Path(__file__).with_name("lightning_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["world"] == r1["world"] == 2
    assert r0["events"] == r1["events"] == 2
    assert r0["structure"] == r1["structure"] and sum(r0["structure"]) == 16
    assert r0["hash"] == r1["hash"]                               # same weights: DDP kept training the new ones


@pytest.mark.parametrize("kwargs, error, match", [({"ratio": 1.5}, ValueError, "ratio"),
                                                  ({"policy": "nope"}, ValueError, "nope"),
                                                  ({"ignored_layers": [nn.Linear(1, 1)]}, TypeError, "function"),
                                                  ({"optimizer": None}, ValueError, "optimizers")])
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        EarlyPruning(**kwargs)


def test_missing_lightning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "earlyprune.integrations.lightning", raising=False)
    with pytest.raises(ImportError, match=r'pip install "earlyprune\[lightning\]"'):
        importlib.import_module("earlyprune.integrations.lightning")


class TwoOptimizerNet(LitNet):
    """Manual optimization with one optimizer per half of the network (as GANs do)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt_a, opt_b = self.optimizers()
        loss = F.cross_entropy(self(x), y)
        self.losses.append(loss.item())
        opt_a.zero_grad()
        opt_b.zero_grad()
        self.manual_backward(loss)
        opt_a.step()
        opt_b.step()

    def configure_optimizers(self):
        first = list(self.net[:3].parameters())
        rest = [p for p in self.parameters() if all(p is not q for q in first)]
        return torch.optim.SGD(first, lr=0.05, momentum=0.9), torch.optim.Adam(rest, lr=1e-3)


def test_every_optimizer_follows_and_accumulation_steps_count(tmp_path):
    L.seed_everything(0)
    callback = EarlyPruning(0.5, policy="epoch:1", steps=2, min_channels=4)
    trainer = _trainer(tmp_path, 3, callback)
    model = TwoOptimizerNet()
    trainer.fit(model, loader())
    sgd, adam = trainer.optimizers
    assert {id(p) for o in (sgd, adam) for g in o.param_groups for p in g["params"]} == \
        {id(p) for p in model.parameters()}
    assert all(p.shape == sgd.state[p]["momentum_buffer"].shape for p in sgd.param_groups[0]["params"])
    assert all(p.shape == adam.state[p]["exp_avg"].shape for p in adam.param_groups[0]["params"])
    assert model.net[0].out_channels == sgd.param_groups[0]["params"][0].shape[0] < 16

    L.seed_everything(0)
    callback = EarlyPruning(0.5, policy="epoch:1", steps=2, min_channels=4)
    trainer = _trainer(tmp_path / "acc", 3, callback, accumulate_grad_batches=2)
    trainer.fit(LitNet(), loader())                               # 4 batches per epoch = 2 optimizer steps
    assert [e["batch"] for e in callback.pruner.events] == [1, 2]


def test_a_policy_that_cannot_prune_within_max_epochs_is_said_when_fit_starts(tmp_path):
    L.seed_everything(0)
    late = EarlyPruning(0.5, policy="epoch:10", steps=2, min_channels=4)
    with pytest.warns(UserWarning, match="epoch:10.*prunes in epoch 10 .*a run of 3 epochs"):
        _trainer(tmp_path, 3, late).fit(LitNet(), loader())
    capped = EarlyPruning(0.5, policy="epi:cap=10", steps=2, min_channels=4)
    with pytest.warns(UserWarning, match="cap, epoch 10, which a run of 3 epochs never reaches"):
        _trainer(tmp_path, 3, capped).fit(LitNet(), loader())


def test_each_pruning_step_is_logged_through_lightning(tmp_path, caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.callbacks.earlyprune"):
        _, callback, _ = _fit(tmp_path, epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "lightning.pytorch.callbacks.earlyprune"]
    assert len(lines) == len(callback.pruner.events) == 2
    assert "epoch 1, pruning step 1:" in lines[0] and "channels removed; the model now has" in lines[0]
    assert "of dense" in lines[-1]
