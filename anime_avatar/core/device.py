"""One device resolver for every stage and command: ``auto`` picks CUDA, then MPS, then the CPU."""

from __future__ import annotations

import re

import torch

from anime_avatar.core.errors import UserError

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def resolve_device(spec: str | torch.device | None = "auto", key: str = "device") -> torch.device:
    """The device named by ``spec`` (``None`` means ``auto``); an explicit one must exist.

    CUDA always gets an index, so "cuda" and "cuda:0" are one device (caches are keyed by it).
    ``key`` names the setting in the error message (``train.device``, ``eval.device``).
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise UserError(f"{key} is {spec!r}: not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{key} is {str(spec)!r} but no CUDA device is available (use auto or cpu)")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise UserError(f"{key} is {str(spec)!r} but there are only {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key} is {str(spec)!r} but MPS is not available (use auto or cpu)")
    return device
