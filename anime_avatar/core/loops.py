"""What every training loop of the project shares: per-step random streams, stopping on a signal, and the
training time of a run that several processes resumed.

The loops (the GAN's, the stylizer's and the translator's) draw each step's randomness from a generator seeded by
(seed, rank, step, purpose) instead of a global stream, so a run resumed from the checkpoint of
step t draws exactly what an uninterrupted run draws; and both turn SIGINT/SIGTERM into "checkpoint
after this step, then stop".
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anime_avatar.core.errors import UserError


def step_generator(
    seed: int, rank: int, step: int, purpose: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A torch generator whose stream depends only on (seed, rank, step, purpose)."""
    state = np.random.SeedSequence([seed, rank, step, purpose]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


class TrainingClock:
    """The seconds a run has trained: what its checkpoint carried (``before``, 0 for a fresh run) plus this
    process's time since the clock started. A run resumed at its last step then still reports its whole
    training time, not the few seconds of the process that found nothing left to do."""

    def __init__(self, before: float = 0.0) -> None:
        self.before = before
        self._started = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self._started


class StopFlag:
    """Turns SIGINT/SIGTERM into a request to stop after the current step (and checkpoint)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def stop_if_signalled(self, step: int, checkpoint: Path, save: Callable[[], None] | None) -> None:
        """After each step: if a signal has come, ``save()`` the checkpoint and raise TrainingInterrupted.

        ``save`` is None in a process that writes no checkpoint (a DDP rank other than 0): it goes on until rank 0
        stops, and stops when its next collective finds rank 0 gone (:meth:`step_of_rank`). Had it stopped at
        once, a signal reaching it a step before rank 0 left rank 0 waiting in that collective, to die there
        without writing the checkpoint.
        """
        if self.signal is None or save is None:
            return
        save()
        raise TrainingInterrupted(
            f"stopped by signal {self.signal} at step {step}; checkpoint {checkpoint} saved, "
            "run the stage again to resume"
        )

    @contextlib.contextmanager
    def step_of_rank(self, is_main: bool, step: int, checkpoint: Path) -> Iterator[None]:
        """Around one training step: in a DDP rank other than 0 whose step fails (a collective finding rank 0
        gone) after a signal had come, TrainingInterrupted (rank 0 stopped on it and saved the checkpoint);
        any other failure, and any failure of rank 0, goes on as it is."""
        try:
            yield
        except RuntimeError:
            if not is_main and self.signal is not None:
                raise TrainingInterrupted(
                    f"stopped by signal {self.signal} at step {step} with rank 0, which saved checkpoint "
                    f"{checkpoint}; run the stage again to resume"
                ) from None
            raise


class TrainingInterrupted(UserError):
    """A loop stopped by a signal after writing its checkpoint: running the stage again resumes it."""
