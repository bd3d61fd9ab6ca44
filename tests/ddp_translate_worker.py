"""Run under torchrun by tests/test_translate_training.py: a few translator steps over N processes (or one, run
by python), then each rank saves its weights and history."""

import sys
from pathlib import Path

import numpy as np
import torch

from anime_avatar.core.params import load_params
from anime_avatar.nn.distributed import DistInfo
from anime_avatar.translate.training import TranslateBatches, train_translator

ROOT = Path(__file__).resolve().parents[1]
TINY = {"translate": {"image_size": 16, "channels": 4, "n_blocks": 2, "batch_size": 4, "steps": 3, "device": "cpu",
                      "threads": 1, "log_every": 1, "checkpoint_every": 100, "amp": False}}  # fmt: skip
# amp off: under bfloat16 autocast two half batches round differently from one whole batch, and Adam's first step
# (about lr x the gradient's sign) turns that rounding into 2e-4 differences on weights whose gradients nearly cancel

if __name__ == "__main__":
    out = Path(sys.argv[1])
    info = DistInfo.from_env()
    rng = np.random.default_rng(0)
    photos, anime = (rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8) for _ in range(2))
    cfg = load_params(ROOT / "params.yaml", TINY).translate
    state = train_translator(cfg, TranslateBatches(photos, anime), out / f"last-{info.world_size}.pt", info=info)
    torch.save({"nets": state.nets.state_dict(), "history": state.history, "step": state.step},
               out / f"world{info.world_size}-rank{info.rank}.pt")  # fmt: skip
