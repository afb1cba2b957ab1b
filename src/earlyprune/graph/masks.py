"""Binary masks on single weights, through PyTorch's own ``torch.nn.utils.parametrize``.

Every prunable weight tensor gets a :class:`WeightMask` parametrization: ``module.weight`` becomes
``original · mask``, computed on access from the original :class:`~torch.nn.Parameter` — which the optimizer
keeps holding: parametrize re-registers *the same* Parameter object as
``module.parametrizations.weight.original``. The mask is a buffer of 0/1 in the weight's dtype, so it follows
``model.to(dtype / device)``; a multiplication by it costs ~6× less than ``torch.where`` on a boolean mask on this
CPU (``benchmarks/unstructured_overhead.py``).

Why ``parametrize`` and not ``torch.nn.utils.prune`` (both keep the Parameter object):

* the effective weight is computed whenever it is read. ``prune`` recomputes ``weight`` in a forward pre-hook, so
  between an optimizer step and the next forward ``module.weight`` is stale — and the criteria read it exactly
  there (``pruner.step()`` runs after ``optimizer.step()``);
* ``right_inverse``: assigning ``module.weight = w`` (rewinding a lottery ticket) writes through the mask; under
  ``prune`` an assignment is silently overwritten by the next forward;
* it works on any tensor attribute, including ``nn.LSTM``'s ``weight_hh_l0`` and ``nn.MultiheadAttention``'s
  ``in_proj_weight`` (tested), and can be removed leaving plain parameters (:meth:`MaskedWeights.remove`).

Pruned weights stay **exactly zero** through training: the effective weight is ``original · 0``; when a mask is
applied, :meth:`MaskedWeights.apply` also zeroes the raw entries and every per-parameter optimizer state tensor
shaped like the weight (SGD momentum, Adam moments, RMSprop / Adagrad accumulators), so with the zero gradient
the mask passes back (``∂(θ·m)/∂θ = m``) SGD with momentum, Nesterov and weight decay, Adam, AdamW (decoupled
decay), RMSprop and Adagrad leave the raw entries at zero as well (tested over many steps).

This module is a leaf of ``graph/``: it imports only torch and ``core/`` (``metrics`` and ``structure`` read masks
through it).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.errors import UnknownNameError
from ..core.validation import MODEL, InvalidParameterError

#: modules whose ``weight`` is prunable at weight level
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                 nn.Linear)


class WeightMask(nn.Module):
    """The parametrization ``W = W_orig · mask``; ``mask`` is a buffer of 1 (kept) and 0 (pruned) in the weight's
    dtype."""

    def __init__(self, keep: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.register_buffer("mask", keep.detach().to(dtype=dtype).clone())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original * self.mask

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        """``module.weight = value`` stores ``value`` with the pruned entries zeroed."""
        return value * self.mask

    @property
    def keep(self) -> torch.Tensor:
        """The mask as booleans (True = kept)."""
        return self.mask != 0

    @property
    def kept(self) -> int:
        return int(torch.count_nonzero(self.mask))

    def narrow_(self, keep: torch.Tensor) -> None:
        """Prune the entries ``keep`` marks False as well."""
        self.mask.mul_(keep.to(device=self.mask.device, dtype=self.mask.dtype))


def mask_of(module: nn.Module, attr: str) -> WeightMask | None:
    """The :class:`WeightMask` on ``module.<attr>``, or None."""
    if not parametrize.is_parametrized(module, attr):
        return None
    for p in module.parametrizations[attr]:  # type: ignore[index]
        if isinstance(p, WeightMask):
            return p
    return None


def plain_name(name: str) -> str:
    """``"conv.parametrizations.weight.original"`` → ``"conv.weight"``: the name a tensor has without
    parametrizations (other names are returned unchanged)."""
    if ".parametrizations." not in f".{name}":
        return name
    head, _, rest = f".{name}".partition(".parametrizations.")
    attr = rest.split(".", 1)[0]
    return f"{head}.{attr}".lstrip(".")


def plain_tensors(model: nn.Module, buffers: bool = True) -> list[tuple[str, torch.Tensor]]:
    """``(plain name, tensor)`` in the order of the unmasked model's state dict: per module its parameters (a
    masked weight first, where ``weight`` stands in every PyTorch layer), its persistent buffers, then its
    children; the raw original for a masked tensor, no mask buffers."""
    out: list[tuple[str, torch.Tensor]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        masked = module.parametrizations if parametrize.is_parametrized(module) else {}  # type: ignore[attr-defined]
        out.extend((prefix + attr, masked[attr].original) for attr in masked)  # type: ignore[index]
        out.extend((prefix + n, p) for n, p in module._parameters.items() if p is not None)
        if buffers:
            out.extend((prefix + n, b) for n, b in module._buffers.items()
                       if b is not None and n not in module._non_persistent_buffers_set)
        for n, child in module._modules.items():
            if child is not None and not (masked and n == "parametrizations"):
                visit(child, f"{prefix}{n}.")

    visit(model, "")
    return out


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as the model would have it without parametrizations: masked tensors under their own
    names (``conv.weight``) and in their own place, holding the *effective* (masked) values; mask buffers left
    out."""
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return dict(model.state_dict())
    values = {}
    for name, tensor in plain_tensors(model, buffers=True):
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if parametrize.is_parametrized(module, attr):
            tensor = getattr(module, attr)
        values[name] = tensor.detach()
    return values


