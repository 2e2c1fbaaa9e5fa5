"""Which precision to compute in on this machine.

bf16 autocast pays only where the hardware multiplies bf16 natively (AVX512-BF16 / AMX on x86, most
GPUs). On an AVX2-only CPU, oneDNN emulates it and a bf16 matmul is far slower than fp32: measured
here (2 cores, AVX2) a [568, 576] x [576, 1536] matmul ran at 0.84 GFLOP/s in bf16 against 20 GFLOP/s
in fp32, 24x. So the recipes, evaluations and demos ask `autocast()` / `mixed_precision()` instead
of hard-coding bf16: bf16 where it is fast, fp32 elsewhere. `ZOO_AUTOCAST=bf16|fp32` overrides.
"""
from __future__ import annotations

import functools
import os

import torch

OVERRIDE_VARIABLE = "ZOO_AUTOCAST"


@functools.cache
def native_bf16(device_type: str = "cpu") -> bool:
    """True where bf16 matmuls run natively on `device_type` ("cpu" or "cuda")."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def bf16_autocast_enabled(device_type: str = "cpu") -> bool:
    """native_bf16, unless $ZOO_AUTOCAST says "bf16" or "fp32"."""
    choice = os.environ.get(OVERRIDE_VARIABLE, "").strip().lower()
    if choice in ("bf16", "bfloat16"):
        return True
    if choice in ("fp32", "float32", "no", "off"):
        return False
    if choice:
        raise ValueError(f"${OVERRIDE_VARIABLE} must be 'bf16' or 'fp32', got {choice!r}")
    return native_bf16(device_type)


def autocast(device_type: str = "cpu") -> torch.autocast:
    """torch.autocast in bf16 where it is fast here, else a disabled autocast (fp32)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16_autocast_enabled(device_type))


def mixed_precision(device_type: str = "cpu") -> str:
    """accelerate's `mixed_precision` for this machine: "bf16" or "no"."""
    return "bf16" if bf16_autocast_enabled(device_type) else "no"


__all__ = ["OVERRIDE_VARIABLE", "autocast", "bf16_autocast_enabled", "mixed_precision", "native_bf16"]
