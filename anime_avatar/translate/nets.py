"""The translator's networks: two attention generators (photo -> anime, anime -> photo) and two PatchGAN critics.

Generator (U-GAT-IT, Kim et al., ICLR 2020, with AttentionGAN's mask, Tang et al.)::

    x ─► encoder ─► res blocks ─► CAM ─► AdaLIN res blocks ─► upsampling ─┬► tanh: content ─┐
                                   └► logit, heatmap                        └► sigmoid: mask ─┴► output

    output = mask * content + (1 - mask) * x

* encoder: a reflection-padded 7x7 conv, then ``n_down`` stride-2 3x3 convs doubling the width, each with
  instance norm and ReLU;
* ``n_blocks`` residual blocks at the bottleneck: the first half before the attention, the rest after it.
  U-GAT-IT puts ``n_blocks`` on each side; half as many keeps a CPU training step affordable;
* CAM (class activation map attention): an auxiliary classifier says whether its input comes from the
  generator's source domain, from globally average- and max-pooled features (a bias-free ``Linear(C, 1)``
  each). Its weights say which channels make that decision; multiplying the feature maps by them,
  channel-wise, stresses what makes an image a photo (or an anime face), which the decoder then changes
  most. A 1x1 conv merges the two re-weighted maps back to C channels; their channel sum is the heatmap;
* AdaLIN: the decoder's residual blocks normalise with a learnt mix ``rho`` of instance norm (keeps the
  content's layout, right for texture and colour) and layer norm (whole-image statistics, lets shapes
  change), scaled and shifted by gamma and beta that an MLP predicts from the attended features: how much
  shape the domain change needs is learnt, not fixed. ``rho`` is kept in [0, 1] (:func:`clip_rho_`);
* upsampling: nearest x2 then a 3x3 conv (a transposed conv leaves checkerboard artefacts), normalised by
  LIN (U-GAT-IT's ILN: the same mix, with learnt rather than predicted gamma and beta) when CAM is on;
* mask (AttentionGAN): the output conv has a fourth channel, a mask in [0, 1] through a sigmoid; the
  result is ``mask * content + (1 - mask) * x``, so what need not change (background, clothes) is the
  input's own pixels rather than a re-drawing of them.

``attention="none"`` is the same network without CAM, AdaLIN, LIN and mask (instance norm everywhere): the
ablation. Images are NCHW in [-1, 1] on both sides.

Discriminator: a PatchGAN (Isola et al. 2017), 4x4 convs with spectral norm and LeakyReLU(0.2), no
normalisation; ``disc_layers`` stride-2 convs then two stride-1 ones, giving a map of logits, one per
overlapping patch (70x70 pixels with 3 stride-2 layers): it judges texture, where photo and anime differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anime_avatar.nn.layers import spectral_norm_init

ATTENTION_MODES = ("cam+mask", "cam", "mask", "none")
EPS = 1e-5


@dataclass(frozen=True)
class TranslatorConfig:
    """The shape of a translator: everything needed to rebuild its nets from a state dict."""

    image_size: int = 64
    channels: int = 32  # generator width at full resolution, doubled at each downsampling
    n_blocks: int = 4  # residual blocks at the bottleneck (half before the attention, half after)
    n_down: int = 2
    attention: str = "cam+mask"
    disc_channels: int = 32  # discriminator width after its first conv, doubled per layer up to 8x
    disc_layers: int = 3  # stride-2 convs of the discriminator (3: 70x70 patches)

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)} (got {self.attention!r})")
        bounds = (("channels", 1, 1024), ("n_blocks", 1, 64), ("n_down", 1, 5), ("disc_channels", 1, 1024),
                  ("disc_layers", 1, 7), ("image_size", 16, 1024))  # fmt: skip
        for name, low, high in bounds:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in {low}..{high} (got {value!r})")
        if self.image_size % 2**self.n_down:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of {2**self.n_down} (2**n_down)")
        if self.image_size // 2**self.disc_layers < 3:
            raise ValueError(f"disc_layers ({self.disc_layers}) leaves no patch at image_size {self.image_size}: "
                             f"needs image_size >= {3 * 2**self.disc_layers}")  # fmt: skip

    @property
    def cam(self) -> bool:
        return "cam" in self.attention

    @property
    def mask(self) -> bool:
        return "mask" in self.attention

    @property
    def bottleneck(self) -> int:
        """Channels at the bottleneck (where the attention works)."""
        return self.channels * 2**self.n_down

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    to_dict = as_dict  # the name NetConfig (core/architecture.py) uses

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TranslatorConfig:
        """The config stored by :meth:`as_dict`; an unknown or missing key raises ValueError naming it."""
        names = [f.name for f in fields(cls)]
        unknown, missing = sorted(set(values) - set(names)), [n for n in names if n not in values]
        if unknown or missing:
            raise ValueError(f"translator config: unknown keys {unknown}, missing keys {missing}")
        return cls(**values)


@dataclass
class Translated:
    """A generator's output: the image, and what its attention looked at (None where that part is off)."""

    image: Tensor  # (N, 3, H, W) in [-1, 1]
    cam_logit: Tensor | None  # (N, 2): the classifier's average- and max-pooled "from my source domain" logits
    heatmap: Tensor | None  # (N, 1, H / 2**n_down, W / 2**n_down), >= 0
    mask: Tensor | None  # (N, 1, H, W) in [0, 1]: 1 where the output is the new content, 0 where it is the input
    content: Tensor | None = None  # (N, 3, H, W): the drawn image before the mask blends it with the input


