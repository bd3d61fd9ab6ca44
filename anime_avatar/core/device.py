"""One device resolver for every stage and command (``auto`` picks CUDA, then MPS, then the CPU) and one rule for
the CPU threads torch uses."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from anime_avatar.core.errors import UserError
from anime_avatar.core.parallel import idle_cores

log = logging.getLogger(__name__)

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


def wait_for(device: torch.device) -> None:
    """Return when ``device`` has done the work queued on it: CUDA and MPS run asynchronously, so a wall-clock
    time taken without this measures only the launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextmanager
def full_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 convolutions and matrix products in full precision inside the block, not TensorFloat-32
    (cuDNN's default for convolutions on Ampere and later GPUs keeps 10 bits of mantissa): a measuring network then
    gives a GPU the CPU's numbers to float32 rounding. Other devices: nothing changes."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def apply_threads(setting: int, key: str = "threads") -> int:
    """Set torch's CPU threads to ``setting``, or, for 0, to the idle cores (:func:`idle_cores`) unless
    ``$OMP_NUM_THREADS`` chose: on a busy machine more threads than idle cores wait on each other (a loaded
    2-core machine ran Gatys 40 times slower than idle). Returns the number in use."""
    if not setting and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()  # the user's choice, which torch read at start
    threads = setting or idle_cores()
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    if not setting:
        log.debug("%s: 0, so %d thread(s): the idle cores of %d", key, threads, os.cpu_count() or 1)
    return threads
