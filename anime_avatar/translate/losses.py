"""The translator's own losses (CycleGAN's and U-GAT-IT's), each a scalar mean, computed in float32.

* adversarial: least squares (``lsgan`` of :mod:`anime_avatar.nn.losses`), as CycleGAN and U-GAT-IT use: its
  gradient does not vanish for fakes the critic already rejects;
* cycle: ``L1(g_ba(g_ab(a)), a)``: with unpaired data, the only thing that ties an output to its input;
* identity: ``L1(g_ab(b), b)``: an image already in the target domain should pass unchanged (keeps colours);
* cam: the generator's auxiliary classifier must tell its source domain (logit -> 1) from its target domain
  (logit -> 0): what it learns to look at is the attention;
* mask prior: how far the share of a translation drawn through AttentionGAN's mask (rather than copied from
  the input) falls short of a floor. Copying meets the cycle and identity losses at once, so without it the
  mask collapses to "copy everything" (README); GANimation (Pumarola et al. 2018) regularises its attention
  mask for the same reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cycle_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """Mean absolute error between an image and its round trip through both generators."""
    return F.l1_loss(reconstructed.float(), original.float())


def identity_loss(translated: Tensor, original: Tensor) -> Tensor:
    """Mean absolute error between a target-domain image and its translation into the domain it is in already."""
    return F.l1_loss(translated.float(), original.float())


def cam_loss(logit_source: Tensor, logit_target: Tensor) -> Tensor:
    """``BCE(logit_source, 1) + BCE(logit_target, 0)`` with logits: a generator's classifier logits on inputs from
    its source domain should say 1, on inputs already in its target domain 0 (U-GAT-IT's G_cam_loss)."""
    source, target = logit_source.float(), logit_target.float()
    return (F.binary_cross_entropy_with_logits(source, torch.ones_like(source))
            + F.binary_cross_entropy_with_logits(target, torch.zeros_like(target)))  # fmt: skip


def mask_prior_loss(mask: Tensor, min_drawn: float = 1.0) -> Tensor:
    """How far each translation's drawn share (the mean of its mask: 1 = drawn content, 0 = the input's pixel)
    falls short of ``min_drawn``, averaged over the batch: 0 once every image is drawn at least that much.
    With ``min_drawn`` 1 it is the mean of ``1 - mask`` (GANimation's prior), which pushed the mask from
    "copy everything" to "draw everything"; below 1 the rest is free to be copied (README)."""
    drawn = mask.float().mean(dim=tuple(range(1, mask.dim())))
    return torch.relu(min_drawn - drawn).mean()
