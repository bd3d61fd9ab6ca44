"""What training computes in: bfloat16 autocast where the hardware runs it natively, float32 elsewhere.

Shared by every training loop (GAN, translator): the same ``amp`` setting means the same arithmetic.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX). With them oneDNN's bf16 convolutions run
    1.5-2x faster than float32 (README Speed); without them it emulates bf16, slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own (private) CPUID checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` runs bfloat16 natively: compute capability 8 (Ampere) or later, or ROCm.
    ``torch.cuda.is_bf16_supported()`` also says yes for emulated bf16 (a T4 or V100: slower than float32), and
    asks the current device, not this one."""
    if torch.version.hip:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).major >= 8


def autocast_for(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    """bfloat16 autocast (``train.amp``) on CUDA GPUs and CPUs that support it natively; float32 elsewhere (MPS,
    GPUs before Ampere, CPUs without bf16 instructions). Weights, optimiser state and losses stay float32 either
    way."""
    if enabled and device.type == "cuda" and cuda_has_native_bf16(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and device.type == "cpu" and cpu_has_native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def training_precision(device: torch.device, amp: bool) -> str:
    """What training on ``device`` computes in: "bfloat16" where ``autocast_for`` autocasts, else "float32"."""
    return "bfloat16" if isinstance(autocast_for(device, amp), torch.autocast) else "float32"
