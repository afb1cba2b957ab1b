"""The pruning engine: physical removal of a plan, with optimizer-state surgery.

The engine knows nothing about criteria or policies: it takes a :class:`~earlyprune.planning.selection.Plan` (channel
indices per group) and removes them through torch-pruning's groups, in place, as often as asked (PaT's
iterative pruning calls it S times within one epoch). Every removed group is one torch-pruning ``Group.prune()``
wrapped in a :class:`~earlyprune.surgery.optimizer_state.StateSurgery`.

A step is all or nothing: if a removal fails, or the pruned model no longer runs on the example inputs (a
forward that hard-codes a width), the model, the optimizer and torch-pruning's graph are restored to their state
before the step (:class:`~earlyprune.surgery.rollback.Snapshot`) before the error is raised.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..core.batch import call_model
from ..core.errors import PrunedModelBrokenError, UsageError
from ..core.validation import InvalidParameterError
from ..graph.groups import ChannelGroups
from ..graph.masks import masked_counts
from ..graph.plan import Plan
from .optimizer_state import StateSurgery
from .rollback import Snapshot


def check_optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """``optimizer`` as a list (None → empty), refusing anything that is not a torch optimizer."""
    if optimizer is None:
        return []
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Optimizer):
            raise InvalidParameterError(f"optimizer must be a torch.optim.Optimizer (or a list of them), got "
                                        f"{type(opt).__name__}")
    return optimizers


class PruningEngine:
    """Removes planned channels from ``groups.model`` and keeps ``optimizer`` (if any) consistent."""

    def __init__(self, groups: ChannelGroups) -> None:
        self.groups = groups

    def apply(self, plan: Plan, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None
              ) -> dict[str, list[int]]:
        """Remove ``plan.remove[name]`` channels from each named group; returns what was removed.

        ``optimizer`` may be several optimizers (a Lightning module with more than one): each one follows.

        The plan's indices refer to the current numbering of each group (as :func:`~earlyprune.planning.selection.select`
        produced them for the current model). Afterwards the groups are refreshed (widths, costs).
        """
        optimizers = check_optimizers(optimizer)
        if plan.remove and masked_counts(self.groups.model):
            raise UsageError("channels cannot be removed from a model with weight masks (torch-pruning cannot cut a "
                             "parametrized weight): remove channels first, then mask weights (granularity='both' "
                             "does), or take the masks off with earlyprune.unstructured.MaskedWeights(model)"
                             ".remove()")
        unknown = [n for n in plan.remove if n not in self.groups.names]
        if unknown:
            raise InvalidParameterError(f"plan names groups this model does not have: {unknown}; was it made for "
                                        f"another model?")
        for name, idxs in plan.remove.items():
            width = self.groups[name].width
            if idxs and (len(set(idxs)) >= width or min(idxs) < 0 or max(idxs) >= width):
                raise InvalidParameterError(f"cannot remove {len(set(idxs))} channels {idxs[:5]}… from group "
                                            f"{name!r} of width {width}; plans must leave channels and index the "
                                            f"current width")
        if not any(plan.remove.values()):
            return {}
        snapshot = Snapshot(self.groups.model, optimizers, self.groups.graph)
        try:
            surgeries = [StateSurgery(opt) for opt in optimizers] or [StateSurgery(None)]
            removed: dict[str, list[int]] = {}
            for name, idxs in plan.remove.items():
                if not idxs:
                    continue
                tp_group = self.groups.tp_group(self.groups[name], sorted(set(idxs)))
                pending = [surgery.prepare(tp_group, self._locate) for surgery in surgeries]
                tp_group.prune()
                for p in pending:
                    p.finish()
                removed[name] = sorted(set(idxs))
            self.groups.refresh()
            self._check_runs(removed)
            self.groups.record.sync()  # the structure record holds the graph weakly: keep its history
        except BaseException as exc:  # KeyboardInterrupt too: never leave a half-pruned model behind
            snapshot.restore()
            self.groups.refresh()
            if isinstance(exc, _ModelBroken):
                raise PrunedModelBrokenError(str(exc)) from exc.__cause__
            if hasattr(exc, "add_note"):
                exc.add_note("earlyprune: the model and optimizer were restored to their state before this pruning "
                             "step")
            raise
        return removed

    def _check_runs(self, removed: dict[str, list[int]]) -> None:
        """One forward on the example inputs: a model whose code hard-codes a width fails here, with the cause
        named, instead of later inside the user's loop."""
        model = self.groups.model
        was_training = model.training
        try:
            with torch.no_grad():
                call_model(model.eval(), self.groups.example_inputs)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            names = list(removed)
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise _ModelBroken(  # internal: caught in apply(), which rolls back and raises PrunedModelBrokenError
                f"after pruning groups {shown} the model no longer runs on example_inputs "
                f"({type(exc).__name__}: {exc}). Its forward probably uses a width fixed at construction (e.g. "
                f"torchvision ViT's hidden_dim, an attention reshape with a hard-coded head size): keep those "
                f"channels with ignored_layers=[<their producing layer>]. Nothing was pruned: the model and the "
                f"optimizer are as they were before this step"
            ) from exc
        finally:
            model.train(was_training)

    def _locate(self, target: Any, param: nn.Parameter) -> Callable[[], nn.Parameter]:
        if isinstance(target, nn.Parameter):  # a bare parameter: torch-pruning re-registers it under its name
            # torch-pruning internal: the graph's names of bare parameters (tests/test_torch_pruning_internals.py)
            name = self.groups.graph._param_to_name[target]
            model = self.groups.model
            return lambda: model.get_parameter(name)
        name = next(n for n, q in target.named_parameters() if q is param)
        return lambda: target.get_parameter(name)


class _ModelBroken(RuntimeError):
    """The pruned model no longer runs (raised inside :meth:`PruningEngine.apply`, which rolls back first)."""
