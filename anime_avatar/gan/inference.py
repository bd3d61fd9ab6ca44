"""Using a trained generator: latents by seed (with truncation), sampling, latent walks, image grids.

Kept apart from the training loop: evaluation, ``anime-avatar generate`` and the MLflow
model need these and nothing of training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from anime_avatar.core.errors import UserError
from anime_avatar.core.limits import check_seed, check_truncation
from anime_avatar.gan.nets import build_generator
from anime_avatar.nn.images import to_uint8


@torch.no_grad()
def sample(generator: nn.Module, z: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """uint8 (N, 3, H, W) images from latents, in batches, on the generator's device."""
    device = next(generator.parameters()).device
    out = [to_uint8(generator(z[i : i + batch].to(device))).cpu() for i in range(0, len(z), batch)]
    return torch.cat(out)


def latent(seed: int, z_dim: int, truncation: float = 0.0) -> torch.Tensor:
    """The latent of one seed; with ``truncation`` > 0, values beyond ±truncation are redrawn
    (the truncation trick: less variety, cleaner faces). Seed and truncation follow :mod:`anime_avatar.core.limits`
    (LimitError otherwise): every entry point that makes avatars by seed goes through here."""
    seed, truncation = check_seed(seed), check_truncation(truncation)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(z_dim, generator=gen)
    if truncation > 0:
        for _ in range(1000):
            outside = z.abs() > truncation
            if not outside.any():
                break
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
        outside = int((z.abs() > truncation).sum())
        if outside:  # never: check_truncation refuses the truncations that could end here
            raise UserError(f"truncation {truncation} is too small to meet: {outside} latent values of seed {seed} "
                            "stayed outside it after 1000 redraws")  # fmt: skip
    return z


def generate_images(generator: nn.Module, n: int, z_dim: int, seed: int, batch: int) -> np.ndarray:
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


def avatars(generator: nn.Module, seeds: list[int], truncation: float = 0.0) -> torch.Tensor:
    z = torch.stack([latent(s, generator.z_dim, truncation) for s in seeds])
    return sample(generator, z)


def walk(generator: nn.Module, seed_a: int, seed_b: int, steps: int, truncation: float = 0.0) -> torch.Tensor:
    if steps < 2:
        raise UserError("--steps must be at least 2")
    a, b = (latent(s, generator.z_dim, truncation) for s in (seed_a, seed_b))
    z = torch.stack([slerp(a, b, i / (steps - 1)) for i in range(steps)])
    return sample(generator, z)


def plain_generator(generator: nn.Module) -> nn.Module:
    """A copy with spectral-norm parametrizations baked into plain weights: the same function in
    eval mode, and picklable (parametrized modules are not), for MLflow's model format."""
    # A fresh build, not a deepcopy: copies of parametrized modules do not survive un-parametrizing.
    plain = build_generator(generator.cfg)
    plain.load_state_dict({k: v.cpu() for k, v in generator.state_dict().items()})
    plain.eval()
    targets = [(m, list(m.parametrizations.keys())) for m in plain.modules() if parametrize.is_parametrized(m)]
    for module, names in targets:  # listed first: removal swaps each module's class
        for name in names:
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return plain.requires_grad_(False)
