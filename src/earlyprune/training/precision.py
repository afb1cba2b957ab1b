"""Device, mixed precision and memory format: what the trainer runs on and in which number format.

* fp32 — plain float32;
* bf16 — ``torch.autocast`` to bfloat16 (CPU and CUDA); no scaler is needed (bf16 has float32's range). On CPUs
  without native bf16 (AVX512-BF16 / AMX) it still runs, but slowly, and a warning says so;
* fp16 — CUDA only, autocast to float16 with a :class:`torch.amp.GradScaler`.

The scaler always exists (disabled when not needed) so that every checkpoint has the same fields.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ..core.errors import ConfigError

log = logging.getLogger("earlyprune")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA device is available; use --device cpu (or auto)")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    checks = [getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)]
    return any(bool(check()) for check in checks if check is not None)


class Precision:
    """Autocast context and gradient scaler for one run."""

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("--precision fp16 needs a CUDA device; on a CPU use --precision bf16")
        if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("this CPU has no native bf16 support: bf16 autocast will run, but likely slower than fp32")
        self.name = precision
        self.device = device
        self.dtype = _DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)
