"""Losses of style transfer: pure functions of feature maps (N, C, H, W), scalar results, batch-averaged.

Conventions, chosen so one set of weights serves every layer, network and image size:

* :func:`gram_matrix` divides by C*H*W (Gatys et al. use 4 C^2 H^2 W^2 inside the loss). A Gram entry is
  then a mean product of two channels over C, and its size hardly depends on the layer's width or the
  image's size.
* Gatys' per-layer weights are *relative* (:func:`relative_weights`): each layer's weight is divided by
  its target's size (``||G_target||^2`` for style, ``mean(F_target^2)`` for content), so every term is a
  relative error of order 1. Raw squared Gram distances span seven orders of magnitude across layers and
  between the plain and softmax variants (measured at 256 px), so absolute weights would need retuning
  for every layer set, temperature and size.
* :func:`softmax_transform` is scaled to mean 1 (the paper's plain softmax has mean 1/(CHW), about 1e-6
  at 256 px, which would push every loss to about 1e-12).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from anime_avatar.nn.norm import mean_std


def softmax_transform(features: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over all C*H*W entries of each map, times C*H*W (Wang, Li & Vasconcelos, CVPR 2021).

    Inception and ResNet activations are peaky: most entries are zero or tiny and a few are tens of times
    the mean, so a Gram matrix of them is dominated by those few peaks, and matching it moves a few pixels
    a lot and leaves the rest alone (the poor stylisation of non-VGG networks). exp(x/T) lifts the zeros to
    one floor and compresses the range; gradients then reach every position. Larger T is flatter (T -> inf:
    a constant map, no signal); at T=1 shallow Inception layers get *peakier* (measured: the top 1% of
    entries held 32-47% of the mass), so the default is T=4.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, c, h, w = features.shape
    flat = F.softmax(features.reshape(n, -1) / temperature, dim=1)
    return (flat * (c * h * w)).reshape(n, c, h, w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of two feature maps (mean over every entry)."""
    return F.mse_loss(features, target)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Channel co-activations G = F F^T / (C H W), shape (N, C, C)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def gram_distance(gram: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance ||G - T||_F^2, averaged over the batch (``target`` may have batch 1)."""
    return (gram - target).square().sum(dim=(-2, -1)).mean()


def style_loss(
    grams: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], weights: Mapping[str, float]
) -> torch.Tensor:
    """Sum over layers of weight * ||G_l - T_l||_F^2."""
    missing = sorted(set(weights) - set(grams))
    if missing:
        raise KeyError(f"no Gram matrix for style layer(s) {missing}")
    total = torch.zeros((), device=next(iter(grams.values())).device)
    for name, w in weights.items():
        total = total + w * gram_distance(grams[name], targets[name])
    return total


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Squared total variation: mean squared difference of vertical plus of horizontal neighbours.

    Squared rather than absolute: smooth, so L-BFGS's curvature model holds; it removes the
    high-frequency noise that optimising pixels through a strided network produces.
    """
    dh = images[..., 1:, :] - images[..., :-1, :]
    dw = images[..., :, 1:] - images[..., :, :-1]
    return dh.square().mean() + dw.square().mean()


def relative_weights(
    content_targets: Mapping[str, torch.Tensor],
    style_grams: Mapping[str, torch.Tensor],
    style_weights: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-layer weights that make each term a relative error: 1/mean(F^2) (content), w/||G||^2 (style)."""
    content = {name: 1.0 / float(t.square().mean().clamp_min(1e-12)) for name, t in content_targets.items()}
    style = {
        name: (style_weights or {}).get(name, 1.0) / float(g.square().sum(dim=(-2, -1)).mean().clamp_min(1e-12))
        for name, g in style_grams.items()
    }
    return content, style


def mean_std_loss(
    features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], layers: tuple[str, ...]
) -> torch.Tensor:
    """Sum over layers of MSE(means) + MSE(stds): the feed-forward nets' style loss (AdaIN, SANet).

    It is the statistic AdaIN (:func:`anime_avatar.nn.norm.adain`) transfers, which keeps the AdaIN / attention
    comparison fair.
    """
    total = torch.zeros((), device=features[layers[0]].device)
    for name in layers:
        mean, std = mean_std(features[name])
        target_mean, target_std = mean_std(targets[name])
        total = total + F.mse_loss(mean, target_mean.expand_as(mean)) + F.mse_loss(std, target_std.expand_as(std))
    return total
