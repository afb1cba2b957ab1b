"""Image-folder datasets (``train/<class>/*``, ``test/<class>/*`` or ``val/<class>/*``) from a directory or a zip.

Every image is decoded once with Pillow into one uint8 array kept in memory (decoding runs on a thread pool:
Pillow releases the GIL while decoding). The arrays can be cached in an ``.npz`` file keyed by the source's
path, size and modification time, so the next run starts in seconds; a stale or damaged cache is rebuilt.

With ``train_subset`` / ``test_subset`` only the images drawn (:func:`~.base.subset_indices`, the same draw as
:meth:`ImageData.subset`) are read and decoded — a 2,000-image experiment on CIFAR-10 decodes 2,000 images, not
60,000 — and cached on their own; a full cache, when one exists, serves them too. The normalisation statistics
are those of the training images used, whichever way they were obtained.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch

from .base import DataError, ImageData, channel_stats, subset_indices

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
CACHE_VERSION = 1


def _source_key(path: Path, image_size: int | None) -> str:
    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{image_size}|{CACHE_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "earlyprune"


def _index(names: list[str], where: str) -> tuple[str, dict[str, list[tuple[str, str]]]]:
    """``(prefix, {split: [(class, entry name)]})`` from the entry names of a tree holding train/<class>/*."""
    prefixes: set[tuple[str, ...]] = set()
    parsed: list[tuple[tuple[str, ...], str, str, str]] = []
    for name in names:
        parts = PurePosixPath(name).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in parts) or PurePosixPath(name).suffix.lower() not in EXTENSIONS:
            continue
        for i in range(len(parts) - 2):
            if parts[i] in ("train", "test", "val") and i + 3 == len(parts):
                prefixes.add(parts[:i])
                parsed.append((parts[:i], parts[i], parts[i + 1], name))
                break
    if not parsed:
        raise DataError(f"{where} holds no images in the layout train/<class>/<image> and test/<class>/<image> "
                        f"(or val/); image types: {', '.join(sorted(EXTENSIONS))}")
    prefix = min(prefixes, key=len)
    splits: dict[str, list[tuple[str, str]]] = {}
    for pre, split, cls, name in sorted(parsed, key=lambda item: item[3]):  # listing order varies by filesystem
        if pre == prefix:
            splits.setdefault(split, []).append((cls, name))
    if "train" not in splits:
        raise DataError(f"{where} has no train/<class>/ images")
    if "test" not in splits and "val" not in splits:
        raise DataError(f"{where} has train/ but neither test/ nor val/ images; add a held-out split")
    return "/".join(prefix), splits


#: a phase longer than this says how far it got (decoding all of CIFAR-10 takes minutes on 2 cores)
PROGRESS_SECONDS = 10.0


def _decode_all(items: list[tuple[str, bytes]], image_size: int | None, where: str,
                log: Callable[[str], None] | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    def decode(item: tuple[str, bytes]) -> np.ndarray:
        name, blob = item
        try:
            with Image.open(io.BytesIO(blob)) as img:
                img = img.convert("RGB")
                if image_size is not None and img.size != (image_size, image_size):
                    img = img.resize((image_size, image_size), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            detail = "not a recognised image format" if "BytesIO" in str(exc) else str(exc)  # PIL names its buffer
            raise DataError(f"cannot decode {name} in {where} ({detail}); the file is truncated or not an image: "
                            f"replace or delete it") from None

    arrays: list[np.ndarray] = []
    last = time.monotonic()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for a in pool.map(decode, items, chunksize=256):
            arrays.append(a)
            if log is not None and time.monotonic() - last > PROGRESS_SECONDS:
                log(f"  decoded {len(arrays):,} of {len(items):,} images ({len(arrays) / len(items):.0%})")
                last = time.monotonic()
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        sizes = sorted(f"{s[1]}x{s[0]}" for s in shapes)[:3]
        raise DataError(f"images in {where} have different sizes ({', '.join(sizes)}, …); pass --image-size SIZE "
                        f"to resize them all")
    return np.stack(arrays)


def _listing(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{split: [(class, entry name)]}`` of a directory or a zip, sorted by entry name."""
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        return _index(names, str(path))[1]
    try:
        with zipfile.ZipFile(path) as zf:
            return _index(zf.namelist(), str(path))[1]
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(f"{path} is not a readable zip file ({exc}); it may be truncated — copy it again") from None


def _read(path: Path, names: list[str]) -> list[bytes]:
    """The bytes of the named entries of a directory or a zip."""
    if path.is_dir():
        return [(path / n).read_bytes() for n in names]
    try:
        with zipfile.ZipFile(path) as zf:
            return [zf.read(n) for n in names]
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(f"{path} is not a readable zip file ({exc}); it may be truncated — copy it again") from None
    except OSError as exc:  # e.g. CRC errors in a damaged member
        raise DataError(f"cannot read {path} ({exc}); it may be truncated — copy it again") from None


def _build(path: Path, image_size: int | None, log: Callable[[str], None], train_subset: int | None = None,
           test_subset: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    splits = _listing(path)
    classes = sorted({c for c, _ in splits["train"]})
    index = {c: i for i, c in enumerate(classes)}
    test_split = "test" if "test" in splits else "val"
    extra = sorted({c for c, _ in splits[test_split]} - set(classes))
    if extra:
        raise DataError(f"{path}: {test_split}/ has classes missing from train/: {', '.join(extra[:5])}")
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    totals = {}
    for split, key, n in (("train", "train", train_subset), (test_split, "test", test_subset)):
        items = splits[split]
        totals[key] = len(items)
        if n is not None and n < len(items):  # decode only what is used
            items = [items[int(i)] for i in subset_indices(len(items), n, seed)]
        blobs = _read(path, [name for _, name in items])
        labelled = [(name, blob) for (_, name), blob in zip(items, blobs)]  # errors name the file
        if len(labelled) >= 5000:   # minutes on a small machine: say so before, not only after
            log(f"decoding {len(labelled):,} {split} images from {path.name} (once: cached for later runs)")
        images = _decode_all(labelled, image_size, str(path), log)
        out[f"{key}_x"] = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        out[f"{key}_y"] = np.array([index[c] for c, _ in items], dtype=np.int64)
    n_train, n_test = len(out["train_y"]), len(out["test_y"])
    of = (f" (random subsets of {totals['train']:,} + {totals['test']:,})"
          if (n_train, n_test) != (totals["train"], totals["test"]) else "")
    log(f"decoded {n_train:,} + {n_test:,} images from {path}{of}")
    return out


def load_folder(source: str, image_size: int | None = None, cache: str = "auto",
                log: Callable[[str], None] = print, train_subset: int | None = None,
                test_subset: int | None = None, seed: int = 0) -> ImageData:
    """An image-folder dataset from a directory or a ``.zip``; ``cache`` is a path, "auto" or "none".

    ``train_subset`` / ``test_subset``: keep (and decode) only a random ``N`` of a split, drawn by ``seed``."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"folder dataset {source!r} does not exist; pass folder:<directory or .zip> holding "
                        f"train/<class>/* and test/<class>/*")
    key = _source_key(path, image_size)
    subsets = train_subset is not None or test_subset is not None
    sub_key = hashlib.sha256(f"{key}|{train_subset}|{test_subset}|{seed}".encode()).hexdigest()[:16]
    cache_path: Path | None = None
    if cache == "auto":
        cache_path = default_cache_dir() / f"folder-{path.stem}-{key}.npz"
    elif cache not in ("none", "", None):
        cache_path = Path(cache).expanduser()
    sub_path = cache_path.with_name(f"{cache_path.stem}-subset-{sub_key}.npz") if cache_path and subsets else None
    arrays = None
    if cache_path is not None and (not subsets or cache_path.is_file()):
        arrays = _load_cache(cache_path, key, log)  # a full cache serves subsets too
        if arrays is not None and subsets:
            arrays = _take(arrays, train_subset, test_subset, seed)
    if arrays is None and sub_path is not None:
        arrays = _load_cache(sub_path, sub_key, log)
    if arrays is None:
        arrays = _build(path, image_size, log, train_subset, test_subset, seed)
        x = torch.from_numpy(arrays["train_x"])
        mean, std = channel_stats(x)
        arrays["mean"], arrays["std"] = np.array(mean), np.array(std)
        target = sub_path if subsets else cache_path
        if target is not None:
            _save_cache(target, sub_key if subsets else key, arrays, log)
    return ImageData(f"folder:{path.name}", torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]),
                     torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"]),
                     [str(c) for c in arrays["classes"]], tuple(float(v) for v in arrays["mean"]),
                     tuple(float(v) for v in arrays["std"]), augment="standard")


def _take(arrays: dict[str, np.ndarray], train_subset: int | None, test_subset: int | None,
          seed: int) -> dict[str, np.ndarray]:
    """The subsets of full arrays, with the statistics of the training images kept (as if decoded alone)."""
    out = dict(arrays)
    for key, n in (("train", train_subset), ("test", test_subset)):
        if n is not None and n < len(arrays[f"{key}_y"]):
            keep = subset_indices(len(arrays[f"{key}_y"]), n, seed).numpy()
            out[f"{key}_x"], out[f"{key}_y"] = arrays[f"{key}_x"][keep], arrays[f"{key}_y"][keep]
    mean, std = channel_stats(torch.from_numpy(out["train_x"]))
    out["mean"], out["std"] = np.array(mean), np.array(std)
    return out


_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y", "classes", "mean", "std", "key")


def _load_cache(path: Path, key: str, log: Callable[[str], None]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in _CACHE_KEYS}
    except Exception as exc:  # noqa: BLE001 - any damage means "rebuild"
        log(f"ignoring the damaged cache {path} ({type(exc).__name__}); decoding the images again")
        return None
    if str(arrays.pop("key")) != key:
        log(f"cache {path} is for another version of the source; decoding the images again")
        return None
    return arrays


def _save_cache(path: Path, key: str, arrays: dict[str, np.ndarray], log: Callable[[str], None]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, key=np.array(key), **arrays)
        os.replace(tmp, path)
        log(f"cached the decoded images in {path}")
    except OSError as exc:  # a read-only cache location must not stop training
        log(f"could not write the cache {path} ({exc}); continuing without it")