def parameters_in_plain_order(model: nn.Module) -> list[nn.Parameter]:
    """The model's parameters in the order the unmasked model lists them.

    Parametrize moves a masked weight behind its module's other parameters (``conv.bias`` before
    ``conv.parametrizations.weight.original``), which changes the order of ``model.parameters()`` and so the
    meaning of an optimizer state dict saved before the masks existed. Build optimizers from this list to keep
    it (the trainer does).
    """
    seen: set[int] = set()
    out = []
    for _, p in plain_tensors(model, buffers=False):
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)  # type: ignore[arg-type]
    return out


@dataclass(eq=False)
class WeightTensor:
    """One prunable weight tensor: ``module.<attr>``, known to the rest of the package as ``name``."""

    name: str
    module: nn.Module
    attr: str
    #: entries of the tensor (the criterion base class calls a unit's size its ``width``)
    width: int

    @property
    def mask(self) -> torch.Tensor | None:
        """The mask as booleans (True = kept), or None while no mask is attached."""
        m = mask_of(self.module, self.attr)
        return None if m is None else m.keep

    @property
    def value(self) -> torch.Tensor:
        """The effective (masked) weight."""
        return getattr(self.module, self.attr)

    @property
    def parameter(self) -> nn.Parameter:
        """The Parameter the optimizer holds (the raw original once a mask is attached)."""
        if parametrize.is_parametrized(self.module, self.attr):
            return self.module.parametrizations[self.attr].original  # type: ignore[index,return-value]
        return getattr(self.module, self.attr)

    @property
    def shape(self) -> torch.Size:
        return self.parameter.shape

    @property
    def kept(self) -> int:
        m = mask_of(self.module, self.attr)
        return self.width if m is None else m.kept


