"""Generators and discriminators: DCGAN and SAGAN at 32, 64, 128 or 256 pixels.

Both architectures grow from a 4x4 map, doubling the resolution once per block until
``resolution``; the discriminator mirrors that path back down to 4x4. Widths follow
the resolution: ``channels`` at the output resolution, doubled at every halving and
capped at ``max_channels`` (``width(r) = min(channels * resolution // r, max_channels)``).

dcgan (Radford et al. 2015)
    G: z -> 4x4 transposed conv, then one ``ConvTranspose2d(4, stride 2)`` + BatchNorm + ReLU
    per block, a 3x3 conv to RGB and tanh.
    D: a 3x3 conv from RGB with LeakyReLU(0.2) and no normalisation, then one
    ``Conv2d(4, stride 2)`` + GroupNorm(1 group) + LeakyReLU(0.2) per block and a 4x4
    conv to one logit. GroupNorm with a single group is the per-sample "layer norm"
    that the WGAN-GP paper recommends instead of BatchNorm: it normalises each image on
    its own, so the gradient penalty (which needs D's output for one sample to depend on
    that sample alone) stays valid, and it is just as stable with bce and hinge losses.
    Weights: N(0, 0.02) for convs, N(1, 0.02) for norm scales, zero biases (as in the paper).

sagan (Zhang et al. 2018, with BigGAN-style residual blocks, Brock et al. 2018)
    Spectral norm on every conv and linear layer of G and D; G keeps BatchNorm.
    G: z -> linear -> 4x4, then residual up-blocks (BN, ReLU, nearest x2, 3x3 conv, BN,
    ReLU, 3x3 conv; 1x1 conv shortcut), BN + ReLU + 3x3 conv to RGB and tanh.
    D: a 3x3 conv from RGB, then residual down-blocks (ReLU, 3x3 conv, ReLU, 3x3 conv widening,
    2x2 average pool; pooled 1x1 conv shortcut), ReLU, sum over positions, linear.
    A self-attention block follows the layer that produces every resolution listed in
    ``attention``, in G and in D. Attention at r costs O(r^4 / 4) memory per image:
    fine up to 64, heavy at 128 and above.
    Weights: orthogonal (gain 1) for convs and linears before spectral norm, zero biases
    (BigGAN's default); the attention gamma starts at 0 so every attention block starts
    out as the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anime_avatar.core.architecture import BASE, RESOLUTIONS, NetConfig, net_config
from anime_avatar.nn.layers import spectral_norm_init

__all__ = ["BASE", "RESOLUTIONS", "NetConfig", "net_config", "build_discriminator", "build_generator"]


# --------------------------------------------------------------------------- layers


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN paper init: N(0, 0.02) weights, N(1, 0.02) norm scales, zero biases."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class SelfAttention(nn.Module):
    """SAGAN self-attention with BigGAN's 2x2 max-pooled keys and values.

    ``out = x + gamma * o(v @ softmax(q^T k))`` where q, k are 1x1 convs to C/8 channels,
    v a 1x1 conv to C/2 channels and o a 1x1 conv back to C. gamma starts at 0, so the
    block starts as the identity and learns how much non-local context to mix in.
    """

    def __init__(self, channels: int, sn: bool = True) -> None:
        super().__init__()
        wrap = spectral_norm_init if sn else (lambda layer: layer)
        inner, value = max(channels // 8, 1), max(channels // 2, 1)
        self.query = wrap(nn.Conv2d(channels, inner, 1, bias=False))
        self.key = wrap(nn.Conv2d(channels, inner, 1, bias=False))
        self.value = wrap(nn.Conv2d(channels, value, 1, bias=False))
        self.out = wrap(nn.Conv2d(value, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        q = self.query(x).flatten(2)  # (n, c/8, hw)
        k = self.key(x)
        v = self.value(x)
        if h > 1 and w > 1:  # pooled keys/values: 4x fewer positions to attend to
            k, v = F.max_pool2d(k, 2), F.max_pool2d(v, 2)
        k, v = k.flatten(2), v.flatten(2)  # (n, c/8, hw/4), (n, c/2, hw/4)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (n, hw, hw/4): each query over all keys
        o = (v @ attn.transpose(1, 2)).view(n, -1, h, w)  # (n, c/2, h, w)
        return x + self.gamma * self.out(o)


class _GBlock(nn.Module):
    """Residual up-block (BigGAN): BN-ReLU-up-conv3-BN-ReLU-conv3, plus conv1-up shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = spectral_norm_init(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.shortcut = spectral_norm_init(nn.Conv2d(cin, cout, 1)) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        # A 1x1 conv commutes with nearest upsampling: convolve first, on 4x fewer pixels.
        return h + F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")


class _DBlock(nn.Module):
    """Residual down-block (BigGAN, pre-activation): ReLU-conv3-ReLU-conv3-avgpool, plus pool-conv1.

    The hidden width is ``cin`` rather than BigGAN's ``cout``: the mirror image of ``_GBlock``
    (whose hidden width is its narrower ``cout``), and half the weights and FLOPs in the first conv.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = spectral_norm_init(nn.Conv2d(cin, cin, 3, padding=1))
        self.conv2 = spectral_norm_init(nn.Conv2d(cin, cout, 3, padding=1))
        self.shortcut = spectral_norm_init(nn.Conv2d(cin, cout, 1)) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        # Average pooling commutes with a 1x1 conv: pool first, then convolve fewer pixels.
        return F.avg_pool2d(h, 2) + self.shortcut(F.avg_pool2d(x, 2))


# --------------------------------------------------------------------------- networks


class Generator(nn.Module):
    """``G(z)``: (N, z_dim) latents -> (N, 3, resolution, resolution) images in [-1, 1]."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.resolution = cfg.resolution
        sagan = cfg.arch == "sagan"
        res = cfg.resolutions
        w0 = cfg.width(BASE)
        if sagan:
            self.stem = nn.Sequential(
                spectral_norm_init(nn.Linear(cfg.z_dim, w0 * BASE * BASE)), nn.Unflatten(1, (w0, BASE, BASE))
            )
        else:
            self.stem = nn.Sequential(
                nn.Unflatten(1, (cfg.z_dim, 1, 1)),
                nn.ConvTranspose2d(cfg.z_dim, w0, BASE, bias=False),
                nn.BatchNorm2d(w0),
                nn.ReLU(inplace=True),
            )
        layers: list[nn.Module] = []
        if sagan and BASE in cfg.attention:
            layers.append(SelfAttention(w0))
        for r_in, r_out in zip(res[:-1], res[1:], strict=True):
            cin, cout = cfg.width(r_in), cfg.width(r_out)
            if sagan:
                layers.append(_GBlock(cin, cout))
                if r_out in cfg.attention:
                    layers.append(SelfAttention(cout))
            else:
                layers += [
                    nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
        self.blocks = nn.Sequential(*layers)
        wr = cfg.width(cfg.resolution)
        if sagan:
            self.to_rgb = nn.Sequential(
                nn.BatchNorm2d(wr), nn.ReLU(), spectral_norm_init(nn.Conv2d(wr, 3, 3, padding=1)), nn.Tanh()
            )
        else:
            self.to_rgb = nn.Sequential(nn.Conv2d(wr, 3, 3, padding=1), nn.Tanh())
            self.apply(_dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"generator expects latents of shape (N, {self.z_dim}), got {tuple(z.shape)}")
        return self.to_rgb(self.blocks(self.stem(z)))


class Discriminator(nn.Module):
    """``D(x)``: (N, 3, resolution, resolution) images -> (N,) real/fake logits."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.resolution = cfg.resolution
        sagan = cfg.arch == "sagan"
        res = cfg.resolutions[::-1]  # resolution, ..., 8, 4
        wr = cfg.width(cfg.resolution)
        layers: list[nn.Module] = []
        if sagan:
            layers.append(spectral_norm_init(nn.Conv2d(3, wr, 3, padding=1)))
            if cfg.resolution in cfg.attention:
                layers.append(SelfAttention(wr))
        else:  # no normalisation on the first layer (DCGAN)
            layers += [nn.Conv2d(3, wr, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        for r_in, r_out in zip(res[:-1], res[1:], strict=True):
            cin, cout = cfg.width(r_in), cfg.width(r_out)
            if sagan:
                layers.append(_DBlock(cin, cout))
                if r_out in cfg.attention:
                    layers.append(SelfAttention(cout))
            else:
                layers += [
                    nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False),
                    nn.GroupNorm(1, cout),
                    nn.LeakyReLU(0.2, inplace=True),
                ]
        self.blocks = nn.Sequential(*layers)
        w0 = cfg.width(BASE)
        if sagan:
            self.head = spectral_norm_init(nn.Linear(w0, 1))
        else:
            self.head = nn.Conv2d(w0, 1, BASE)
            self.apply(_dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(
                f"discriminator expects images of shape (N, 3, {self.resolution}, {self.resolution}), "
                f"got {tuple(x.shape)}"
            )
        h = self.blocks(x)
        if self.cfg.arch == "sagan":
            return self.head(F.relu(h).sum(dim=(2, 3))).squeeze(1)
        return self.head(h).flatten()


def build_generator(cfg: NetConfig) -> Generator:
    """The generator for ``cfg`` (weights initialised as documented in this module)."""
    return Generator(cfg)


def build_discriminator(cfg: NetConfig) -> Discriminator:
    """The discriminator for ``cfg`` (weights initialised as documented in this module)."""
    return Discriminator(cfg)
