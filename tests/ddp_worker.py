"""Run under torchrun by tests/test_training.py: a few DDP steps, then each rank saves its weights.

With a third argument ``signals``, each rank sends itself SIGTERM as it starts a step of its own (rank 1 its 3rd,
rank 0 its 5th): the signal reaching the ranks at different steps, as it may when torchrun forwards it to them.
"""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

import anime_avatar.gan.training as training
from anime_avatar.core.params import load_params
from anime_avatar.nn.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model": {"arch": "sagan", "channels": 8, "attention": [16], "z_dim": 16},
    "train": {"steps": 3, "batch_size": 8, "device": "cpu", "log_every": 1, "checkpoint_every": 100},
}
SIGNAL_AFTER_STEPS = {0: 4, 1: 2}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    info = DistInfo.from_env()
    changes = TINY
    if sys.argv[2:] == ["signals"]:
        changes = {**TINY, "train": {**TINY["train"], "steps": 8}}
        step_alone = training.train_step

        def step_then_signal(state, *args, **kwargs):
            if state.step == SIGNAL_AFTER_STEPS[info.rank]:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_alone(state, *args, **kwargs)

        training.train_step = step_then_signal
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    params = load_params(ROOT / "params.yaml", changes)
    state = training.train(params.model, params.train, images, out / "last.pt", info=info)
    torch.save(
        {"generator": state.generator.state_dict(), "discriminator": state.discriminator.state_dict(),
         "ema": state.ema.model.state_dict(), "step": state.step},
        out / f"rank{info.rank}.pt",
    )  # fmt: skip
