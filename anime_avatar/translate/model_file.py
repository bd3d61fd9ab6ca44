"""A trained translator rebuilt from its file (read and written by :mod:`anime_avatar.artifacts.translator`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anime_avatar.artifacts.torchfile import build_loaded
from anime_avatar.artifacts.translator import DIRECTIONS, WHAT, read_chosen_translator, write_translator
from anime_avatar.core.errors import UserError, first_line
from anime_avatar.translate.nets import Generator, TranslatorConfig


@dataclass(frozen=True)
class TrainedTranslator:
    """One direction of a translator file, in eval mode, with the facts its file records."""

    net: Generator
    config: TranslatorConfig
    path: Path
    step: int
    run_id: str
    data_version: str
    info: dict[str, Any]

    @property
    def image_size(self) -> int:
        return self.config.image_size


def save_translator(path: Path, g_ab: Generator, g_ba: Generator, step: int, run_id: str = "",
                    data_version: str = "", info: dict[str, Any] | None = None) -> None:  # fmt: skip
    generators = {"g_ab": g_ab.state_dict(), "g_ba": g_ba.state_dict()}
    write_translator(path, g_ab.cfg.as_dict(), generators, step, run_id, data_version, info)


def load_translator(
    path: Path | None = None, to: str = "anime", device: torch.device | str = "cpu"
) -> TrainedTranslator:
    """The generator translating ``to`` anime (from photos) or ``to`` photo, from ``path`` (default: the workspace's
    models/translator.pt, else the shipped one), frozen and in eval mode on ``device``."""
    if to not in DIRECTIONS:
        raise UserError(f"--to must be one of {', '.join(DIRECTIONS)} (got {to!r})")
    path, payload = read_chosen_translator(path, device)
    try:
        config = TranslatorConfig.from_dict(payload["config"])
        net = build_loaded(lambda: Generator(config), payload[DIRECTIONS[to]])
        # (plain values too: a step "latest" was a ValueError traceback)
        step, info = int(payload.get("step", 0)), dict(payload.get("info", {}))
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise UserError(f"{path}: not a {WHAT} ({type(err).__name__}: {first_line(err)})") from None
    net = net.to(device).eval().requires_grad_(False)
    return TrainedTranslator(net, config, path, step, str(payload.get("run_id", "")),
                             str(payload.get("data_version", "")), info)  # fmt: skip
