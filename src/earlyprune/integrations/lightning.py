"""PyTorch Lightning integration: prune early in a ``Trainer.fit`` run without touching the LightningModule.

.. code-block:: python

    from earlyprune.integrations.lightning import EarlyPruning, load_from_checkpoint

    trainer = L.Trainer(max_epochs=10, callbacks=[EarlyPruning(0.5, policy="epi")])
    trainer.fit(LitModel(), train_loader)                       # dense → pruning epoch → sparse
    trainer.fit(LitModel(), train_loader, ckpt_path="last.ckpt") # resumes, before or after the pruning event
    model = load_from_checkpoint(LitModel, "last.ckpt")         # the pruned model, same outputs

What the callback does, per hook:

* ``setup`` — for resuming (``fit(ckpt_path=…)``): makes Lightning replay the pruned structure stored in the
  checkpoint on the fresh module first, so that its own ``load_state_dict`` and the optimizer state find the
  pruned shapes (the module's ``on_load_checkpoint`` is wrapped on the instance for the restore, then restored);
* ``on_train_start`` — builds the :class:`~earlyprune.EarlyPruner` on the module (or the submodule named by
  ``module=``) and on **every** optimizer the Trainer holds (LR schedulers hold the optimizers and follow);
  example inputs are two training examples collated by the loader (without drawing from it) unless given;
* ``on_train_batch_end`` — after each optimizer step (gradients still in place): ``pruner.step()``; when it
  pruned under the ``ddp`` strategy, the ``DistributedDataParallel`` wrapper is rebuilt around the new
  parameters. Scores are averaged over the ranks, so every rank removes the same channels;
* ``on_train_epoch_end`` — ``pruner.epoch_end()``: the policy decides;
* ``on_save_checkpoint`` — stores the pruned structure (``checkpoint["earlyprune"]``) next to the state dict, and
  the pruner's schedule and policy state as the callback's state.

Mixed precision (``bf16-mixed``, ``16-mixed``) needs nothing special: parameters and optimizer state stay fp32,
autocast runs the forward pass, and the gradient scaler holds the optimizer, not its parameters.

Loading a pruned checkpoint outside ``fit``: :func:`load_from_checkpoint` (works for any LightningModule class),
or add :class:`PrunedCheckpointMixin` to your module's bases so that ``LitModel.load_from_checkpoint(path)``
itself replays the structure before the state dict is loaded.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .. import io
from ..core.validation import Callable_, InstanceOf, InvalidParameterError, checked, rule
from ..criteria import Criterion
from ..policies import Policy
from ..pruner import EarlyPruner
from ._optional import require
from .announce import event_lines
from .run_length import check_run_length

L = require("lightning.pytorch", "lightning", "earlyprune.integrations.lightning")

#: the callback's own arguments (the pruner's are checked by building a pruner on a stand-in, see _validate)
CALLBACK_RULES = {
    "module": rule(InstanceOf(str, "the attribute path of a submodule (e.g. 'net')"), None,
                   hint="None prunes the LightningModule itself"),
    "ignored_layers": rule(Callable_("a function of the module returning its layers to keep, e.g. "
                                     "lambda m: [m.net.fc]"), None,
                           hint="the layers do not exist when the callback is created"),
}

#: key of the checkpoint entry holding the pruned structure
CHECKPOINT_KEY = "earlyprune"


class EarlyPruning(L.Callback):
    """Prune whole channels early in training, inside ``lightning.pytorch.Trainer.fit``.

    Args:
        ratio: fraction of the channels (or of ``target``) to remove, in (0, 1).
        criterion, policy, steps, target, min_channels, round_to: as for :class:`~earlyprune.EarlyPruner`.
        module: attribute path of the submodule to prune (e.g. ``"net"``); None prunes the LightningModule
            itself, which then needs a ``forward`` that takes the example inputs.
        example_inputs: a batch to trace the model with; by default the inputs (first element) of two training
            examples, collated by the train loader's own ``collate_fn``.
        ignored_layers: a callable ``module → list of layers`` to keep (layers do not exist before the module is
            built, so they are named through a function), or None.
        loss_fn: for criteria with passes of their own (``snip``, ``crop``, ``grasp``): ``loss_fn(outputs,
            targets)``; the callback then calls ``pruner.step(inputs, targets)`` with the batch's first two
            elements.
        **pruner_args: further :class:`~earlyprune.EarlyPruner` arguments (``record_signals``, ``num_heads``…).

    ``callback.pruner`` holds the pruner once training has started.
    """

    @checked(CALLBACK_RULES)
    def __init__(self, ratio: float = 0.5, *, criterion: str | Criterion = "magnitude",
                 policy: str | Policy = "epoch:1", steps: int = 8, target: str = "channels", min_channels: int = 1,
                 round_to: int | str = 1, module: str | None = None, example_inputs: Any = None,
                 ignored_layers: Any = None, loss_fn: Any = None, **pruner_args: Any) -> None:
        clash = sorted({"optimizer", "steps_per_epoch"} & set(pruner_args))
        if clash:
            raise InvalidParameterError(f"EarlyPruning passes the Trainer's optimizers and batches per epoch itself: "
                                        f"drop {clash[0]}=")
        self.ratio = ratio
        self.module = module
        self.example_inputs = example_inputs
        self.ignored_layers = ignored_layers
        self.loss_fn = loss_fn
        self.pruner_args = dict(criterion=criterion, policy=policy, steps=steps, target=target,
                                min_channels=min_channels, round_to=round_to, loss_fn=loss_fn, **pruner_args)
        # catch bad arguments now, not after the first epoch: build a pruner on a one-layer stand-in
        _validate(ratio, self.pruner_args)
        self.pruner: EarlyPruner | None = None
        self._pending: dict[str, Any] | None = None
        self._global_step = 0

    # -- resuming -------------------------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.pruner is not None or "on_load_checkpoint" in vars(pl_module):
            return
        # Lightning restores a checkpoint after setup: module hook on_load_checkpoint, then load_state_dict, then
        # the callbacks. The structure must be replayed before load_state_dict, so for this fit the module's hook
        # is wrapped (on the instance only; removed when training starts)
        original = pl_module.on_load_checkpoint

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
            replay_checkpoint(pl_module, checkpoint)
            original(checkpoint)

        pl_module.on_load_checkpoint = on_load_checkpoint

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        vars(pl_module).pop("on_load_checkpoint", None)

    def state_dict(self) -> dict[str, Any]:
        if self.pruner is None:
            return dict(self._pending or {})
        return {"pruner": self.pruner.state_dict(), "module": self.module}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict) if state_dict else None

    # -- training -------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        vars(pl_module).pop("on_load_checkpoint", None)
        if self.pruner is not None:
            return
        target = _target(pl_module, self.module)
        inputs = self.example_inputs
        if inputs is None:
            inputs = _example_inputs(trainer.train_dataloader)
        inputs = _to(inputs, next(target.parameters()).device)
        ignored = list(self.ignored_layers(pl_module)) if self.ignored_layers is not None else None
        batches = trainer.num_training_batches  # inf for an iterable dataset: learned from the first epoch
        steps_per_epoch = (max(int(batches) // max(trainer.accumulate_grad_batches, 1), 1)
                           if math.isfinite(batches) else None)
        self.pruner = EarlyPruner(target, inputs, self.ratio, optimizer=list(trainer.optimizers),
                                  steps_per_epoch=steps_per_epoch, ignored_layers=ignored, **self.pruner_args)
        max_epochs = trainer.max_epochs
        if isinstance(max_epochs, int) and max_epochs > 0 and not self._pending:   # -1 / None: no limit
            policy = self.pruner_args.get("policy")
            check_run_length(self.pruner.policy, max_epochs, policy if isinstance(policy, str) else None)
        if self._pending and self._pending.get("pruner"):
            # a checkpoint written at validation end, before this callback's epoch end, needs nothing more:
            # Lightning resumes such a run at that epoch's end and calls on_train_epoch_end then
            self.pruner.load_state_dict(self._pending["pruner"])
        self._pending = None
        self._global_step = trainer.global_step

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.pruner is None or trainer.global_step == self._global_step:
            return  # accumulating gradients: no optimizer step on this batch
        self._global_step = trainer.global_step
        if self.pruner.criterion.needs_batches:
            inputs, targets = _inputs_targets(batch)
            self._finish(lambda: self.pruner.step(inputs, targets), trainer, pl_module)
        else:
            self._finish(self.pruner.step, trainer, pl_module)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.pruner is not None:
            self._finish(self.pruner.epoch_end, trainer, pl_module)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"module": self.module or "",
                                      "structure": io.structure_json(_target(pl_module, self.module))}

    # -- internals ------------------------------------------------------------------------------------------
    def _finish(self, call: Any, trainer: Any, pl_module: Any) -> bool:
        """Run a pruner call; if it removed channels, give the Trainer's DDP wrapper the new parameters."""
        events = len(self.pruner.events)
        call()
        pruned = len(self.pruner.events) != events
        if pruned:
            _rewrap(trainer, pl_module)
            if trainer.is_global_zero:   # Lightning's rank-zero logger
                for line in event_lines(self.pruner, events):
                    _log().info(line)
        return pruned


