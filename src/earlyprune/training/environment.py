"""What a run's results depend on beyond its configuration: the environment record of ``environment.json``.

A resumed run continues bit-identically only on the same kind of machine with the same settings: the thread
count changes the order of float reductions, the device (and the CPU's vector instruction set, which picks
PyTorch's kernels) and the PyTorch version change the kernels, and the data must be the same images. The record
holds those facts as resolved when the run started (``--threads`` unset resolves to torch's default, ``--device
auto`` to what was found), and a fingerprint of the data, so that ``--resume`` can compare them
(:mod:`.resume`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from .data import ImageData

#: the record's keys, each the name ``--allow-changed`` accepts
KEYS = ("threads", "device", "torch", "data")


def device_description(device: torch.device) -> str:
    """``cpu (AVX512)`` — the kind and what selects its kernels (the CPU's vector ISA, the GPU's name)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    return device.type


def capture(threads: int | None, device: torch.device) -> dict[str, Any]:
    """The record without the data fingerprint (known before the data are loaded)."""
    return {"threads": int(threads) if threads is not None else torch.get_num_threads(),
            "device": device_description(device), "torch": torch.__version__}


def data_fingerprint(data: ImageData) -> str:
    """SHA-256 (first 16 hex digits) of the training and test images and labels, as the run uses them."""
    digest = hashlib.sha256()
    for t in (data.train_x, data.train_y, data.test_x, data.test_y):
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).reshape(-1).numpy().data if t.numel() else b"")
    return digest.hexdigest()[:16]


def load_average() -> float | None:
    """The machine's 1-minute load average: not part of the record (it does not change the results), but other
    jobs slow a shared machine's timings, and reports say so."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # not on every platform
        return None
