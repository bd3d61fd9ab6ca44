"""The trained fusion nets saved as ``models/stylizer.pt`` (read and written by :mod:`anime_avatar.artifacts.stylizer`)
and rebuilt from it with their frozen encoder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from anime_avatar.artifacts.stylizer import STYLIZER, WHAT, read_stylizer, write_stylizer
from anime_avatar.artifacts.torchfile import build_loaded
from anime_avatar.core.errors import UserError
from anime_avatar.style.features import build_features
from anime_avatar.style.nets import FusionConfig, FusionHead, Stylizer


@dataclass(frozen=True)
class TrainedStylizer:
    """One net of a stylizer file, rebuilt with its frozen encoder, in eval mode."""

    net: Stylizer
    step: int
    image_size: int
    run_id: str
    data_version: str


def save_stylizer(path: Path, heads: Mapping[str, FusionHead], step: int, image_size: int, run_id: str = "",
                  data_version: str = "") -> None:  # fmt: skip
    nets = {method: {"config": head.cfg.to_dict(), "head": head.state_dict()} for method, head in heads.items()}
    write_stylizer(path, nets, step, image_size, run_id, data_version)


def load_stylizer(
    path: Path = STYLIZER, method: str = "attention", device: torch.device | str = "cpu"
) -> TrainedStylizer:
    """Rebuild the ``method`` net saved at ``path`` with its frozen encoder, in eval mode on ``device``."""
    payload = read_stylizer(path)
    if method not in payload["nets"]:
        raise UserError(f"{path} holds no {method} net (it holds {', '.join(payload['nets'])}): add it to "
                        "stylize.methods and run the stylize_train stage again")  # fmt: skip
    try:
        entry = payload["nets"][method]
        config = FusionConfig.from_dict(entry["config"])
        head = build_loaded(lambda: FusionHead(config), entry["head"])
        step, image_size = int(payload.get("step", 0)), int(payload.get("image_size", 0))  # (a "latest": a traceback)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise UserError(f"{path}: not a {WHAT} ({type(err).__name__}: {err})") from None
    encoder = build_features(head.cfg.network, head.cfg.scales, device)
    net = Stylizer(head.to(device).eval().requires_grad_(False), encoder)
    return TrainedStylizer(net, step, image_size, str(payload.get("run_id", "")),
                           str(payload.get("data_version", "")))  # fmt: skip
