"""The translation benchmark's reference: a plain CycleGAN, as the paper describes it.

Written for this project from Zhu, Park, Isola and Efros, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks" (ICCV 2017), section 4 and appendix 7.2:

* G (ResNet generator, after Johnson et al. 2016): ``c7s1-ngf, d2ngf, d4ngf, R4ngf x n_blocks, u2ngf, ungf,
  c7s1-3``: a reflection-padded 7x7 conv, two stride-2 3x3 convs, residual blocks of two reflection-padded
  3x3 convs, two stride-1/2 (transposed) 3x3 convs, a reflection-padded 7x7 conv to RGB and tanh; instance
  norm (no affine) and ReLU after every conv but the last and the second of each residual block (no ReLU
  there, the skip is added after its norm). The paper uses ngf 64 with 6 blocks at 128 px, 9 at 256 px.
* D (70x70 PatchGAN, Isola et al. 2017): ``C64-C128-C256-C512`` 4x4 convs (stride 2, 2, 2, 1) with instance
  norm on all but the first and LeakyReLU(0.2), then a stride-1 4x4 conv to one logit per patch; no spectral
  norm. ``ndf`` is the first width (the paper's 64).
* Least-squares GAN loss (Mao et al. 2017): D minimises ``0.5 * (MSE(D(real), 1) + MSE(D(fake), 0))`` per
  domain, G minimises ``MSE(D(G(x)), 1)``; cycle L1 weight 10 (lambda), identity L1 weight 5 (0.5 lambda,
  the paper's photo <-> painting setting); weights N(0, 0.02); Adam lr 2e-4, betas (0.5, 0.999); batch 1.
* D is updated on a pool of the 50 last generated images (Shrivastava et al. 2017): once the pool is full,
  each new fake is, with probability 1/2, swapped for a random stored one (which D then sees instead).

Left out, because a CPU budget of minutes never reaches them: the paper's constant learning rate for 100
epochs then a linear decay to zero over 100 more (the rate here stays 2e-4), and its resize-to-286 plus
random 256 crop (the benchmark feeds both models the same batches: random images, mirrored at random).
Images are NCHW floats in [-1, 1]; ``a`` is the photo domain, ``b`` the anime domain: ``g_ab`` is photo -> anime.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOL_SIZE = 50
CYCLE_WEIGHT = 10.0
IDENTITY_WEIGHT = 5.0


def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), *_norm_relu(channels),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def build_generator(ngf: int = 64, n_blocks: int = 6) -> nn.Sequential:
    """(N, 3, S, S) in [-1, 1] -> (N, 3, S, S) in [-1, 1], S a multiple of 4."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), *_norm_relu(ngf)]
    for width in (ngf, 2 * ngf):  # d2ngf, d4ngf
        layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), *_norm_relu(2 * width)]
    layers += [ResidualBlock(4 * ngf) for _ in range(n_blocks)]
    for width in (4 * ngf, 2 * ngf):  # u2ngf, ungf
        layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                   *_norm_relu(width // 2)]  # fmt: skip
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def build_discriminator(ndf: int = 64) -> nn.Sequential:
    """(N, 3, S, S) -> (N, 1, S / 8 - 2, S / 8 - 2) logits, one per 70x70 patch (S at least 32)."""
    layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
    for cin, stride in ((ndf, 2), (2 * ndf, 2), (4 * ndf, 1)):  # C128, C256, C512
        layers += [nn.Conv2d(cin, 2 * cin, 4, stride=stride, padding=1), nn.InstanceNorm2d(2 * cin),
                   nn.LeakyReLU(0.2, inplace=True)]  # fmt: skip
    layers.append(nn.Conv2d(8 * ndf, 1, 4, stride=1, padding=1))
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ImagePool:
    """The last ``size`` fakes; :meth:`query` returns what D trains on (the paper's history of generated images)."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.rng, self.images = size, generator, []

    def query(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.rng) < 0.5:
                i = int(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)


def _lsgan(logits: Tensor, target: float) -> Tensor:
    return F.mse_loss(logits, torch.full_like(logits, target))


class PlainCycleGAN:
    """Both generators and both PatchGANs of a CycleGAN and the paper's training step."""

    NETS = ("g_ab", "g_ba", "d_a", "d_b")

    def __init__(self, image_size: int, ngf: int = 64, n_blocks: int = 6, seed: int = 0, ndf: int = 64,
                 batch_size: int = 1, pool_size: int = POOL_SIZE, lr: float = 2e-4) -> None:  # fmt: skip
        if image_size < 32 or image_size % 4:
            raise ValueError(f"the plain CycleGAN needs images of at least 32 px, a multiple of 4, got {image_size}")
        self.image_size, self.batch_size = image_size, batch_size
        torch.manual_seed(seed)
        self.g_ab, self.g_ba = build_generator(ngf, n_blocks), build_generator(ngf, n_blocks)
        self.d_a, self.d_b = build_discriminator(ndf), build_discriminator(ndf)
        for net in (self.g_ab, self.g_ba, self.d_a, self.d_b):
            net.apply(_init)
        betas = (0.5, 0.999)
        self.opt_g = torch.optim.Adam([*self.g_ab.parameters(), *self.g_ba.parameters()], lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam([*self.d_a.parameters(), *self.d_b.parameters()], lr=lr, betas=betas)
        self.rng = torch.Generator().manual_seed(seed)  # one stream for both pools
        self.pool_a, self.pool_b = ImagePool(pool_size, self.rng), ImagePool(pool_size, self.rng)
        self.n_steps = 0

    def state_dict(self) -> dict:
        """Everything training changes, tensors and plain values only: :meth:`load_state_dict` resumes exactly."""
        state = {name: getattr(self, name).state_dict() for name in self.NETS}
        state |= {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": self.rng.get_state()}
        return state | {"pool_a": list(self.pool_a.images), "pool_b": list(self.pool_b.images), "n_steps": self.n_steps}

    def load_state_dict(self, state: dict) -> None:
        for name in self.NETS:
            getattr(self, name).load_state_dict(state[name])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.rng.set_state(state["rng"])
        self.pool_a.images, self.pool_b.images = list(state["pool_a"]), list(state["pool_b"])
        self.n_steps = int(state["n_steps"])

    def _critics_trainable(self, trainable: bool) -> None:
        self.d_a.requires_grad_(trainable)
        self.d_b.requires_grad_(trainable)

    def step(self, a: Tensor, b: Tensor) -> dict[str, float]:
        """One update of both generators, then of both critics, on photos ``a`` and anime faces ``b`` (float
        (N, 3, S, S) in [-1, 1]); returns the losses (loss_g, loss_d, adv, cycle, identity)."""
        for net in (self.g_ab, self.g_ba, self.d_a, self.d_b):
            net.train()
        self._critics_trainable(False)
        fake_b, fake_a = self.g_ab(a), self.g_ba(b)
        cycle = F.l1_loss(self.g_ba(fake_b), a) + F.l1_loss(self.g_ab(fake_a), b)
        identity = F.l1_loss(self.g_ab(b), b) + F.l1_loss(self.g_ba(a), a)
        adv = _lsgan(self.d_b(fake_b), 1.0) + _lsgan(self.d_a(fake_a), 1.0)
        loss_g = adv + CYCLE_WEIGHT * cycle + IDENTITY_WEIGHT * identity
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        self._critics_trainable(True)
        loss_d = torch.zeros(())
        for critic, real, fake, pool in ((self.d_a, a, fake_a, self.pool_a), (self.d_b, b, fake_b, self.pool_b)):
            loss_d = loss_d + 0.5 * (_lsgan(critic(real), 1.0) + _lsgan(critic(pool.query(fake)), 0.0))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.n_steps += 1
        losses = {"loss_g": loss_g, "loss_d": loss_d, "adv": adv, "cycle": cycle, "identity": identity}
        return {name: float(value.detach()) for name, value in losses.items()}

    @torch.inference_mode()
    def translate(self, images_uint8_nhwc: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """uint8 (N, S, S, 3) photos -> uint8 (N, S, S, 3) anime faces (``g_ab``)."""
        images = np.asarray(images_uint8_nhwc)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"translate expects uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
        self.g_ab.eval()  # instance norm without running statistics: the same function as in training
        outs = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
            y = self.g_ab(x.float().div(127.5).sub(1.0))
            outs.append(y.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
        return torch.cat(outs).numpy()