def prunable_weights(model: nn.Module, ignored_layers: Iterable[nn.Module] = ()) -> list[tuple[str, nn.Module, str]]:
    """``(name, module, attr)`` of every weight tensor that unstructured pruning masks.

    Convolution (also transposed) and linear weights, the weight matrices of ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``
    and ``nn.MultiheadAttention``'s input projection (its output projection is a linear layer). Not masked: biases,
    normalisation layers, embeddings, modules in ``ignored_layers`` (and their submodules), and tensors shared by
    several modules (tied weights: masking one use would untie them; a warning names them).
    """
    ignored = {id(m) for layer in ignored_layers for m in layer.modules()}
    found: list[tuple[str, nn.Module, str]] = []
    for module_name, module in model.named_modules():
        if id(module) in ignored or isinstance(module, parametrize.ParametrizationList):
            continue
        attrs: list[str] = []
        if isinstance(module, WEIGHT_LAYERS):
            attrs = ["weight"]
        elif isinstance(module, nn.RNNBase):
            attrs = [n for n in module._flat_weights_names if n.startswith("weight_")]
        elif isinstance(module, nn.MultiheadAttention):
            attrs = (["in_proj_weight"] if module.in_proj_weight is not None or mask_of(module, "in_proj_weight")
                     else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
        for attr in attrs:
            if getattr(module, attr, None) is None:
                continue
            found.append((f"{module_name}.{attr}".lstrip("."), module, attr))
    # a Parameter reachable from two places (tied weights) cannot be masked in one of them only
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    shared = sorted(name for name, module, attr in found if uses.get(id(_raw(module, attr)), 0) > 1)
    if shared:
        warnings.warn(f"weights shared by several modules are not masked (tied weights): {shared[:5]}",
                      stacklevel=3)
    return [item for item in found if item[0] not in shared]


def _raw(module: nn.Module, attr: str) -> torch.Tensor:
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original  # type: ignore[index,return-value]
    return getattr(module, attr)


class MaskedWeights(Sequence[WeightTensor]):
    """The prunable weight tensors of a model and their masks — the weight-level counterpart of
    :class:`~earlyprune.graph.groups.ChannelGroups`: one unit per tensor, ``widths()`` its kept entries.

    Nothing is attached until :meth:`apply` is first called, so dense epochs train without any overhead. Masks
    already on the model (:func:`earlyprune.load` restores them) are adopted.

    Args:
        model: the network.
        ignored_layers: modules whose weights are never masked.
        baseline: the number of prunable weights that ratios refer to; by default the current number of entries
            (pass the dense model's count when channels were removed first).
    """

    def __init__(self, model: nn.Module, ignored_layers: Iterable[nn.Module] | None = None,
                 baseline: int | None = None) -> None:
        MODEL.check("model", model)
        ignored = list(ignored_layers or [])
        known = set(model.modules())
        for layer in ignored:
            if not isinstance(layer, nn.Module) or layer not in known:
                raise InvalidParameterError(f"ignored_layers must hold submodules of the model (e.g. [model.fc]); "
                                            f"got {layer!r}")
        self.model = model
        self.ignored_layers = tuple(ignored)
        self._tensors = [WeightTensor(name, module, attr, _raw(module, attr).numel())
                         for name, module, attr in prunable_weights(model, ignored)]
        if not self._tensors:
            raise InvalidParameterError("the model has no prunable weights (convolution, linear, RNN or attention "
                                        "weights outside ignored_layers)")
        self._by_name = {t.name: t for t in self._tensors}
        total = sum(t.width for t in self._tensors)
        if baseline is not None and (isinstance(baseline, bool) or not isinstance(baseline, int) or baseline < total):
            raise InvalidParameterError(f"baseline must be a whole number ≥ the current {total} prunable weights, got "
                                        f"{baseline!r}")
        self.baseline = baseline if baseline is not None else total

    # -- Sequence protocol -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tensors)

    def __iter__(self) -> Iterator[WeightTensor]:
        return iter(self._tensors)

    def __getitem__(self, key: int | str) -> WeightTensor:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise UnknownNameError(f"no prunable weight named {key!r}; known: "
                                       f"{', '.join(list(self._by_name)[:8])}…") from None
        return self._tensors[key]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tensors]

    def widths(self) -> list[int]:
        """Kept weights per tensor (the weight-level structure vector), in tensor order."""
        return [t.kept for t in self._tensors]

    def kept(self) -> int:
        return sum(self.widths())

    def sparsity(self) -> float:
        """Fraction of the ``baseline`` prunable weights that are masked or were removed with channels."""
        return 1.0 - self.kept() / self.baseline

    def totals(self) -> dict[str, float]:
        return {"weights": float(self.kept()), "weight_sparsity": self.sparsity()}

    @property
    def attached(self) -> bool:
        return any(t.mask is not None for t in self._tensors)

    def masks(self) -> dict[str, torch.Tensor]:
        """``{name: bool mask}`` of the tensors that have one."""
        return {t.name: t.mask.clone() for t in self._tensors if t.mask is not None}  # type: ignore[union-attr]

    # -- changing the masks -----------------------------------------------------------------------------------
    def apply(self, keep: Mapping[str, torch.Tensor],
              optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None) -> int:
        """Mask the entries that ``keep[name]`` marks False (a mask only ever loses entries: pruned weights stay
        pruned); returns how many entries were newly pruned.

        The raw parameter's pruned entries and every optimizer state tensor shaped like it (of ``optimizer``, or of
        each of a list of them) are zeroed, so a standard optimizer leaves them at zero (see the module docstring).
        """
        optimizers = (list(optimizer) if isinstance(optimizer, (list, tuple)) else
                      [] if optimizer is None else [optimizer])
        for opt in optimizers:
            if not isinstance(opt, torch.optim.Optimizer):
                raise InvalidParameterError(f"optimizer must be a torch.optim.Optimizer (or a list of them) or None, "
                                            f"got {type(opt).__name__}")
        unknown = [n for n in keep if n not in self._by_name]
        if unknown:
            raise InvalidParameterError(f"masks name weights this model does not prune: {unknown[:5]}")
        pruned = 0
        for name, new in keep.items():
            t = self._by_name[name]
            new = torch.as_tensor(new)
            if new.shape != t.shape:
                raise InvalidParameterError(f"mask for {name!r} has shape {tuple(new.shape)}, the weight "
                                            f"{tuple(t.shape)}")
            param = t.parameter
            new = new.to(device=param.device, dtype=torch.bool)
            existing = mask_of(t.module, t.attr)
            if existing is not None:
                before = existing.kept
                existing.narrow_(new)
                new = existing.keep
                pruned += before - existing.kept
            else:
                pruned += t.width - int(torch.count_nonzero(new))
                dtype = param.dtype if param.is_floating_point() else torch.float32
                parametrize.register_parametrization(t.module, t.attr, WeightMask(new, dtype))
            zero_state_(param, new, optimizers)
        return pruned

    def remove(self) -> None:
        """Take the masks off, leaving plain parameters that hold the masked values (pruned entries zero; the
        Parameter objects are the same, so an optimizer keeps working)."""
        for t in self._tensors:
            if mask_of(t.module, t.attr) is not None:
                parametrize.remove_parametrizations(t.module, t.attr, leave_parametrized=True)

    @contextmanager
    def lifted(self) -> Iterator[None]:
        """Take the masks off for the duration (plain parameters holding the masked values), then put the same
        masks back on the same Parameter objects — for code that must see plain tensors, such as tracing the
        model's channel dependencies."""
        saved = self.masks()
        self.remove()
        try:
            yield
        finally:
            self.apply(saved)

    def __repr__(self) -> str:
        return f"MaskedWeights({len(self)} tensors, {self.kept():,} of {self.baseline:,} weights kept)"


