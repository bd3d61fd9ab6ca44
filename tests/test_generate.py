"""Latents of `anime-avatar generate`: seeded, truncated, interpolated on the sphere.

The command itself runs end to end in tests/test_orchestration.py, on the generator the pipeline trained.
"""

from __future__ import annotations

import torch

from anime_avatar.gan.inference import latent, slerp


def test_latents_are_seeded_and_truncated():
    assert torch.equal(latent(3, 64), latent(3, 64))
    assert not torch.equal(latent(3, 64), latent(4, 64))
    assert latent(3, 512, truncation=0.5).abs().max() <= 0.5
    a, b = latent(1, 32), latent(2, 32)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    middle = slerp(a, b, 0.5)
    assert abs(middle.norm() - (a.norm() + b.norm()) / 2) < 0.15 * a.norm()
