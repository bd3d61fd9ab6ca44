"""``models/translator.pt``: the trained photo <-> anime translator, its checkpoint and its run record.

Contents (tensors and plain values only, loaded with ``weights_only=True``): ``config`` (the translator's
net config as a plain dict: image size, widths, attention), ``g_ab`` (photo -> anime) and ``g_ba``
(anime -> photo) generator weights, the training ``step``, the MLflow ``run_id``, the ``data_version`` of
both domains, and ``info`` (free-form facts: the params it was trained with, what it scored). The
discriminators are not kept: nothing after training needs them (the checkpoint has them).

``models/translator_checkpoints/last.pt`` holds what resuming needs (see :mod:`anime_avatar.translate.training`);
``models/translator_run.json`` says which MLflow run produced the file (translate_eval logs to it). A translator
trained by the project on selfie2anime ships inside the package (:data:`SHIPPED_TRANSLATOR`): ``avatar`` uses it
when the workspace has trained none. This module reads and writes the file; rebuilding the nets is the
translation package's (:mod:`anime_avatar.translate.model_file`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError

log = logging.getLogger(__name__)
TRANSLATOR = Path("models/translator.pt")
TRANSLATOR_CHECKPOINT_DIR = Path("models/translator_checkpoints")
TRANSLATOR_CHECKPOINT = TRANSLATOR_CHECKPOINT_DIR / "last.pt"
TRANSLATOR_RUN_FILE = Path("models/translator_run.json")
SHIPPED_TRANSLATOR = Path(__file__).resolve().parents[1] / "translate" / "shipped" / "selfie2anime.pt"
WHAT = "translator saved by the translate_train stage"
FORMAT = 1
DIRECTIONS = {"anime": "g_ab", "photo": "g_ba"}  # --to anime: photo -> anime; --to photo: anime -> photo


def write_translator(
    path: Path,
    config: dict[str, Any],
    generators: dict[str, dict[str, torch.Tensor]],
    step: int,
    run_id: str = "",
    data_version: str = "",
    info: dict[str, Any] | None = None,
) -> None:
    """``generators``: ``{"g_ab": state dict, "g_ba": state dict}``."""
    if set(generators) != set(DIRECTIONS.values()):
        raise ValueError(f"a translator file holds both generators ({', '.join(DIRECTIONS.values())})")
    save_tensors(path, {"format": FORMAT, "config": dict(config), **generators, "step": int(step), "run_id": run_id,
                        "data_version": data_version, "info": dict(info or {})})  # fmt: skip


def read_translator(path: Path = TRANSLATOR, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The file's contents; UserError if it is missing or not a translator file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such translator file (run the translate_train stage first: "
                        "dvc repro translate_train)")  # fmt: skip
    payload = load_tensors(path, WHAT, device)
    if payload.get("format") != FORMAT or not isinstance(payload.get("config"), dict):
        raise UserError(f"{path}: not a {WHAT}")
    if not isinstance(payload.get("info", {}), dict):  # read before any net is built (a list: an AttributeError)
        raise UserError(f"{path}: not a {WHAT} (info is a {type(payload['info']).__name__}, not a mapping)")
    return payload


def read_chosen_translator(path: Path | None = None, device: torch.device | str = "cpu") -> tuple[Path, dict[str, Any]]:
    """The translator to use and its contents, each file read once: ``path`` if given, else the workspace's
    trained one, else the shipped one. A workspace translator that learned from the synthetic photo set (the
    offline default of `make run`: a check of the stages, whose avatars are noise) gives way to the shipped
    one, with a line saying so. UserError if the chosen file is unreadable."""
    if path is not None:
        return Path(path), read_translator(path, device)
    if not TRANSLATOR.is_file():
        return SHIPPED_TRANSLATOR, read_translator(SHIPPED_TRANSLATOR, device)
    payload = read_translator(TRANSLATOR, device)
    if payload.get("info", {}).get("synthetic_photos", False):
        log.info("%s learned from synthetic photos (the offline pipeline check): using the shipped translator %s "
                 "(--model %s uses the workspace's)", TRANSLATOR, SHIPPED_TRANSLATOR.name, TRANSLATOR)  # fmt: skip
        return SHIPPED_TRANSLATOR, read_translator(SHIPPED_TRANSLATOR, device)
    return TRANSLATOR, payload
