"""Hugging Face Trainer callback: heads and MLP neurons of BERT / ViT pruned during training, the Trainer's own
optimizer kept consistent, save_pretrained + structure record → identical logits. Models built from configs."""

import importlib
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel,  # noqa: E402
                          Trainer, TrainingArguments, ViTConfig, ViTForImageClassification)

from earlyprune.integrations.transformers import EarlyPruningCallback, load_pruned, save_pruned  # noqa: E402


class FirstTokenTask(torch.utils.data.Dataset):
    """Label = whether the first token is in the lower half of the vocabulary (learnable in a few epochs)."""

    def __init__(self, n: int = 128, vocab: int = 32, length: int = 12) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randint(1, vocab, (n, length), generator=g)
        self.y = (self.x[:, 0] < vocab // 2).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}


def _bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=64,
                                                    max_position_embeddings=16, num_labels=2))


def _args(tmp_path, epochs=4, **kw):
    kw = {"save_strategy": "no", **kw}
    return TrainingArguments(output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=16,
                             learning_rate=3e-3, report_to=[], use_cpu=True, logging_strategy="epoch",
                             disable_tqdm=True, seed=0, **kw)


@pytest.fixture(scope="module")
def trained_bert(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bert")
    callback = EarlyPruningCallback(mlp_ratio=0.5, head_ratio=0.25, policy="epoch:1", steps=2)
    trainer = Trainer(model=_bert(), args=_args(tmp), train_dataset=FirstTokenTask(), callbacks=[callback])
    trainer.train()
    return trainer, callback, tmp


def test_bert_loses_half_its_mlp_neurons_and_a_quarter_of_its_heads_at_epoch_1(trained_bert):
    trainer, callback, _ = trained_bert
    model, pruner = trainer.model, callback.pruner
    assert [h["phase"] for h in pruner.history] == ["dense", "pruning", "sparse", "sparse"]
    assert {e["epoch"] for e in pruner.events} == {1}
    layers = model.bert.encoder.layer
    heads = [layer.attention.self.query.out_features // 8 for layer in layers]
    assert sum(heads) == 6                                           # 8 heads → 6
    for layer in layers:
        q, k, v = (getattr(layer.attention.self, n) for n in ("query", "key", "value"))
        assert q.out_features == k.out_features == v.out_features == layer.attention.output.dense.in_features
    assert sum(layer.intermediate.dense.out_features for layer in layers) == 64   # 128 neurons → 64
    assert all(layer.output.dense.out_features == 32 for layer in layers)         # residual stream kept
    # the Trainer's optimizer was fixed in place: it trains exactly the model's parameters, state shaped alike
    inner = trainer.optimizer.optimizer
    params = [p for g in inner.param_groups for p in g["params"]]
    assert {id(p) for p in params} == {id(p) for p in model.parameters()}
    assert all(inner.state[p]["exp_avg"].shape == p.shape for p in params if p in inner.state)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and losses[3] < losses[2] < losses[1]   # keeps learning after the pruning epoch


def test_pruned_bert_saves_and_reloads_with_identical_logits(trained_bert, tmp_path):
    trainer, _, _ = trained_bert
    model = trainer.model.eval()
    x = FirstTokenTask().x[:8]
    with torch.no_grad():
        expected = model(input_ids=x).logits
    save_pruned(model, tmp_path / "pruned")
    loaded = load_pruned(tmp_path / "pruned", BertForSequenceClassification)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, expected)
    assert not (tmp_path / "pruned" / "model.safetensors").exists()   # from_pretrained finds nothing to misload


def test_trainer_checkpoints_carry_the_structure(tmp_path):
    callback = EarlyPruningCallback(mlp_ratio=0.5, head_ratio=0.25, policy="epoch:0", steps=1)
    trainer = Trainer(model=_bert(), args=_args(tmp_path, epochs=1, save_strategy="epoch"),
                      train_dataset=FirstTokenTask(32), callbacks=[callback])
    trainer.train()
    loaded = load_pruned(tmp_path / "checkpoint-2", BertForSequenceClassification)
    x = FirstTokenTask().x[:4]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, trainer.model.eval()(input_ids=x).logits)


