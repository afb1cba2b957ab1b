"""Training-step time of a BERT pruned by earlyprune's transformer integration over the dense model, on CPU.

For each config, a dense BERT for sequence classification and a copy pruned to ``--mlp-ratio`` of its MLP
neurons and ``--head-ratio`` of its heads (EarlyPruner with the blocks that the Hugging Face callback uses,
magnitude criterion, one step) train side by side: AdamW, forward + cross-entropy + backward + step on the same
batch, one thread, interleaved (``dense, pruned`` per round) after a warm-up; reported is the median of the
per-round ratios dense/pruned and its inter-quartile range. GPT-2 is not measured: the integration refuses it
(docs/transformers.md says why).

    python benchmarks/transformers_speed.py [--rounds 30] [--out benchmarks/results/transformers_speed.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

import earlyprune as ep
from earlyprune.integrations.blocks import find_blocks
from earlyprune.core.timing import paired_ratio, train_step

DATE = "2026-11-30"
CONFIGS = {  # name: (hidden, layers, heads, intermediate, sequence length, batch)
    "tiny (test config)": (32, 2, 4, 64, 12, 16),
    "small": (256, 4, 4, 1024, 128, 16),
}


def _step(model, opt, x, y):
    """One training step with the model's own loss (``labels=``), timed by earlyprune.core.timing."""
    return train_step(model, opt, {"input_ids": x, "labels": y}, loss_fn=lambda out, _: out.loss)


def measure(name, spec, rounds, mlp_ratio, head_ratio):
    hidden, layers, heads, inter, length, batch = spec
    torch.manual_seed(0)
    dense = BertForSequenceClassification(BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers,
                                                     num_attention_heads=heads, intermediate_size=inter,
                                                     max_position_embeddings=length, num_labels=2,
                                                     attn_implementation="eager"))
    pruned = copy.deepcopy(dense)
    x = torch.randint(0, 1000, (batch, length))
    y = torch.randint(0, 2, (batch,))
    blocks = find_blocks(pruned)
    pruner = ep.EarlyPruner(pruned, {"input_ids": x[:2]}, mlp_ratio, head_ratio=head_ratio, policy="epoch:0",
                            steps=1, steps_per_epoch=1, optimizer=None, num_heads=blocks.num_heads,
                            ignored_layers=blocks.ignored_layers, record_signals=False)
    pruner.step()
    stats = pruner.stats()
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (dense, pruned)]
    n = 20 if hidden < 64 else 2
    # earlyprune.core.timing: interleaved rounds (order alternating), median of the per-round ratios dense / pruned
    result = paired_ratio(_step(dense, opts[0], x, y), _step(pruned, opts[1], x, y), rounds=rounds, warmup=n, number=n)
    heads_left = [layer.attention.self.query.out_features // (hidden // heads) for layer in pruned.bert.encoder.layer]
    return {"config": name, "hidden": hidden, "layers": layers, "heads": heads, "intermediate": inter,
            "sequence": length, "batch": batch, "heads_left": heads_left,
            "mlp_left": [layer.intermediate.dense.out_features for layer in pruned.bert.encoder.layer],
            "params_left": stats.params / pruner.dense_stats.params, "macs_left": stats.macs / pruner.dense_stats.macs,
            "dense_ms": 1e3 * result.a_seconds, "pruned_ms": 1e3 * result.b_seconds,
            "speedup_median": result.ratio, "speedup_iqr": list(result.iqr), "rounds": rounds,
            "steps_per_round": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--mlp-ratio", type=float, default=0.5)
    parser.add_argument("--head-ratio", type=float, default=0.25)
    parser.add_argument("--out", default="benchmarks/results/transformers_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [measure(name, spec, args.rounds, args.mlp_ratio, args.head_ratio) for name, spec in CONFIGS.items()]
    for r in results:
        print(f"{r['config']:<20} dense {r['dense_ms']:8.2f} ms  pruned {r['pruned_ms']:8.2f} ms  "
              f"speedup {r['speedup_median']:.2f}x (IQR {r['speedup_iqr'][0]:.2f}-{r['speedup_iqr'][1]:.2f})  "
              f"MACs left {r['macs_left']:.0%}, heads {r['heads_left']}")
    doc = {"date": DATE, "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": 1, "mlp_ratio": args.mlp_ratio, "head_ratio": args.head_ratio, "results": results}
    Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
