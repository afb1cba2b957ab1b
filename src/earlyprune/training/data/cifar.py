"""CIFAR-10 / CIFAR-100 in the official "python version" layout, downloaded with checksum verification.

The official files are Python pickles (a dict with ``b"data"``: uint8 (N, 3072) and the labels), read with
``encoding="bytes"`` as their authors prescribe. That is the dataset's own format, not earlyprune's save path,
and the unpickler here only admits what those files contain (numpy arrays, lists, dicts, bytes): a file that
asks for anything else is refused instead of executed.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import DataError, ImageData

# per-channel mean / std of the CIFAR training images (the usual constants)
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    stats: tuple[tuple[float, ...], tuple[float, ...]]


CIFAR = {
    "cifar10": CifarSpec("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                         "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                         tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                         b"labels", b"label_names", _CIFAR10_STATS),
    "cifar100": CifarSpec("cifar100", "cifar-100-python", "cifar-100-python.tar.gz",
                          "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                          "eb9058c3a382ffc7106e4002c42a8d85", ("train",), "test", "meta",
                          b"fine_labels", b"fine_label_names", _CIFAR100_STATS),
}

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _Refused(DataError, pickle.UnpicklingError):
    pass


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load {module}.{name}: not part of the CIFAR file format")


def _read_pickle(path: Path) -> dict:
    try:
        data = _DataUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{path} is not a CIFAR data file ({exc}); replace it with the official file") from None
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pickles raise many types
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); delete it and download "
                        f"the dataset again") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a CIFAR batch file (expected a dict, got {type(data).__name__})")
    return data


def _read_batch(path: Path, spec: CifarSpec) -> tuple[torch.Tensor, torch.Tensor]:
    data = _read_pickle(path)
    if b"data" not in data or spec.label_key not in data:
        raise DataError(f"{path} lacks the keys b'data' and {spec.label_key!r} of a {spec.name} batch file")
    x = np.asarray(data[b"data"])
    y = np.asarray(data[spec.label_key], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, got {x.dtype} {x.shape} "
                        f"and {len(y)} labels; the file is corrupt")
    return torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(y)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _expected(spec: CifarSpec, root: Path) -> str:
    files = ", ".join((*spec.train_files, spec.test_file, spec.meta_file))
    return f"{root / spec.folder}/{{{files}}}"


def download(spec: CifarSpec, data_dir: Path, log=print) -> None:
    """Fetch and verify the archive, then extract it into ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / spec.archive
    if not archive.is_file() or md5sum(archive) != spec.md5:
        tmp = archive.with_name(archive.name + ".part")
        log(f"downloading {spec.url} to {archive}")
        try:
            with urllib.request.urlopen(spec.url, timeout=30) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{spec.name} is not in {data_dir} and could not be downloaded ({exc}); expected "
                            f"{_expected(spec, data_dir)} — download {spec.url} and extract it in {data_dir}, or pass "
                            f"--data-dir") from None
        digest = md5sum(tmp)
        if digest != spec.md5:
            tmp.unlink(missing_ok=True)
            raise DataError(f"the downloaded {spec.archive} has MD5 {digest}, expected {spec.md5}: the download is "
                            f"damaged; try again")
        tmp.replace(archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):  # refuses absolute paths and links leaving data_dir
                tar.extractall(data_dir, filter="data")
            else:  # pragma: no cover - Python without the extraction filters
                tar.extractall(data_dir)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive} ({exc}); delete it and download again") from None


def load_cifar(name: str, data_dir: str | Path, allow_download: bool = True, log=print) -> ImageData:
    """CIFAR-10 or CIFAR-100 from ``data_dir/<official folder>``, downloading it first if allowed."""
    spec = CIFAR[name]
    root = Path(data_dir).expanduser()
    folder = root / spec.folder
    needed = [*spec.train_files, spec.test_file, spec.meta_file]
    if not all((folder / f).is_file() for f in needed):
        if not allow_download:
            missing = [f for f in needed if not (folder / f).is_file()]
            raise DataError(f"{spec.name} not found: expected {_expected(spec, root)} (missing {', '.join(missing)}); "
                            f"pass --data-dir pointing to the folder that holds {spec.folder}/, or allow --download")
        download(spec, root, log)
    parts = [_read_batch(folder / f, spec) for f in spec.train_files]
    train_x, train_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / spec.test_file, spec)
    meta = _read_pickle(folder / spec.meta_file)
    names = meta.get(spec.names_key)
    if not isinstance(names, list) or not names:
        raise DataError(f"{folder / spec.meta_file} lacks {spec.names_key!r}; the file is corrupt")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    mean, std = spec.stats
    return ImageData(spec.name, train_x, train_y, test_x, test_y, classes, mean, std, augment="standard")
