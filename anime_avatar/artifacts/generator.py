"""``models/generator.pt``: the trained generator's file, with everything needed to rebuild it.

Contents (tensors and plain values only, loaded with ``weights_only=True``): ``config``
(the GAN's net config as a plain dict: architecture, resolution, z_dim, ...), ``ema`` and
``generator`` state dicts, the training ``step``, the MLflow ``run_id`` and the ``data_version``
of the training set. Readers take the resolution and z_dim from here, never from params.yaml.
This module reads and writes the file; rebuilding the network from it is the GAN's
(:func:`anime_avatar.gan.model_file.load_generator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError

GENERATOR = Path("models/generator.pt")
WHAT = "generator saved by the train stage"


@dataclass(frozen=True)
class GeneratorFile:
    """What a generator file holds, as read (nothing built yet)."""

    path: Path
    config: dict[str, Any]
    ema: dict[str, torch.Tensor]
    generator: dict[str, torch.Tensor]
    step: int
    run_id: str
    data_version: str

    def refuse(self, err: BaseException) -> UserError:
        """The one message for a file whose contents do not rebuild a generator."""
        return UserError(f"{self.path}: not a {WHAT} ({type(err).__name__}: {err})")


def save_generator(
    path: Path,
    config: dict[str, Any],
    ema_state: dict[str, torch.Tensor],
    raw_state: dict[str, torch.Tensor],
    step: int,
    run_id: str = "",
    data_version: str = "",
) -> None:
    save_tensors(
        path,
        {"config": dict(config), "ema": ema_state, "generator": raw_state, "step": int(step),
         "run_id": run_id, "data_version": data_version},
    )  # fmt: skip


def read_generator(path: Path = GENERATOR, device: torch.device | str = "cpu") -> GeneratorFile:
    """The contents of the generator file at ``path``; a missing or foreign file raises UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such generator file (run the train stage first: dvc repro train)")
    payload = load_tensors(path, WHAT, device)
    try:
        return GeneratorFile(
            path, dict(payload["config"]), payload["ema"], payload["generator"], int(payload.get("step", 0)),
            str(payload.get("run_id", "")), str(payload.get("data_version", "")),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, OverflowError) as err:  # (a step of inf: OverflowError)
        raise UserError(f"{path}: not a {WHAT} ({type(err).__name__}: {err})") from None
