"""``models/checkpoints/last.pt``: everything needed to resume training exactly.

The training loop decides what goes in (weights, optimisers, EMA, step, RNG states, a
fingerprint of the params and data); this module owns where it lies and how it is read:
tensors and plain values only, so a checkpoint planted by someone else cannot run code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path("models/checkpoints")
CHECKPOINT = CHECKPOINT_DIR / "last.pt"
FORMAT = 2  # 1 held pickled NumPy RNG state and is not read any more


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    save_tensors(path, {"format": FORMAT, **payload})


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The checkpoint's contents; None (and a warning saying why) when absent, unreadable or of another format."""
    if not path.is_file():
        return None
    try:
        payload = load_tensors(path, "training checkpoint", device)
    except UserError as err:  # a damaged or foreign file must not stop training: start over, and say so
        log.warning("%s: starting from step 0", err)
        return None
    if payload.get("format") != FORMAT:
        log.warning("%s was written by another version of the training code: starting from step 0", path)
        return None
    return payload