def test_vit_prunes_heads_and_mlp_and_reloads(tmp_path):
    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=3)
    images = torch.randn(32, 3, 16, 16)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return {"pixel_values": images[i], "labels": torch.tensor(i % 3)}

    callback = EarlyPruningCallback(mlp_ratio=0.5, head_ratio=0.5, policy="epoch:0", steps=1)
    trainer = Trainer(model=ViTForImageClassification(config), args=_args(tmp_path, epochs=2),
                      train_dataset=Images(), callbacks=[callback])
    trainer.train()
    layers = trainer.model.vit.encoder.layer if hasattr(trainer.model.vit, "encoder") else trainer.model.vit.layers
    assert sum(layer.attention.q_proj.out_features for layer in layers) == 32      # 8 heads of 8 → 4
    assert sum(layer.mlp.fc1.out_features for layer in layers) == 64
    save_pruned(trainer.model, tmp_path / "vit")
    loaded = load_pruned(tmp_path / "vit", ViTForImageClassification)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=images[:4]).logits,
                           trainer.model.eval()(pixel_values=images[:4]).logits)


def test_gpt2_is_refused_with_the_reason(tmp_path):
    config = GPT2Config(vocab_size=32, n_embd=32, n_layer=1, n_head=4, n_positions=16, use_cache=False,
                        bos_token_id=0, eos_token_id=0)
    data = [{"input_ids": torch.randint(0, 32, (8,)), "labels": torch.randint(0, 32, (8,))} for _ in range(4)]
    trainer = Trainer(model=GPT2LMHeadModel(config), args=_args(tmp_path, epochs=1), train_dataset=data,
                      callbacks=[EarlyPruningCallback()])
    with pytest.raises(ValueError, match="Conv1D.*c_attn"):
        trainer.train()


@pytest.mark.parametrize("kwargs, match", [({"mlp_ratio": 1.0}, "mlp_ratio must be"),
                                           ({"mlp_ratio": 0, "head_ratio": 0}, "nothing would be pruned"),
                                           ({"criterion": "snip"}, "passes of its own"),
                                           ({"ratio": 0.3}, "sets 'ratio' itself")])
def test_bad_callback_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyPruningCallback(**kwargs)


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "earlyprune.integrations.transformers", raising=False)
    with pytest.raises(ImportError, match=r'pip install "earlyprune\[transformers\]"'):
        importlib.import_module("earlyprune.integrations.transformers")


def test_a_policy_that_cannot_prune_within_the_trainers_epochs_is_said(tmp_path):
    callback = EarlyPruningCallback(mlp_ratio=0.5, head_ratio=0.0, policy="epoch:10", steps=1)
    trainer = Trainer(model=_bert(), args=_args(tmp_path, epochs=3), train_dataset=FirstTokenTask(),
                      callbacks=[callback])
    with pytest.warns(UserWarning, match="prunes in epoch 10 at the earliest, but a run of 3 epochs"):
        trainer.train()


def test_each_pruning_step_is_logged_through_transformers(tmp_path, monkeypatch):
    from transformers.utils import logging as tf_logging

    said = []
    monkeypatch.setattr(tf_logging.get_logger("transformers.trainer"), "warning", said.append)
    callback = EarlyPruningCallback(mlp_ratio=0.5, head_ratio=0.0, policy="epoch:0", steps=1)
    Trainer(model=_bert(), args=_args(tmp_path, epochs=1), train_dataset=FirstTokenTask(),
            callbacks=[callback]).train()
    assert len(said) == len(callback.pruner.events) == 1
    assert "epoch 0, pruning step 1:" in said[0] and "channels removed; the model now has" in said[0]
