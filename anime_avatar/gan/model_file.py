"""A trained generator rebuilt from its file (models/generator.pt, read by :mod:`anime_avatar.artifacts.generator`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from anime_avatar.artifacts.generator import GENERATOR, read_generator
from anime_avatar.artifacts.torchfile import build_loaded
from anime_avatar.core.architecture import NetConfig
from anime_avatar.gan.nets import build_generator


@dataclass(frozen=True)
class TrainedGenerator:
    """A generator rebuilt from its file, in eval mode, with the facts its file records."""

    net: nn.Module
    config: NetConfig
    step: int
    run_id: str
    data_version: str

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def resolution(self) -> int:
        return self.config.resolution


def load_generator(
    path: Path = GENERATOR, device: torch.device | str = "cpu", use_ema: bool = True
) -> TrainedGenerator:
    """Rebuild the generator saved at ``path`` (EMA weights by default), frozen and in eval mode."""
    saved = read_generator(path, device)
    try:
        config = NetConfig.from_dict(saved.config)
        net = build_loaded(lambda: build_generator(config), saved.ema if use_ema else saved.generator)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise saved.refuse(err) from None
    net = net.to(device).eval().requires_grad_(False)
    return TrainedGenerator(net, config, saved.step, saved.run_id, saved.data_version)
