"""Hugging Face ``Trainer`` integration: prune attention heads and MLP neurons of a transformer during training.

.. code-block:: python

    from earlyprune.integrations.transformers import EarlyPruningCallback, load_pruned, save_pruned

    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[EarlyPruningCallback(mlp_ratio=0.5, head_ratio=0.25, policy="epoch:1")])
    trainer.train()
    save_pruned(trainer.model, "pruned/")                        # save_pretrained + the structure record
    model = load_pruned("pruned/", BertForSequenceClassification)  # original from config.json, replayed, loaded

The callback builds an :class:`~earlyprune.EarlyPruner` when training begins, on the model and on the optimizer
the ``Trainer`` created (a callback cannot swap it, so the pruner fixes it in place: param groups re-pointed,
Adam moments sliced), with the blocks :func:`~earlyprune.integrations.blocks.find_blocks` recognises — whole
attention heads (query / key / value / output projection together) and MLP intermediate neurons, the residual
stream kept. It accumulates the criterion after every optimizer step and asks the policy at every epoch end, as
:class:`~earlyprune.EarlyPruner` does in a hand-written loop: same criteria, same policies.

Saving: a transformers config cannot describe a pruned model (one head count and one MLP width for all layers),
and ``save_pretrained`` renames weights on the way out (transformers 5 converts e.g. ViT's ``q_proj`` back to the
legacy ``attention.query`` keys), so a pruned model is saved with earlyprune's own format inside the usual
directory: :func:`save_pruned` writes ``config.json`` (the *original* architecture) and
``earlyprune_model.safetensors`` (:func:`earlyprune.save`: weights under the module's own names plus the removal
history, no pickle); :func:`load_pruned` builds the original from the config, replays the history and loads the
weights. The callback writes that file into every checkpoint the ``Trainer`` saves as well, so
``load_pruned(".../checkpoint-500", cls)`` works too. Resuming a ``Trainer`` run from a checkpoint taken after the
pruning event is not supported (the ``Trainer`` loads the weights into the dense model before any callback runs).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from numbers import Real
from typing import Any

import torch
from torch import nn

from .. import io
from ..core.errors import MissingFileError, NotSupportedError, UsageError
from ..core.validation import Interval, InvalidParameterError, checked, rule
from ..criteria import CRITERIA, Criterion
from ..pruner import EarlyPruner
from ._optional import require
from .announce import event_lines
from .blocks import TransformerBlocks, find_blocks
from .run_length import check_run_length

_tf = require("transformers", "transformers", "earlyprune.integrations.transformers")
require("accelerate", "transformers", "the Hugging Face Trainer")

WEIGHTS_FILE = "earlyprune_model.safetensors"
_LABEL_KEYS = ("labels", "label", "label_ids")

#: the callback's own amounts (the pruner's arguments are checked when it is built)
CALLBACK_RULES = {
    "mlp_ratio": rule(Interval(Real, 0, 1, closed="left"), hint="the fraction of the MLP neurons to remove"),
    "head_ratio": rule(Interval(Real, 0, 1, closed="left"), hint="the fraction of the attention heads to remove"),
}


class EarlyPruningCallback(_tf.TrainerCallback):
    """Prune whole attention heads and MLP neurons early in a Hugging Face ``Trainer`` run.

    Args:
        mlp_ratio: fraction of the MLP intermediate neurons to remove (PaT's α over those neurons; 0 keeps them).
        head_ratio: fraction of the attention heads to remove, ranked apart from the neurons (0 keeps them).
        criterion: a criterion name or object, as for :class:`~earlyprune.EarlyPruner`; criteria that score
            batches with passes of their own (``snip``, ``crop``, ``grasp``) cannot run inside a callback.
        policy: when to prune — ``"epoch:1"``, ``"epi"``, … (epochs are the Trainer's epochs).
        steps: pruning steps within the pruning epoch (PaT's S).
        example_inputs: a batch to trace the model with (dict of tensors); by default two examples of the
            training set, collated by the Trainer's own collator, without their labels.
        **pruner_args: further :class:`~earlyprune.EarlyPruner` arguments (``min_channels``, ``round_to``,
            ``record_signals``, ``compute_aware``, …).

    After training, ``callback.pruner`` holds the pruner (its ``history``, ``events``, ``stats()``).
    """

    @checked(CALLBACK_RULES)
    def __init__(self, mlp_ratio: float = 0.5, head_ratio: float = 0.25, *, criterion: str | Criterion = "magnitude",
                 policy: str = "epoch:1", steps: int = 8, example_inputs: dict[str, torch.Tensor] | None = None,
                 **pruner_args: Any) -> None:
        if mlp_ratio == 0 and head_ratio == 0:
            raise InvalidParameterError("mlp_ratio and head_ratio are both 0: nothing would be pruned (set one of "
                                        "them above 0)")
        reserved = {"optimizer", "ratio", "num_heads", "ignored_layers", "steps_per_epoch", "target"}
        clash = sorted(reserved & set(pruner_args))
        if clash:
            raise InvalidParameterError(f"EarlyPruningCallback sets {clash[0]!r} itself; use mlp_ratio= / "
                                        f"head_ratio= for the amounts")
        built = CRITERIA.build(criterion) if isinstance(criterion, str) else criterion
        if getattr(built, "needs_batches", False):
            raise InvalidParameterError(f"criterion {built.name!r} scores batches with passes of its own, which a "
                                        f"Trainer callback cannot run; use magnitude, taylor, l1 or random")
        self.mlp_ratio, self.head_ratio = float(mlp_ratio), float(head_ratio)
        self.criterion, self.policy, self.steps = criterion, policy, steps
        self.example_inputs = example_inputs
        self.pruner_args = pruner_args
        self.pruner: EarlyPruner | None = None
        self.blocks: TransformerBlocks | None = None

    # -- Trainer events -------------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: Any = None, train_dataloader: Any = None, **kwargs: Any) -> None:
        if self.pruner is not None:
            return  # a second trainer.train() on the same callback: keep pruning state
        if args.world_size > 1:
            raise NotSupportedError("EarlyPruningCallback runs on one process: the Trainer's DDP wrapper cannot be "
                                      "rebuilt from a callback; use earlyprune.integrations.lightning under DDP")
        if model is None or optimizer is None or train_dataloader is None:
            raise UsageError("the Trainer passed no model, optimizer or train_dataloader to on_train_begin (call "
                             "trainer.train() with a model and a train_dataset)")
        self.blocks = find_blocks(model, heads=self.head_ratio > 0, mlp=self.mlp_ratio > 0)
        inputs = self.example_inputs if self.example_inputs is not None else _example_batch(train_dataloader)
        inputs = {k: v.to(next(model.parameters()).device) for k, v in inputs.items()}
        accumulation = max(int(args.gradient_accumulation_steps), 1)
        # ratio drives the neurons (or the heads alone); head_ratio ranks the heads apart
        ratio = self.mlp_ratio if self.mlp_ratio > 0 else self.head_ratio
        heads = {"head_ratio": self.head_ratio} if self.mlp_ratio > 0 and self.head_ratio > 0 else {}
        self.pruner = EarlyPruner(model, inputs, ratio, criterion=self.criterion, policy=self.policy,
                                  optimizer=_torch_optimizer(optimizer), steps=self.steps,
                                  steps_per_epoch=math.ceil(len(train_dataloader) / accumulation),
                                  ignored_layers=self.blocks.ignored_layers, num_heads=self.blocks.num_heads,
                                  **heads, **self.pruner_args)
        per_epoch = math.ceil(len(train_dataloader) / accumulation)
        epochs = (math.ceil(args.max_steps / per_epoch) if getattr(args, "max_steps", -1) and args.max_steps > 0
                  else math.ceil(float(args.num_train_epochs)))
        check_run_length(self.pruner.policy, epochs, self.policy if isinstance(self.policy, str) else None)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pruner is not None:
            events = len(self.pruner.events)
            self.pruner.step()  # gradients are still in place here (zero_grad comes after)
            if len(self.pruner.events) != events and state.is_world_process_zero:
                for line in event_lines(self.pruner, events):
                    # at WARNING: the level a Trainer shows by default (a pruning step changes the model it trains)
                    _tf.utils.logging.get_logger("transformers.trainer").warning(line)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pruner is not None:
            self.pruner.epoch_end()

    def on_save(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is None or not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"{_tf.trainer_utils.PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if checkpoint.is_dir():
            io.save(model, checkpoint / WEIGHTS_FILE)


def save_pruned(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` (the original architecture, as ``save_pretrained`` would) and
    ``earlyprune_model.safetensors`` (:func:`earlyprune.save`: the weights plus the pruned structure) to
    ``directory``; :func:`load_pruned` reads them back."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    io.save(model, directory / WEIGHTS_FILE)
    return directory


def load_pruned(directory: str | os.PathLike, model_class: Any, example_inputs: Any = None) -> nn.Module:
    """Build ``model_class`` from ``directory/config.json`` (the original architecture), replay the pruned
    structure stored with the weights on it and load them (:func:`earlyprune.load`); returns the model in eval
    mode.

    Args:
        directory: written by :func:`save_pruned`, or a checkpoint the ``Trainer`` saved in a run with the callback.
        model_class: the ``transformers`` model class trained (e.g. ``BertForSequenceClassification``).
        example_inputs: inputs to trace the model with; by default rebuilt from the shapes stored in the file.
    """
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise MissingFileError(f"{weights} not found: save a pruned model with earlyprune.integrations.transformers."
                                f"save_pruned() (a model never pruned loads with {model_class.__name__}."
                                f"from_pretrained)")
    model = model_class(model_class.config_class.from_pretrained(directory))
    io.load(weights, model, example_inputs)
    return model.eval()


# -- helpers ------------------------------------------------------------------------------------------------
def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` wrapper (its state is the inner one's)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, torch.optim.Optimizer):
        raise InvalidParameterError(f"the Trainer's optimizer is a {type(optimizer).__name__}, not a torch "
                                    f"optimizer; earlyprune can only keep torch.optim optimizers consistent")
    return inner


def _example_batch(loader: Any) -> dict[str, torch.Tensor]:
    """Two training examples through the Trainer's collator, labels dropped — without drawing from the loader,
    which would advance its sampler and change the data order."""
    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    if dataset is None or collate is None or len(dataset) == 0:
        raise InvalidParameterError("cannot build example inputs from the train dataloader: pass example_inputs= "
                                    "to EarlyPruningCallback")
    batch = collate([dataset[i] for i in range(min(2, len(dataset)))])
    inputs = {k: v for k, v in dict(batch).items() if k not in _LABEL_KEYS and torch.is_tensor(v)}
    if not inputs:
        raise InvalidParameterError("the collated batch holds no input tensors: pass example_inputs= to "
                                    "EarlyPruningCallback")
    return inputs
