"""Datasets that need no files: scikit-learn's bundled ``digits`` and ``synthetic`` random images for tests."""

from __future__ import annotations

import torch

from .base import DataError, ImageData, channel_stats


def load_digits_data() -> ImageData:
    """scikit-learn's 1,797 8×8 handwritten digits (pixel values 0-16 scaled to uint8), a fixed 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset ships with scikit-learn, which is not installed: "
                        "pip install 'earlyprune[demo]' (or pip install scikit-learn)") from None
    data = load_digits()
    x = torch.tensor(data.images * (255 / 16), dtype=torch.float32).round().to(torch.uint8).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # the split never depends on --seed
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    mean, std = channel_stats(x[train])
    return ImageData("digits", x[train], y[train], x[test], y[test], [str(i) for i in range(10)], mean, std)


def load_synthetic(spec_arg: str = "", image_size: int | None = None, seed: int = 0) -> ImageData:
    """Random 3×S×S images of 10 classes, learnable (each class has its own colour and pattern, plus noise); ``synthetic:N`` sets
    the number of training images (default 512; the test split has a quarter as many)."""
    try:
        n_train = int(spec_arg) if spec_arg else 512
    except ValueError:
        raise DataError(f"synthetic:N needs a whole number of training images, got 'synthetic:{spec_arg}'") from None
    if n_train < 2:
        raise DataError(f"synthetic:N needs at least 2 training images, got {n_train}")
    size = image_size or 32
    gen = torch.Generator().manual_seed(seed)
    classes = 10
    # each class: its own colour (survives global pooling) plus a spatial pattern (what convolutions see)
    colours = torch.rand(classes, 3, 1, 1, generator=gen) * 128 + 64
    patterns = colours + (torch.rand(classes, 3, size, size, generator=gen) - 0.5) * 64

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=gen)
        noise = torch.randn(n, 3, size, size, generator=gen) * 32
        return (patterns[y] + noise).clamp(0, 255).round().to(torch.uint8), y

    train_x, train_y = make(n_train)
    test_x, test_y = make(max(n_train // 4, 2))
    return ImageData("synthetic", train_x, train_y, test_x, test_y, [f"class{i}" for i in range(classes)],
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), augment="none")