# --------------------------------------------------------------------------- layers


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Sequential:
    """Reflection padding (no dark borders from zero padding) and a conv; no bias before a norm."""
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride, bias=bias))


def _per_channel(values: Tensor) -> Tensor:
    """(C,) or (N, C) -> broadcastable over (N, C, H, W). Per-channel parameters are kept 1-D: 4-D ones would be
    made channels_last with the nets, and DDP then warns that their gradients' strides differ."""
    return values.float()[..., :, None, None]


def _instance_layer_mix(x: Tensor, rho: Tensor) -> Tensor:
    """``rho * instance_norm(x) + (1 - rho) * layer_norm(x)``, in float32 (bf16 statistics are too coarse).
    torch's fused norms, not the statistics written out: half the time forward and backward, and a 64 px
    ``cam`` training step 9 % cheaper on the CPU (bench/translate_step.py, README "The translator's training
    step")."""
    x = x.float()
    return torch.lerp(F.layer_norm(x, x.shape[1:], eps=EPS), F.instance_norm(x, eps=EPS), _per_channel(rho))


class AdaLIN(nn.Module):
    """Adaptive layer-instance norm: the mix of :func:`_instance_layer_mix`, scaled and shifted by predicted
    per-sample ``gamma``/``beta`` (N, C). ``rho`` starts at 0.9 (mostly instance norm), as in U-GAT-IT."""

    def __init__(self, channels: int, rho: float = 0.9) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.full((channels,), rho))

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        return _instance_layer_mix(x, self.rho) * _per_channel(gamma) + _per_channel(beta)


class LIN(nn.Module):
    """Layer-instance norm with learnt gamma and beta (U-GAT-IT's ILN); ``rho`` starts at 0 (layer norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(channels))
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return _instance_layer_mix(x, self.rho) * _per_channel(self.gamma) + _per_channel(self.beta)


def clip_rho_(module: nn.Module) -> None:
    """Clamp every (Ada)LIN mixing weight into [0, 1], in place: called after each optimiser step (U-GAT-IT's
    RhoClipper), so that rho keeps receiving gradients instead of being clamped inside the forward pass."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, AdaLIN | LIN):
                m.rho.clamp_(0.0, 1.0)


class ResBlock(nn.Module):
    """conv3-IN-ReLU-conv3-IN plus the input (CycleGAN's residual block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(inplace=True),
            _conv(channels, channels, 3), nn.InstanceNorm2d(channels),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AdaLINBlock(nn.Module):
    """conv3-AdaLIN-ReLU-conv3-AdaLIN plus the input; gamma and beta come from the attention's MLP."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = _conv(channels, channels, 3), AdaLIN(channels)
        self.conv2, self.norm2 = _conv(channels, channels, 3), AdaLIN(channels)

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(h), gamma, beta)


class CamAttention(nn.Module):
    """Class-activation-map attention over (N, C, H, W) features: see the module docstring."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gap_fc = nn.Linear(channels, 1, bias=False)
        self.gmp_fc = nn.Linear(channels, 1, bias=False)
        self.merge = nn.Conv2d(2 * channels, channels, 1)

    def reweight(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(the features re-weighted channel-wise by each classifier's weights, concatenated: (N, 2C, H, W);
        the classifier's logits (N, 2))."""
        logit = torch.cat([self.gap_fc(x.mean(dim=(2, 3))), self.gmp_fc(x.amax(dim=(2, 3)))], dim=1)
        w_gap, w_gmp = self.gap_fc.weight[0, :, None, None], self.gmp_fc.weight[0, :, None, None]
        return torch.cat([x * w_gap, x * w_gmp], dim=1), logit

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(attended features (N, C, H, W), logits (N, 2), heatmap (N, 1, H, W))."""
        weighted, logit = self.reweight(x)
        features = F.relu(self.merge(weighted))
        return features, logit, features.sum(dim=1, keepdim=True)


class GammaBeta(nn.Module):
    """AdaLIN's gamma and beta (N, C) from the attended features, globally average-pooled (U-GAT-IT light:
    pooling first makes the MLP independent of the image size and small)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                 nn.Linear(channels, channels), nn.ReLU(inplace=True))  # fmt: skip
        self.gamma, self.beta = nn.Linear(channels, channels), nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.mlp(x.mean(dim=(2, 3)))
        return self.gamma(h), self.beta(h)


