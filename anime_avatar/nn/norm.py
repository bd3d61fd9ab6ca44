"""Per-channel feature statistics and the normalisation operators built on them, for feature maps (N, C, H, W).

Used by the stylizer's fusion nets (AdaIN, SANet's normalised queries and keys), its losses and its evaluation.
"""

from __future__ import annotations

import torch

EPS = 1e-5  # inside the std's square root: dead (all-zero) ReLU channels keep a finite gradient


def mean_std(features: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial mean and standard deviation, each (N, C, 1, 1)."""
    mean = features.mean(dim=(2, 3), keepdim=True)
    var = features.var(dim=(2, 3), keepdim=True, unbiased=False)
    return mean, (var + eps).sqrt()


def mean_variance_norm(features: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Each channel normalised to zero mean and unit standard deviation over its positions."""
    mean, std = mean_std(features, eps)
    return (features - mean) / std


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Adaptive instance normalisation (Huang & Belongie 2017): the normalised content with the style's
    per-channel mean and standard deviation."""
    style_mean, style_std = mean_std(style, eps)
    return mean_variance_norm(content, eps) * style_std + style_mean
