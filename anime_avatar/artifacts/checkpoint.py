"""``models/checkpoints/last.pt``: everything needed to resume training exactly.

The training loop decides what goes in (weights, optimisers, EMA, step, seconds trained, RNG
states, a fingerprint of the params and data); this module owns where it lies and how it is read:
tensors and plain values only, so a checkpoint planted by someone else cannot run code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import torch

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path("models/checkpoints")
CHECKPOINT = CHECKPOINT_DIR / "last.pt"
FORMAT = 2  # 1 held pickled NumPy RNG state and is not read any more


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    # The CPU threads it ran on: a CPU run resumed on another count rounds differently (see load_resumable).
    save_tensors(path, {"format": FORMAT, "threads": torch.get_num_threads(), **payload})


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


class Schedule(Protocol):
    """The params of a training loop that say how long it runs and when it logs (train, stylize, translate)."""

    steps: int
    log_every: int


def load_resumable(
    path: Path, fingerprint: dict[str, Any], schedule: Schedule, section: str, device: torch.device | str = "cpu"
) -> dict[str, Any] | None:
    """The checkpoint's contents if it was made with these params and data (``fingerprint``) at or before
    ``schedule.steps`` (the params key ``<section>.steps``); None, and the reason in the log, otherwise.

    Read onto the CPU whatever ``device`` trains: ``load_state_dict`` copies weights and optimiser state to the
    nets' device, and values that must be on the CPU (NumPy's RNG state) are there. ``device`` decides whether a
    change of CPU thread count matters (it changes a CPU run's float rounding, not a GPU run's)."""
    payload = load_checkpoint(path, "cpu")
    if payload is None:
        return None
    if payload.get("fingerprint") != fingerprint:
        log.info("checkpoint %s was made with other params or data: starting from step 0", path)
        return None
    step = int(payload["step"])
    if step > schedule.steps:
        # Resuming would hand back a model trained longer than params.yaml says.
        log.info("checkpoint %s is at step %d, beyond %s.steps=%d: starting from step 0", path, step, section,
                 schedule.steps)  # fmt: skip
        return None
    history = payload.get("history")
    if history and step < schedule.steps and history[-1].get("step") == step and step % schedule.log_every:
        # Logged only because it was the last step then (steps has been raised since): an uninterrupted run to the
        # new steps has no row there, and the loss curve and means must be the same as its.
        payload["history"] = history[:-1]
    threads = payload.get("threads")
    if torch.device(device).type == "cpu" and threads not in (None, torch.get_num_threads()):
        log.warning("checkpoint %s was trained on %d CPU threads and this run has %d: it resumes, but its weights "
                    "will differ in float rounding from an uninterrupted run's (set the stage's threads to %d for a "
                    "bit-identical resume)", path, threads, torch.get_num_threads(), threads)  # fmt: skip
    if "seconds" not in payload:  # written before checkpoints carried the training time: resumable all the same
        log.info("checkpoint %s does not hold the time trained so far: the run's seconds count from now", path)
        payload["seconds"] = 0.0
    return payload
