"""What every importance criterion is: per-channel scores for each channel group, higher = more important.

A criterion is one small class registered by name in :data:`~earlyprune.criteria.CRITERIA`
(:mod:`.registry`). The pruner calls

* :meth:`Criterion.observe` once per training batch while it collects evidence (after ``backward`` and the
  optimizer step, so ``.grad`` is still populated for gradient criteria); criteria that run passes of their
  own (double backpropagation, say) set ``needs_batches`` and receive the batch as a
  :class:`~earlyprune.core.batch.Batch`;
* :meth:`Criterion.scores` when it needs a ranking — the mean of the observed batch scores (PaT Algorithm 1:
  "average importance over multiple minibatches"), or the instantaneous value when nothing was observed;
* :meth:`Criterion.reset` after every removal and at every epoch end.

A batch whose scores (or loss, when the caller passes it) are NaN or infinite — gradients that overflowed, a
learning rate that diverged — is left out of the mean, on the device, without a host sync per batch;
:meth:`Criterion.skipped` says afterwards which batches were left out.

A new criterion implements :meth:`compute` (and, if it needs hooks such as per-channel gates, :meth:`attach` /
:meth:`detach`). The engine never special-cases one.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..core.batch import Batch
from ..core.errors import NonFiniteError, UsageError
from ..core.validation import InvalidParameterError
from ..graph.groups import ChannelGroups


class Criterion:
    """Base class of importance criteria."""

    name: ClassVar[str] = "criterion"
    #: "magnitude" (scores from the weights) or "gradient" (scores from gradients of the loss); policies pick
    #: defaults by it (e.g. EPI's τ = 0.983 for magnitude, 0.944 for gradient criteria)
    family: ClassVar[str] = "magnitude"
    #: whether :meth:`compute` reads gradients (then observe() must run between backward and zero_grad)
    uses_gradients: ClassVar[bool] = False
    #: whether :meth:`compute` needs the batch (``Batch``) to run forward/backward passes of its own
    needs_batches: ClassVar[bool] = False

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._flags: list[tuple[Any, torch.Tensor]] = []   # (label, finite?) of the batches since the last reset
        self._skipped = 0                                  # batches already reported by skipped()

    @classmethod
    def from_spec(cls, arg: str, **kwargs: Any) -> "Criterion":
        raise InvalidParameterError(f"criterion {cls.name!r} takes no ':' argument, got {cls.name}:{arg}")

    # -- to implement ----------------------------------------------------------------------------------------
    def compute(self, groups: ChannelGroups, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        """Scores of the current model for the current batch: ``{group name: tensor of shape (width,)}``.

        ``batch`` is given when :attr:`needs_batches` is set (and may be given otherwise)."""
        raise NotImplementedError

    def finalize(self, mean: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn the mean of the per-batch :meth:`compute` values into scores (identity by default; gradient
        criteria accumulate signed values and take the absolute value here, so that noise cancels over
        batches before the magnitude is taken)."""
        return mean

    def attach(self, groups: ChannelGroups) -> None:
        """Install whatever hooks the criterion needs on ``groups.model`` (none by default)."""

    def detach(self) -> None:
        """Remove the hooks installed by :meth:`attach`."""

    # -- accumulation ----------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._sums, self._count, self._flags, self._skipped = {}, 0, [], 0

    def observe(self, groups: ChannelGroups, batch: Batch | None = None, *, loss: Any = None,
                label: Any = None) -> None:
        """Add this batch's scores to the running mean — unless they (or ``loss``, the batch's training loss, when
        given) are not finite: then the batch is left out, and :meth:`skipped` reports it under ``label``."""
        if self.needs_batches and batch is None:
            raise InvalidParameterError(f"criterion {self.name!r} scores batches itself: pass the batch "
                                        f"(pruner.step(inputs, targets) with loss_fn= at construction, or "
                                        f"prune(..., batches=, loss_fn=))")
        scores = self.compute(groups, batch)
        with torch.no_grad():
            if self._sums and any(self._sums[k].shape != v.shape for k, v in scores.items() if k in self._sums):
                self.reset()  # the model was pruned by someone else since the last reset: start over
            finite = [torch.isfinite(v).all() for v in scores.values()]
            if isinstance(loss, torch.Tensor):
                finite.append(torch.isfinite(loss.detach()).all().to(finite[0].device if finite else loss.device))
            elif loss is not None:
                finite.append(torch.tensor(math.isfinite(float(loss))))
            ok = torch.stack([f.to(finite[0].device) for f in finite]).all() if finite else None
            for name, value in scores.items():
                value = value.detach().float()  # stays on its device: no host sync per batch
                if ok is not None:
                    value = torch.where(ok.to(value.device), value, torch.zeros((), device=value.device))
                self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
        if ok is not None:
            self._flags.append((label, ok))
        self._count += 1

    def skipped(self) -> list[Any]:
        """Labels of the batches left out of the mean since the last call (or reset) for non-finite values (one
        host sync)."""
        if not self._flags:
            return []
        finite = torch.stack([ok.cpu() for _, ok in self._flags]).tolist()
        bad = [label for (label, _), good in zip(self._flags, finite) if not good]
        self._skipped += len(bad)
        self._flags = []
        return bad

    @property
    def observations(self) -> int:
        """Batches in the running mean (those left out for non-finite values not counted)."""
        pending = sum(not good for good in torch.stack([ok.cpu() for _, ok in self._flags]).tolist()) \
            if self._flags else 0
        return self._count - self._skipped - pending

    def scores(self, groups: ChannelGroups) -> dict[str, torch.Tensor]:
        """Mean score per channel over the batches observed since the last reset (or the current value, for
        criteria that can score without data)."""
        count = self.observations
        fresh = count > 0 and all(g.name in self._sums and self._sums[g.name].numel() == g.width for g in groups)
        if fresh:
            return self.finalize({name: (total / count).cpu() for name, total in self._sums.items()})
        if self._count > 0 and count == 0 and (self.needs_batches or self.uses_gradients):
            raise NonFiniteError(f"criterion {self.name!r}: every one of the {self._count} batch(es) since the model "
                                 f"last changed had a NaN or infinite loss or scores, so there is nothing to rank by; "
                                 f"lower the learning rate, or train in fp32 instead of fp16/bf16")
        if self.needs_batches or self.uses_gradients:
            raise UsageError(f"criterion {self.name!r} has observed no batch since the model last changed; "
                             f"it scores from training batches, so observe at least one first")
        return self.finalize({k: v.detach().float().cpu() for k, v in self.compute(groups).items()})

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: v.cpu() for k, v in self._sums.items()}, "count": self.observations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sums = {k: v.clone() for k, v in state["sums"].items()}
        self._count, self._flags, self._skipped = int(state["count"]), [], 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
