"""Prune attention heads and MLP neurons of a BERT classifier while the Hugging Face Trainer trains it.

    python examples/transformers_bert_heads.py [OUT_DIR]

The model is built from a config (no download) and trained on a synthetic sequence task. EarlyPruningCallback
trains it dense for one epoch, then removes a quarter of the attention heads and half of the MLP neurons during
the next epoch; the Trainer's own optimizer follows. The pruned model is saved and loaded back.
"""
# requires: transformers, accelerate

import os
import sys
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from earlyprune.integrations.transformers import EarlyPruningCallback, load_pruned, save_pruned

TINY = os.environ.get("EARLYPRUNE_EXAMPLE_TINY") == "1"


class FirstTokenTask(torch.utils.data.Dataset):
    """Label 1 when the first token is in the lower half of the vocabulary."""

    def __init__(self, n: int, vocab: int = 64, length: int = 16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(1, vocab, (n, length), generator=g)
        self.y = (self.x[:, 0] < vocab // 2).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=64 if TINY else 128, num_hidden_layers=2 if TINY else 4,
                        num_attention_heads=4, intermediate_size=128 if TINY else 512, max_position_embeddings=32,
                        num_labels=2)
    model = BertForSequenceClassification(config)
    pruning = EarlyPruningCallback(mlp_ratio=0.5, head_ratio=0.25, criterion="magnitude", policy="epoch:1", steps=4)
    args = TrainingArguments(output_dir=out_dir, num_train_epochs=3 if TINY else 6, per_device_train_batch_size=32,
                             learning_rate=1e-3, logging_strategy="epoch", save_strategy="no", report_to=[],
                             use_cpu=True, disable_tqdm=TINY, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=FirstTokenTask(128 if TINY else 4096),
                      callbacks=[pruning])
    trainer.train()

    for i, layer in enumerate(model.bert.encoder.layer):
        heads = layer.attention.self.query.out_features // layer.attention.self.attention_head_size
        print(f"layer {i}: {heads} of {config.num_attention_heads} heads, "
              f"{layer.intermediate.dense.out_features} of {config.intermediate_size} MLP neurons")

    save_pruned(model, os.path.join(out_dir, "pruned"))             # config.json + earlyprune_model.safetensors
    loaded = load_pruned(os.path.join(out_dir, "pruned"), BertForSequenceClassification)
    x = FirstTokenTask(8).x
    with torch.no_grad():
        print("reloaded: identical logits =", torch.equal(loaded(input_ids=x).logits, model.eval()(input_ids=x).logits))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="earlyprune-bert-"))