def _up(cin: int, cout: int, lin: bool) -> nn.Sequential:
    norm = LIN(cout) if lin else nn.InstanceNorm2d(cout)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, cout, 3), norm, nn.ReLU(inplace=True))


# --------------------------------------------------------------------------- networks


class Generator(nn.Module):
    """One translation direction: (N, 3, H, W) in [-1, 1] -> :class:`Translated` (H, W multiples of 2**n_down)."""

    def __init__(self, cfg: TranslatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, width = cfg.channels, cfg.bottleneck
        before = cfg.n_blocks // 2
        encoder: list[nn.Module] = [_conv(3, c, 7), nn.InstanceNorm2d(c), nn.ReLU(inplace=True)]
        for i in range(cfg.n_down):
            cin = c * 2**i
            encoder += [_conv(cin, 2 * cin, 3, stride=2), nn.InstanceNorm2d(2 * cin), nn.ReLU(inplace=True)]
        encoder += [ResBlock(width) for _ in range(before)]
        self.encoder = nn.Sequential(*encoder)
        after = cfg.n_blocks - before
        self.cam = CamAttention(width) if cfg.cam else None
        self.gamma_beta = GammaBeta(width) if cfg.cam else None
        self.decoder = nn.ModuleList(AdaLINBlock(width) if cfg.cam else ResBlock(width) for _ in range(after))
        self.up = nn.Sequential(*[_up(c * 2 ** (i + 1), c * 2**i, cfg.cam) for i in reversed(range(cfg.n_down))])
        # One conv for the content (3 channels) and the mask (a 4th): one pass over the full-resolution features.
        self.head = _conv(c, 3 + int(cfg.mask), 7, bias=True)

    def forward(self, x: Tensor) -> Translated:
        step = 2**self.cfg.n_down
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] % step or x.shape[-2] % step:
            raise ValueError(f"translator expects images (N, 3, H, W) with H and W multiples of {step}, "
                             f"got {tuple(x.shape)}")  # fmt: skip
        h = self.encoder(x)
        logit = heatmap = None
        if self.cam is not None and self.gamma_beta is not None:
            h, logit, heatmap = self.cam(h)
            gamma, beta = self.gamma_beta(h)
            for block in self.decoder:
                h = block(h, gamma, beta)
        else:
            for block in self.decoder:
                h = block(h)
        out = self.head(self.up(h)).float()
        content = torch.tanh(out[:, :3])
        if not self.cfg.mask:
            return Translated(content, logit, heatmap, None, content)
        mask = torch.sigmoid(out[:, 3:])
        return Translated(mask * content + (1.0 - mask) * x.float(), logit, heatmap, mask, content)


class Discriminator(nn.Module):
    """PatchGAN: (N, 3, S, S) -> (N, 1, S / 2**disc_layers - 2, same) logits, one per overlapping patch."""

    def __init__(self, cfg: TranslatorConfig) -> None:
        super().__init__()
        self.cfg = cfg

        def width(i: int) -> int:
            return cfg.disc_channels * 2 ** min(i, 3)

        sn = spectral_norm_init
        layers: list[nn.Module] = [sn(nn.Conv2d(3, width(0), 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for i in range(1, cfg.disc_layers):
            layers += [sn(nn.Conv2d(width(i - 1), width(i), 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        last = cfg.disc_layers
        layers += [sn(nn.Conv2d(width(last - 1), width(last), 4, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                   sn(nn.Conv2d(width(last), 1, 4, 1, 1))]  # fmt: skip
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TranslatorNets(nn.Module):
    """Both directions and both critics: ``g_ab`` photo -> anime, ``g_ba`` anime -> photo; ``d_a`` tells real
    photos from ``g_ba``'s, ``d_b`` real anime faces from ``g_ab``'s."""

    def __init__(self, cfg: TranslatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.g_ab, self.g_ba = Generator(cfg), Generator(cfg)
        self.d_a, self.d_b = Discriminator(cfg), Discriminator(cfg)

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.g_ab.parameters(), *self.g_ba.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [*self.d_a.parameters(), *self.d_b.parameters()]
