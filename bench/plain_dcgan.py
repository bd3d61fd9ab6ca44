"""The quality benchmark's reference: a plain DCGAN in the shape of PyTorch's DCGAN tutorial.

Written for this project from the tutorial's description (pytorch.org/tutorials/beginner/dcgan_faces_tutorial,
after Radford et al. 2015), for 64x64 images:

* G: latent (100) -> ConvTranspose2d 4x4 to 8c x 4x4, then ConvTranspose2d(4, stride 2) to 4c, 2c, c and 3
  channels (8, 16, 32, 64 px); BatchNorm + ReLU after every layer but the last, tanh at the end.
* D: Conv2d(4, stride 2) from 3 to c, 2c, 4c, 8c channels (32, 16, 8, 4 px) with LeakyReLU(0.2) and BatchNorm
  on all but the first, then a 4x4 conv to one logit.
* Weights N(0, 0.02), BatchNorm scales N(1, 0.02) and zero shifts; binary cross-entropy with labels 1 (real) and
  0 (fake), the generator's loss -log D(G(z)); Adam lr 2e-4, betas (0.5, 0.999), batch 64; no weight average,
  no augmentation, no spectral norm.

The tutorial ends D with a sigmoid and uses ``BCELoss``; here D returns the logit and the loss is
``BCEWithLogitsLoss``: the same function, computed without the sigmoid's underflow. Samples are drawn as the
tutorial draws them: the generator stays in training mode, so BatchNorm uses each sampling batch's statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Z_DIM = 100
RESOLUTION = 64


def _up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
    conv = nn.ConvTranspose2d(cin, cout, 4, stride=1 if first else 2, padding=0 if first else 1, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _down(cin: int, cout: int, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    return [*layers, nn.LeakyReLU(0.2, inplace=True)]


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_generator(channels: int = 32, z_dim: int = Z_DIM) -> nn.Sequential:
    """(N, z_dim) latents -> (N, 3, 64, 64) images in [-1, 1]."""
    c = channels
    net = nn.Sequential(
        nn.Unflatten(1, (z_dim, 1, 1)),
        *_up(z_dim, 8 * c, first=True),
        *_up(8 * c, 4 * c),
        *_up(4 * c, 2 * c),
        *_up(2 * c, c),
        nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1, bias=False),
        nn.Tanh(),
    )
    net.apply(_init)
    return net


def build_discriminator(channels: int = 32) -> nn.Sequential:
    """(N, 3, 64, 64) images -> (N,) real/fake logits."""
    c = channels
    net = nn.Sequential(
        *_down(3, c, norm=False),
        *_down(c, 2 * c),
        *_down(2 * c, 4 * c),
        *_down(4 * c, 8 * c),
        nn.Conv2d(8 * c, 1, 4, bias=False),
        nn.Flatten(0),
    )
    net.apply(_init)
    return net


class PlainDCGAN:
    """The tutorial's training loop over uint8 (N, 64, 64, 3) faces, advanced ``steps`` at a time."""

    def __init__(self, faces: np.ndarray, channels: int = 32, batch_size: int = 64, seed: int = 0) -> None:
        if faces.ndim != 4 or faces.shape[1:] != (RESOLUTION, RESOLUTION, 3):
            raise ValueError(f"the plain DCGAN trains on (N, 64, 64, 3) uint8 faces, got {faces.shape}")
        if len(faces) < batch_size:
            raise ValueError(f"{len(faces)} faces are fewer than one batch of {batch_size}")
        torch.manual_seed(seed)
        self.z_dim = Z_DIM
        self.generator = build_generator(channels)
        self.discriminator = build_discriminator(channels)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.faces = torch.from_numpy(np.ascontiguousarray(faces))
        self.batch_size = batch_size
        self.rng = torch.Generator().manual_seed(seed)
        self.step = 0
        self._order: list[Tensor] = []

    def _next_batch(self) -> Tensor:
        if not self._order:  # a new epoch: a fresh shuffle, the last partial batch dropped
            order = torch.randperm(len(self.faces), generator=self.rng)
            self._order = list(order[: len(order) // self.batch_size * self.batch_size].split(self.batch_size))[::-1]
        batch = self.faces[self._order.pop()]
        return batch.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    def train(self, steps: int) -> dict[str, float]:
        """``steps`` updates of D then G; the last step's losses."""
        g, d = self.generator.train(), self.discriminator.train()
        loss_d = loss_g = torch.zeros(())
        for _ in range(steps):
            real = self._next_batch()
            n = len(real)
            ones, zeros = torch.ones(n), torch.zeros(n)
            fake = g(torch.randn(n, self.z_dim, generator=self.rng))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d = F.binary_cross_entropy_with_logits(d(real), ones) + F.binary_cross_entropy_with_logits(
                d(fake.detach()), zeros
            )
            loss_d.backward()
            self.opt_d.step()
            self.opt_g.zero_grad(set_to_none=True)
            loss_g = F.binary_cross_entropy_with_logits(d(fake), ones)
            loss_g.backward()
            self.opt_g.step()
            self.step += 1
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}
