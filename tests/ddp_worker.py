"""Run under torchrun by tests/test_training.py: a few DDP steps, then each rank saves its weights."""

import sys
from pathlib import Path

import numpy as np
import torch

from anime_avatar.core.params import load_params
from anime_avatar.gan.training import train
from anime_avatar.nn.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model": {"arch": "sagan", "channels": 8, "attention": [16], "z_dim": 16},
    "train": {"steps": 3, "batch_size": 8, "device": "cpu", "log_every": 1, "checkpoint_every": 100},
}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    info = DistInfo.from_env()
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    params = load_params(ROOT / "params.yaml", TINY)
    state = train(params.model, params.train, images, out / "last.pt", info=info)
    torch.save(
        {"generator": state.generator.state_dict(), "discriminator": state.discriminator.state_dict(),
         "ema": state.ema.model.state_dict(), "step": state.step},
        out / f"rank{info.rank}.pt",
    )  # fmt: skip
