"""``models/generator.pt``: the trained generator, with everything needed to rebuild and trace it.

Contents (tensors and plain values only, loaded with ``weights_only=True``): ``config``
(the :class:`NetConfig`: architecture, resolution, z_dim, ...), ``ema`` and ``generator``
state dicts, the training ``step``, the MLflow ``run_id`` and the ``data_version`` of the
training set. Readers take the resolution and z_dim from here, never from params.yaml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError
from anime_avatar.gan.nets import NetConfig, build_generator

GENERATOR = Path("models/generator.pt")
WHAT = "generator saved by the train stage"


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


def save_generator(
    path: Path,
    config: NetConfig,
    ema_state: dict[str, torch.Tensor],
    raw_state: dict[str, torch.Tensor],
    step: int,
    run_id: str = "",
    data_version: str = "",
) -> None:
    config_dict: dict[str, Any] = {**asdict(config), "attention": list(config.attention)}
    save_tensors(
        path,
        {"config": config_dict, "ema": ema_state, "generator": raw_state, "step": int(step),
         "run_id": run_id, "data_version": data_version},
    )  # fmt: skip


def load_generator(
    path: Path = GENERATOR, device: torch.device | str = "cpu", use_ema: bool = True
) -> TrainedGenerator:
    """Rebuild the generator saved at ``path`` (EMA weights by default), frozen and in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such generator file (run the train stage first: dvc repro train)")
    payload = load_tensors(path, WHAT, device)
    try:
        raw = payload["config"]
        config = NetConfig(**{**raw, "attention": tuple(raw["attention"])})
        net = build_generator(config)
        net.load_state_dict(payload["ema" if use_ema else "generator"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: not a {WHAT} ({type(err).__name__}: {err})") from None
    net = net.to(device).eval().requires_grad_(False)
    return TrainedGenerator(
        net, config, int(payload.get("step", 0)), str(payload.get("run_id", "")), str(payload.get("data_version", ""))
    )
