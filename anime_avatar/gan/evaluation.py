"""The GAN's evaluation: FID/KID of a generator's samples against the real faces' features."""

from __future__ import annotations

import numpy as np
import torch

from anime_avatar.core.params import EvalParams
from anime_avatar.gan.inference import generate_images
from anime_avatar.metrics.fid import FidKid, compute_fid_kid


def score_generator(
    generator: torch.nn.Module, z_dim: int, real: np.ndarray, cfg: EvalParams, device: torch.device
) -> tuple[FidKid, np.ndarray]:
    """FID/KID of ``cfg.n_samples`` images of ``generator`` (latents from ``cfg.seed``) against the ``real``
    features, as the evaluate stage scores the trained generator; also returns the images (uint8 NHWC)."""
    fakes = generate_images(generator, cfg.n_samples, z_dim, cfg.seed, cfg.batch_size)
    scores = compute_fid_kid(
        real, fakes, device, kid_subset_size=min(cfg.kid_subset_size, len(real), len(fakes)),
        batch_size=cfg.batch_size, seed=cfg.seed, backend=cfg.inception_backend,
    )  # fmt: skip
    return scores, fakes
