"""How the translator's AttentionGAN mask evolves under the mask prior: the drawn share (the mean mask) of 16
fixed photos (photo -> anime) and anime faces (anime -> photo) every 50 steps, with the step's losses.

Trains the pipeline's translator (params.yaml's translate section, ``cam+mask``) on selfie2anime's trainA and
trainB at 64 px, 16 channels, batch 4, one thread. The runs in bench/reported/translate/mask-prior/:

    OMP_NUM_THREADS=1 .venv/bin/python bench/mask_probe.py --mask-weight 2 --min-drawn 1 --steps 600
    OMP_NUM_THREADS=1 .venv/bin/python bench/mask_probe.py --mask-weight 5 --min-drawn 1 --steps 600
    OMP_NUM_THREADS=1 .venv/bin/python bench/mask_probe.py --mask-weight 5 --min-drawn 0.75 --steps 450
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anime_avatar.core.params import load_params  # noqa: E402
from anime_avatar.translate.data import load_domain  # noqa: E402
from anime_avatar.translate.training import TranslateBatches, build_state, train_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/photos/selfie2anime")
    parser.add_argument("--mask-weight", type=float, required=True)
    parser.add_argument("--min-drawn", type=float, required=True, help="1: the plain prior (mean of 1 - mask)")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    changes = {"image_size": 64, "channels": 16, "batch_size": 4, "attention": "cam+mask", "device": "cpu",
               "mask_weight": args.mask_weight, "mask_min_drawn": args.min_drawn}  # fmt: skip
    cfg = load_params(ROOT / "params.yaml").translate.model_copy(update=changes)
    batches = TranslateBatches(load_domain(str(args.data / "trainA"), "photos", 64, 0),
                               load_domain(str(args.data / "trainB"), "anime", 64, 0))  # fmt: skip
    state = build_state(cfg, torch.device("cpu"))
    photos, anime = batches.fixed(16)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        losses = train_step(state, cfg, batches)
        if step % 50 == 0:
            state.nets.eval()
            with torch.no_grad():
                drawn_ab = state.nets.g_ab(photos).mask.mean().item()
                drawn_ba = state.nets.g_ba(anime).mask.mean().item()
            state.nets.train()
            print(f"step {step} drawn photo->anime {drawn_ab:.3f} anime->photo {drawn_ba:.3f}  "
                  + " ".join(f"{k} {v:.3f}" for k, v in losses.items())
                  + f"  {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
