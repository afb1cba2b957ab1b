"""An image-classification dataset held as uint8 tensors, the one shape every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...core.errors import EarlyPruneError


class DataError(EarlyPruneError, ValueError):
    """A dataset is missing, truncated, corrupt or laid out differently than expected."""


@dataclass
class ImageData:
    """Train and test images as uint8 ``(N, C, H, W)`` tensors with int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]          #: per-channel mean of the pixel values in [0, 1]
    std: tuple[float, ...]
    augment: str = "none"            #: the augmentation "auto" means for this dataset

    def __post_init__(self) -> None:
        if len(self.classes) < 2:  # one class trains to 100 % accuracy and says nothing
            raise DataError(f"{self.name}: a classification dataset needs at least 2 classes, found "
                            f"{len(self.classes)} ({', '.join(map(str, self.classes)) or 'none'}); a folder dataset "
                            f"needs one train/<class>/ folder per class")
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{self.name}: {split} images must be uint8 (N, C, H, W), got {x.dtype} "
                                f"{tuple(x.shape)}")
            if len(x) != len(y) or len(x) == 0:
                raise DataError(f"{self.name}: {split} split has {len(x)} images and {len(y)} labels")
            if int(y.min()) < 0 or int(y.max()) >= len(self.classes):
                raise DataError(f"{self.name}: {split} labels must lie in [0, {len(self.classes)})")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(f"{self.name}: train images are {tuple(self.train_x.shape[1:])} but test images "
                            f"{tuple(self.test_x.shape[1:])}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def subset(self, n: int | None, seed: int = 0, *, test: int | None = None) -> "ImageData":
        """The same dataset with a random ``n`` of the training images and ``test`` of the test images (each fixed
        by ``seed``; None keeps a split whole). The images are those :func:`subset_indices` picks, so a loader that
        decodes only them gives the same arrays."""
        out = self
        if n is not None and n < len(self.train_y):
            keep = subset_indices(len(self.train_y), n, seed)
            out = replace(out, train_x=out.train_x[keep], train_y=out.train_y[keep])
        if test is not None and test < len(self.test_y):
            keep = subset_indices(len(self.test_y), test, seed)
            out = replace(out, test_x=out.test_x[keep], test_y=out.test_y[keep])
        return out

    def describe(self) -> str:
        c, h, w = self.image_shape
        return (f"{self.name}: {len(self.train_y):,} train / {len(self.test_y):,} test images, {c}x{h}x{w}, "
                f"{self.num_classes} classes")


def subset_indices(total: int, n: int, seed: int) -> torch.Tensor:
    """``n`` of ``range(total)`` drawn without replacement by ``seed``, in increasing order (all when ``n ≥ total``)."""
    if n >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, as fractions of 255."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    sums = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for chunk in flat.split(1 << 22, dim=1):  # bounded float64 copies for large datasets
        c = chunk.double()
        sums += c.sum(1)
        squares += (c * c).sum(1)
    n = flat.shape[1]
    mean = sums / n
    std = (squares / n - mean * mean).clamp_min(1e-12).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).clamp_min(1e-3).tolist())
