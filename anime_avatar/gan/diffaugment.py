"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same kind of random, differentiable augmentation is applied to every batch the
discriminator sees, real and fake alike, in both the D and the G step; gradients flow
through it back to the generator, so G never learns to reproduce the augmentations.
Each call draws fresh parameters for every image.

Policies (``train.diffaugment``, comma-separated, applied in the order given):

color
    brightness ``x + U(-0.5, 0.5)``; saturation ``(x - m_c) * U(0, 2) + m_c`` with ``m_c``
    the per-pixel mean over channels; contrast ``(x - m) * U(0.5, 1.5) + m`` with ``m``
    the image mean.
translation
    shift by up to 1/8 of the side (independently in x and y), filling with zeros.
cutout
    zero one rectangle of half the side (``round(H/2) x round(W/2)``) lying wholly inside
    the image, so exactly that many pixels per image are zeroed. (The reference code lets
    the square hang over the border; keeping it inside makes the cut area constant.)

Randomness comes from ``generator`` when given (it must live on ``x``'s device), else from
the global RNG of that device; with the same generator state the output is bit-identical.
Everything is batched tensor ops (gather and masks, no resampling): translated pixels are
exact copies of input pixels, and the backward pass adds no floating-point reordering.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from anime_avatar.core.params import parse_policy

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(x: Tensor, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """One U(low, high) value per image, shaped (N, 1, 1, 1) to broadcast over x."""
    u = torch.rand((x.shape[0], 1, 1, 1), generator=generator, device=x.device, dtype=x.dtype)
    return u * (high - low) + low


def _randint(n: int, high: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """n integers in [0, high) on x's device."""
    return torch.randint(0, high, (n,), generator=generator, device=x.device)


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    x = x + _uniform(x, -0.5, 0.5, generator)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, 0.0, 2.0, generator) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5, generator) + mean  # contrast


def _shift(x: Tensor, shift: Tensor, dim: int) -> Tensor:
    """out[..., i, ...] = x[..., i + shift, ...] along ``dim`` (2 or 3), zero outside the image."""
    size = x.shape[dim]
    src = torch.arange(size, device=x.device) + shift[:, None]  # (N, size)
    inside = (src >= 0) & (src < size)
    src = src.clamp(0, size - 1)
    view = (x.shape[0], 1, size, 1) if dim == 2 else (x.shape[0], 1, 1, size)
    src, inside = src.view(view), inside.view(view)
    return torch.where(inside, x.gather(dim, src.expand_as(x)), torch.zeros((), dtype=x.dtype, device=x.device))


def translation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    n, _, h, w = x.shape
    max_y, max_x = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    shift_y = _randint(n, 2 * max_y + 1, x, generator) - max_y
    shift_x = _randint(n, 2 * max_x + 1, x, generator) - max_x
    return _shift(_shift(x, shift_y, 2), shift_x, 3)


def cutout(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    n, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = _randint(n, h - size_y + 1, x, generator)
    left = _randint(n, w - size_x + 1, x, generator)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size_y)  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size_x)  # (N, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (N, H, W)
    return x * keep[:, None].to(x.dtype)


AUGMENTS: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def diff_augment(
    x: Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None
) -> Tensor:
    """Augment a batch (N, C, H, W) with the comma-separated ``policy``; "" returns ``x`` itself."""
    names = parse_policy(policy)
    if not names:
        return x
    if x.dim() != 4:
        raise ValueError(f"diff_augment expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"diff_augment: generator is on {generator.device}, images on {x.device}")
    for name in names:
        x = AUGMENTS[name](x, generator)
    return x
