"""Precision choices: which reduced-precision dtypes make sense on which device.

fp32 is the default everywhere. bf16 halves memory and, on CPUs with native bf16 matrix
instructions (AVX512-BF16 or AMX) and on GPUs, runs faster; on CPUs without them PyTorch
emulates bf16 and it is *slower* than fp32 (on an AVX512 Cascade Lake, ``benchmarks/bench_core.py``
measured 48-50 vs 209-218 GFLOP/s matmul over three runs, see README). fp16 is for GPUs only.
"""
from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "check_device", "cpu_has_native_bf16", "check_precision", "parse_dtype"]

# The precision choices front ends offer: name -> dtype name for ``load_model(dtype=...)`` (None: fp32).
PRECISIONS: dict[str, str | None] = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}

_NAMES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def parse_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp32" | "bf16" | "fp16"`` (or a torch dtype, or None) -> torch dtype (or None)."""
    if value is None or isinstance(value, torch.dtype):
        return value
    key = str(value).lower()
    if key not in _NAMES:
        raise ValueError(f"precision must be one of {sorted(set(_NAMES))}, got {value!r}")
    return _NAMES[key]


def check_precision(dtype: torch.dtype | None, device: torch.device | str | None) -> None:
    """Warn about precision choices that work but are slow on the given device."""
    if dtype is None or dtype == torch.float32:
        return
    kind = torch.device(device).type if device is not None else "cpu"
    if kind != "cpu":
        return
    if dtype == torch.float16:
        warnings.warn("float16 on the CPU is emulated and very slow; use bfloat16 or float32 on CPUs",
                      RuntimeWarning, stacklevel=3)
    elif dtype == torch.bfloat16 and not cpu_has_native_bf16():
        logger.warning("this CPU has no native bf16 instructions (AVX512-BF16/AMX): bfloat16 saves memory "
                       "but runs slower than float32 here")


def check_device(device: Any) -> torch.device | None:
    """A valid device that this machine has (or None), else ValueError naming the valid forms."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps', 'xpu' or another torch device, "
                         f"got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} needs CUDA, which this machine's PyTorch does not see; use 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' needs Apple's Metal backend, which is not available here; use 'cpu'")
    return device
