"""Avatars from a trained generator: by seed, with truncation, and latent walks between seeds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from anime_avatar.errors import UserError
from anime_avatar.layout import GENERATOR
from anime_avatar.registry import CHAMPION
from anime_avatar.training import load_generator, sample

log = logging.getLogger(__name__)


def latent(seed: int, z_dim: int, truncation: float = 0.0) -> torch.Tensor:
    """The latent of one seed; with ``truncation`` > 0, values beyond ±truncation are redrawn
    (the truncation trick: less variety, cleaner faces)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(z_dim, generator=gen)
    if truncation > 0:
        for _ in range(1000):
            outside = z.abs() > truncation
            if not outside.any():
                break
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
    return z


def generate_images(generator: torch.nn.Module, n: int, z_dim: int, seed: int, batch: int) -> np.ndarray:
    """``n`` uint8 NHWC images from latents seeded by ``seed`` (the same seed, the same images): for FID."""
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    return sample(generator, z, batch).permute(0, 2, 3, 1).numpy()


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: stays at the typical norm of Gaussian latents, unlike a straight line."""
    cos = torch.clamp(torch.dot(a, b) / (a.norm() * b.norm()), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def resolve_model(model: str | None, model_name: str) -> torch.nn.Module:
    """A file path or an MLflow model URI; by default the registered ``champion``, else models/generator.pt."""
    if model and Path(model).is_file():
        return load_generator(Path(model))
    if model and ":/" in model:
        return _load_mlflow(model)
    if model:
        raise UserError(
            f"--model {model!r} is neither a file nor an MLflow model URI (models:/NAME@ALIAS, runs:/ID/generator)"
        )
    champion = f"models:/{model_name}@{CHAMPION}"
    try:
        generator = _load_mlflow(champion)
        log.info("using %s", champion)
        return generator
    except UserError:
        log.info("no champion model registered: using %s", GENERATOR)
        return load_generator(GENERATOR)


def _load_mlflow(uri: str) -> torch.nn.Module:
    import mlflow.pytorch

    from anime_avatar.tracking import mlflow_client

    mlflow_client()
    try:
        generator = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as err:  # MLflow raises many types for a missing model or alias
        raise UserError(f"cannot load MLflow model {uri}: {err}") from None
    return generator.eval().requires_grad_(False)


def avatars(generator: torch.nn.Module, seeds: list[int], truncation: float = 0.0) -> torch.Tensor:
    z = torch.stack([latent(s, generator.z_dim, truncation) for s in seeds])
    return sample(generator, z)


def walk(generator: torch.nn.Module, seed_a: int, seed_b: int, steps: int, truncation: float = 0.0) -> torch.Tensor:
    if steps < 2:
        raise UserError("--steps must be at least 2")
    a, b = (latent(s, generator.z_dim, truncation) for s in (seed_a, seed_b))
    z = torch.stack([slerp(a, b, i / (steps - 1)) for i in range(steps)])
    return sample(generator, z)
