"""Datasets by name (``cifar10``, ``cifar100``, ``folder:<path>``, ``digits``, ``synthetic``) and the batch loader."""

from __future__ import annotations

from typing import Callable

from .base import DataError, ImageData
from .loader import BatchLoader

DATASETS = ("cifar10", "cifar100", "digits", "synthetic", "folder:<path>")


def load_dataset(spec: str, *, data_dir: str = "data", download: bool = True, cache: str = "auto",
                 image_size: int | None = None, seed: int = 0, train_subset: int | None = None,
                 test_subset: int | None = None, log: Callable[[str], None] = print) -> ImageData:
    """Load the dataset named by ``spec`` as uint8 tensors; ``train_subset`` / ``test_subset`` keep a random ``N``
    of a split (drawn by ``seed``). Folder datasets decode only those images."""
    data = _load(spec, data_dir=data_dir, download=download, cache=cache, image_size=image_size, seed=seed,
                 train_subset=train_subset, test_subset=test_subset, log=log)
    return data.subset(train_subset, seed, test=test_subset)  # a no-op for what the loader already subset


def _load(spec: str, *, data_dir: str, download: bool, cache: str, image_size: int | None, seed: int,
          train_subset: int | None, test_subset: int | None, log: Callable[[str], None]) -> ImageData:
    name, sep, arg = spec.partition(":")
    if name in ("cifar10", "cifar100") and not sep:
        from .cifar import load_cifar

        return load_cifar(name, data_dir, allow_download=download, log=log)
    if name == "folder" and arg:
        from .folder import load_folder

        return load_folder(arg, image_size=image_size, cache=cache, log=log, train_subset=train_subset,
                           test_subset=test_subset, seed=seed)
    if name == "digits" and not sep:
        from .builtin import load_digits_data

        return load_digits_data()
    if name == "synthetic":
        from .builtin import load_synthetic

        return load_synthetic(arg, image_size=image_size, seed=seed)
    raise DataError(f"unknown dataset {spec!r}; choose one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "BatchLoader", "DataError", "ImageData", "load_dataset"]
