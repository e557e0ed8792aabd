"""Device and precision selection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from vitkit.errors import UserError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit device is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: {name!r} asked for, but no CUDA GPU is available (use 'auto' or 'cpu')")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"train.device: {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("train.device: 'mps' asked for, but MPS is not available")
    return device


def select_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that have it natively, fp16 (with a GradScaler) on older GPUs, fp32 elsewhere
    (the trainer then picks bf16 for big enough models on CPUs with native bf16: ``engine.efficiency``)."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise UserError("train.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
        return name
    if device.type == "cuda":
        return "bf16" if native_bf16(device) else "fp16"
    return "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware (Ampere and newer); emulated bf16 (V100, T4) does not count."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX flags in ``/proc/cpuinfo``; Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_tf32(precision: str, device: torch.device, enabled: bool = True) -> bool:
    """Whether fp32 training should use TF32 matmuls: fp32 on a CUDA GPU with TF32 (Ampere, compute
    capability 8.0, and newer), unless ``train.tf32 = false``."""
    if not enabled or precision != "fp32" or device.type != "cuda":
        return False
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


def apply_tf32(on: bool) -> None:
    """TF32 for float32 matmuls on (``high``) or off (``highest``, PyTorch's default); cuDNN convolutions
    use TF32 by PyTorch's default already."""
    torch.set_float32_matmul_precision("high" if on else "highest")


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed-precision context for forward passes; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=DTYPES[precision]):
        yield
