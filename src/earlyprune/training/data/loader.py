"""Batches from uint8 tensors: shuffled, augmented and normalised in a few vectorised ops per batch.

No worker processes and no per-image Python: the whole dataset is one uint8 tensor (on the training device
when that is a GPU), a batch is one index, and the standard CIFAR augmentation — zero-pad 4, random 32×32 crop,
random horizontal flip — is two ``gather`` calls and one ``where`` on the batch. The random draws come from the
loader's own CPU generator, so the order and augmentation of every epoch are reproducible and resumable
(:meth:`state_dict`) on any device.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from ...core.validation import InvalidParameterError
from .base import DataError

PAD = 4


def crop_flip_draws(b: int, gen: torch.Generator, pad: int = PAD) -> tuple[torch.Tensor, ...]:
    """The random draws of :func:`random_crop_flip` for ``b`` images: row and column offsets, flips."""
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    return oy, ox, flip


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = PAD,
                     draws: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) by ``pad`` zeros, crop a random H×W window per image, flip half horizontally
    (``draws``: given by :func:`crop_flip_draws`, else drawn from ``gen``)."""
    b, c, h, w = x.shape
    oy, ox, flip = (t.to(x.device) for t in (draws if draws is not None else crop_flip_draws(b, gen, pad)))
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    x = padded.gather(2, rows)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flipped window reads its columns backwards
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class BatchLoader:
    """Iterate ``(inputs, targets)`` batches of normalised float images.

    Args:
        x: uint8 images (N, C, H, W), on the device the batches should be on.
        y: int64 labels (N,), same device.
        batch_size: images per batch; a final batch of a single image is dropped (BatchNorm cannot train on it).
        mean, std: per-channel normalisation, as fractions of 255.
        augment: apply pad-crop-flip to training batches.
        shuffle: a new random order every epoch.
        seed: seeds the loader's generator (order and augmentation).
        channels_last: return batches in channels_last memory format.
        rank, world_size: data-parallel sharding (torchrun). Every rank draws the same permutation and the same
            augmentation for each *global* batch of ``batch_size × world_size`` images and keeps its own slice, so
            the ranks together see exactly what one process with the global batch would see, and every rank
            has the same number of batches (a global tail too small to give every rank 2 images is dropped).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], *, augment: bool = False, shuffle: bool = False, seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if batch_size < 1:
            raise InvalidParameterError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise InvalidParameterError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.rank, self.world_size = rank, world_size
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.augment, self.shuffle = augment, shuffle
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        c = x.shape[1]
        if len(mean) != c or len(std) != c:
            raise DataError(f"mean/std have {len(mean)}/{len(std)} values for {c}-channel images")
        # (x/255 - mean)/std as one subtract and one multiply on the raw 0-255 values
        self._shift = (torch.tensor(mean) * 255).view(1, c, 1, 1).to(x.device)
        self._scale = (1.0 / (torch.tensor(std) * 255)).view(1, c, 1, 1).to(x.device)
        n, g = len(y), batch_size * world_size
        if world_size == 1:  # a single-image tail is dropped (BatchNorm cannot train on it)
            self._batches = n // batch_size + (1 if n % batch_size > 1 or (n < batch_size) else 0)
        else:  # every rank needs 2 images of the tail, or all would have to skip it together
            self._batches = n // g + (1 if n % g >= 2 * world_size else 0)

    def __len__(self) -> int:
        return self._batches

    @property
    def global_batch_size(self) -> int:
        """Images per optimizer step over all ranks: ``batch_size × world_size``."""
        return self.batch_size * self.world_size

    @property
    def num_images(self) -> int:
        """Images per epoch over all ranks (a dropped tail excluded)."""
        return min(len(self.y), self._batches * self.global_batch_size)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        out = x.float().sub_(self._shift).mul_(self._scale)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[: self.num_images].to(self.x.device)
        for idx in order.split(self.global_batch_size):
            draws = crop_flip_draws(len(idx), self.generator) if self.augment else None
            if self.world_size > 1:  # this rank's slice of the global batch, and of its draws
                part = torch.arange(len(idx)).tensor_split(self.world_size)[self.rank]
                idx = idx[part.to(idx.device)]
                draws = tuple(d[part] for d in draws) if draws is not None else None
            x = self.x[idx]
            if self.augment:
                x = random_crop_flip(x, self.generator, draws=draws)
            yield self.normalise(x), self.y[idx]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
