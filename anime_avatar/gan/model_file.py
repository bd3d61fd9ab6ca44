"""A trained generator rebuilt from its file (models/generator.pt, read by :mod:`anime_avatar.artifacts.generator`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from anime_avatar.artifacts.generator import GENERATOR, read_generator
from anime_avatar.artifacts.torchfile import mismatched_tensors
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
        state = saved.ema if use_ema else saved.generator
        with torch.device("meta"):  # shapes only: a config asking for a huge net allocates nothing here
            expected = {k: v.shape for k, v in build_generator(config).state_dict().items()}
        if problem := mismatched_tensors(expected, state):
            raise ValueError(f"its weights do not fit its config: {problem}")
        net = build_generator(config)
        net.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise saved.refuse(err) from None
    net = net.to(device).eval().requires_grad_(False)
    return TrainedGenerator(net, config, saved.step, saved.run_id, saved.data_version)
