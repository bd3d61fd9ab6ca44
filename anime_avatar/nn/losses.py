"""Adversarial losses and the WGAN-GP gradient penalty, shared by the methods: the GAN picks one with
``train.loss``; the stylizer's patch discriminator (``stylize.adversarial_weight``) uses hinge; the translator
least squares (LSGAN, Mao et al. 2017, as CycleGAN and U-GAT-IT).

=========  =============================================  ==========================
kind       discriminator                                  generator
=========  =============================================  ==========================
bce        BCE-with-logits, real -> 1, fake -> 0          softplus(-fake), i.e. the
           = softplus(-real) + softplus(fake)             non-saturating loss
hinge      relu(1 - real) + relu(1 + fake)                -fake
wgan-gp    fake - real (+ ``gradient_penalty``)           -fake
lsgan      (real - 1)^2 + fake^2                          (fake - 1)^2
=========  =============================================  ==========================

Each term is a mean over the batch; the two discriminator terms are summed. lsgan computes in float32 whatever
the logits' precision (the translator's critics may run under bf16 autocast).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("bce", "hinge", "wgan-gp", "lsgan")


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"the adversarial loss must be one of {', '.join(LOSSES)} (got {kind!r})")


def d_loss(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss (scalar) from its logits on a real and a fake batch."""
    _check(kind)
    if kind == "bce":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if kind == "lsgan":
        return (real_logits.float() - 1.0).square().mean() + fake_logits.float().square().mean()
    return fake_logits.mean() - real_logits.mean()  # wgan-gp: negated Wasserstein estimate


def g_loss(kind: str, fake_logits: Tensor) -> Tensor:
    """Generator loss (scalar) from the discriminator's logits on a fake batch."""
    _check(kind)
    if kind == "bce":
        return F.softplus(-fake_logits).mean()  # = BCE(fake, 1): non-saturating
    if kind == "lsgan":
        return (fake_logits.float() - 1.0).square().mean()
    return -fake_logits.mean()


def gradient_penalty(
    D: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    weight: float = 10.0,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``weight * mean((||grad_x D(x_hat)||_2 - 1)^2)``.

    ``x_hat`` mixes each real image with its fake partner at a uniform random ``alpha``
    (drawn from ``generator`` when given, else the global RNG). The graph of the
    gradient is kept (``create_graph=True``) so that the penalty trains D. Neither
    ``real`` nor ``fake`` receives gradients. D must treat samples independently (no
    BatchNorm), or the per-sample gradient norm is meaningless.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    n = real.shape[0]
    alpha = torch.rand((n,) + (1,) * (real.dim() - 1), generator=generator, device=real.device, dtype=real.dtype)
    x_hat = torch.lerp(fake.detach(), real.detach(), alpha).requires_grad_(True)  # alpha*real + (1-alpha)*fake
    out = D(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    # The small epsilon keeps the sqrt differentiable where a gradient is exactly zero.
    norm = torch.sqrt(grad.flatten(1).square().sum(dim=1) + 1e-12)
    return weight * (norm - 1.0).square().mean()