def zero_state_(param: nn.Parameter, keep: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer] = ()) -> None:
    """Zero ``param``'s entries outside ``keep``, its gradient there, and every optimizer state tensor of its
    shape (momentum, Adam moments, …)."""
    with torch.no_grad():
        drop = ~keep.to(param.device)
        param.masked_fill_(drop, 0)
        if param.grad is not None:
            param.grad.masked_fill_(drop, 0)
        for optimizer in optimizers:
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.masked_fill_(drop.to(value.device), 0)


def attach_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> MaskedWeights:
    """Attach ``masks`` (``{name: bool tensor}``, names as :class:`MaskedWeights` gives them) to ``model``."""
    weights = MaskedWeights(model)
    weights.apply(masks)
    return weights


@contextmanager
def masks_lifted(model: nn.Module) -> Iterator[None]:
    """:meth:`MaskedWeights.lifted` for whatever masks ``model`` carries (nothing happens without masks)."""
    if not masked_counts(model):
        yield
        return
    with MaskedWeights(model).lifted():
        yield


def masked_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{plain name: (kept, entries)}`` of every masked tensor of ``model``."""
    out = {}
    for module_name, module in model.named_modules():
        for attr in list(getattr(module, "parametrizations", {}) or {}):
            m = mask_of(module, attr)
            if m is not None:
                out[f"{module_name}.{attr}".lstrip(".")] = (m.kept, m.mask.numel())
    return out


__all__ = ["MaskedWeights", "WEIGHT_LAYERS", "WeightMask", "WeightTensor", "attach_masks", "mask_of", "masked_counts",
           "masks_lifted", "parameters_in_plain_order", "plain_name", "plain_state_dict", "plain_tensors",
           "prunable_weights", "zero_state_"]