class PrunedCheckpointMixin:
    """Add to a LightningModule's bases (``class LitModel(PrunedCheckpointMixin, L.LightningModule)``) so that
    ``LitModel.load_from_checkpoint(path)`` replays the pruned structure stored by :class:`EarlyPruning` before
    Lightning loads the state dict."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        replay_checkpoint(self, checkpoint)
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]


def load_from_checkpoint(cls: type, checkpoint_path: Any, **kwargs: Any) -> Any:
    """``cls.load_from_checkpoint(checkpoint_path, **kwargs)`` for a checkpoint of a pruned model: the pruned
    structure stored by :class:`EarlyPruning` is replayed on the freshly built module before its state dict is
    loaded. The returned object is an instance of ``cls`` itself."""
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise InvalidParameterError(f"cls must be a LightningModule class, got {cls!r}")
    if issubclass(cls, PrunedCheckpointMixin):
        return cls.load_from_checkpoint(checkpoint_path, **kwargs)
    loader = type(cls.__name__, (PrunedCheckpointMixin, cls), {"__module__": cls.__module__,
                                                                 "__qualname__": cls.__qualname__})
    model = loader.load_from_checkpoint(checkpoint_path, **kwargs)
    model.__class__ = cls  # the helper subclass only served the loading
    return model


def replay_checkpoint(pl_module: nn.Module, checkpoint: dict[str, Any]) -> bool:
    """Prune ``pl_module`` (freshly built) to the structure stored in a checkpoint of :class:`EarlyPruning`;
    returns False when the checkpoint holds none (a run that never used the callback)."""
    entry = checkpoint.get(CHECKPOINT_KEY)
    if not entry:
        return False
    target = _target(pl_module, entry.get("module") or None)
    doc = entry["structure"]
    if io.structure.signature(target) == doc["final"] and doc["history"]:
        return True  # already in the pruned shape (resumed twice in one process)
    io.replay(target, doc, source="the checkpoint's earlyprune structure")
    return True


# -- helpers ----------------------------------------------------------------------------------------------
def _validate(ratio: float, pruner_args: dict[str, Any]) -> None:
    if not all(isinstance(pruner_args.get(k), str) for k in ("criterion", "policy")):
        return  # objects carry state: never hand them to a stand-in pruner
    probe = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    args = {k: v for k, v in pruner_args.items() if k not in ("num_heads", "head_ratio")}
    args["round_to"] = 1 if args.get("round_to") == "auto" else args.get("round_to", 1)
    args["min_channels"] = 1
    EarlyPruner(probe, torch.zeros(1, 2), ratio, optimizer=None, steps_per_epoch=max(args.get("steps", 1), 1),
                **args)


def _target(pl_module: nn.Module, module: str | None) -> nn.Module:
    if not module:
        return pl_module
    try:
        return pl_module.get_submodule(module)
    except AttributeError:
        raise InvalidParameterError(f"EarlyPruning(module={module!r}): {type(pl_module).__name__} has no such "
                                    f"submodule; submodules: "
                                    f"{', '.join(n for n, _ in pl_module.named_children())}") from None


def _example_inputs(loader: Any) -> Any:
    """The inputs of two training examples through the loader's collate_fn, without drawing from the loader
    (which would move its sampler and change the data order)."""
    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    try:
        batch = collate([dataset[i] for i in range(min(2, len(dataset)))])
    except Exception as exc:  # noqa: BLE001 - any failure: the user must say what the inputs are
        raise InvalidParameterError(f"cannot build example inputs from the train dataloader ({type(exc).__name__}: "
                                    f"{exc}); pass EarlyPruning(example_inputs=a_batch_of_inputs)") from exc
    inputs, _ = _inputs_targets(batch)
    return inputs


def _inputs_targets(batch: Any) -> tuple[Any, Any]:
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and torch.is_tensor(batch[0]):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise InvalidParameterError(f"cannot tell the inputs in a batch of type {type(batch).__name__}: pass "
                                f"EarlyPruning(example_inputs=…) (and a criterion that needs no batch)")


def _to(inputs: Any, device: torch.device) -> Any:
    if torch.is_tensor(inputs):
        return inputs.to(device)
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to(x, device) for x in inputs)
    if isinstance(inputs, dict):
        return {k: _to(v, device) for k, v in inputs.items()}
    return inputs


def _log() -> Any:
    import logging
    return logging.getLogger("lightning.pytorch.callbacks.earlyprune")


def _rewrap(trainer: Any, pl_module: nn.Module) -> None:
    """Give the strategy a new DistributedDataParallel wrapper: the old one holds the replaced parameters."""
    strategy = trainer.strategy
    wrapper = getattr(strategy, "model", None)
    if not isinstance(wrapper, nn.parallel.DistributedDataParallel):
        return
    setup = getattr(strategy, "_setup_model", None)
    strategy.model = setup(pl_module) if setup is not None else nn.parallel.DistributedDataParallel(pl_module)

