"""Feed-forward style fusion: the attention network (SANet, Park & Lee 2019) and its AdaIN baseline.

One class builds both; only the fusion operator at each scale differs, so a comparison isolates what
attention adds::

    content c, style s ──frozen encoder──► (F_c¹, F_c²), (F_s¹, F_s²)      scale 1 finer, scale 2 deeper
    per scale k:  Z^k = Fuse_k(F_c^k, F_s^k)                                attention | AdaIN
    merged  = conv3x3(Z¹ + upsample(proj(Z²)))
    output  = Decoder(merged), at the content's size

Attention (:class:`AttentionFusion`): queries from the mean-variance-normalised content, keys from the
normalised style, values from the raw style, so each content position receives a convex combination of
style values chosen by *local* similarity (hair to hair, skin to skin), where AdaIN moves only the global
per-channel mean and std. Only the head (fusion, merge, decoder) trains and is saved; the encoder stays
frozen and is rebuilt from its network's name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anime_avatar.core.limits import MAX_ATTENTION_KEYS
from anime_avatar.nn.norm import adain, mean_variance_norm
from anime_avatar.style.features import FeatureMaps, FeatureNet


@dataclass(frozen=True)
class FusionConfig:
    """Everything needed to rebuild a stylizer's head; stored in its file."""

    method: str  # attention | adain
    network: str  # the frozen encoder: inception | vgg19
    scales: tuple[str, str]  # (finer, deeper) encoder layers
    channels: tuple[int, int]  # their widths
    fine_stride: int  # the finer layer's stride: the decoder upsamples by it
    key_dim: int
    max_keys: int
    decoder_width: int

    def __post_init__(self) -> None:
        if self.method not in ("attention", "adain"):
            raise ValueError(f"method must be attention or adain, got {self.method!r}")
        if not 1 <= self.max_keys <= MAX_ATTENTION_KEYS:  # a file's, not only params.yaml's: memory grows with it
            raise ValueError(f"max_keys must be 1 to {MAX_ATTENTION_KEYS}, got {self.max_keys}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scales": list(self.scales), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FusionConfig:
        return cls(**{**raw, "scales": tuple(raw["scales"]), "channels": tuple(raw["channels"])})


def fusion_config(method: str, encoder: FeatureNet, scales: tuple[str, str], key_dim: int, max_keys: int,
                  decoder_width: int) -> FusionConfig:  # fmt: skip
    """A head's config for ``encoder``'s layers ``scales`` (widths and stride read from the encoder)."""
    return FusionConfig(
        method, encoder.network, scales, (encoder.channels(scales[0]), encoder.channels(scales[1])),
        encoder.stride(scales[0]), key_dim, max_keys, decoder_width,
    )  # fmt: skip


def pool_positions(features: torch.Tensor, max_positions: int) -> torch.Tensor:
    """Average-pool a map to at most ``max_positions`` positions (attention costs O(Lc * Ls))."""
    h, w = features.shape[-2:]
    if h * w <= max_positions:
        return features
    scale = math.sqrt(max_positions / (h * w))
    return F.adaptive_avg_pool2d(features, (max(1, int(h * scale)), max(1, int(w * scale))))


class AttentionFusion(nn.Module):
    """One SANet block: Z = F_c + out(softmax(Q Kᵀ / √d) V), Q = q(mvn(F_c)), K = k(mvn(F_s)), V = v(F_s).

    Normalising before Q and K makes similarity depend on the features' pattern, not their brightness or
    contrast; V un-normalised carries the style's statistics into the result; the residual keeps the
    content's structure where attention is diffuse. Style maps larger than ``max_keys`` positions are
    average-pooled first: their statistics survive, exact stroke positions do not matter for the values a
    content position borrows, and attention over a 256x384 style at stride 4 would dominate inference.
    """

    def __init__(self, channels: int, key_dim: int, max_keys: int) -> None:
        super().__init__()
        self.key_dim, self.max_keys = key_dim, max_keys
        self.query = nn.Conv2d(channels, key_dim, 1)
        self.key = nn.Conv2d(channels, key_dim, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def weights(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Attention weights (N, Hc*Wc, Ls): non-negative, each row sums to one."""
        style = pool_positions(style, self.max_keys)
        q = self.query(mean_variance_norm(content)).flatten(2).transpose(1, 2)  # N, Lc, d
        k = self.key(mean_variance_norm(style)).flatten(2)  # N, d, Ls
        return torch.softmax(q @ k / math.sqrt(self.key_dim), dim=-1)

    def attend(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Per content position, the attention-weighted average of the style values: (N, C, Hc, Wc)."""
        n, c, h, w = content.shape
        values = self.value(pool_positions(style, self.max_keys)).flatten(2)  # N, C, Ls
        return (values @ self.weights(content, style).transpose(1, 2)).reshape(n, c, h, w)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return content + self.out(self.attend(content, style))


class AdaINFusion(nn.Module):
    """AdaIN as a fusion operator: no parameters, global statistics only."""

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return adain(content, style)


def _conv(cin: int, cout: int) -> nn.Sequential:
    """Reflection-padded 3x3 conv + ReLU (reflection avoids the dark frame zero padding leaves)."""
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """Upsampling conv decoder from a stride-``2^n_up`` map back to RGB at the requested size.

    Inception's VALID convolutions give non-integer strides (256 px -> 60 at conv_4), so each stage
    upsamples to an exact fraction of the output size (H / 2^k) rather than by a fixed 2x, and the last one
    lands exactly on (H, W). Nearest upsampling + conv avoids transposed convolutions' checkerboard. No
    output squashing: identity and content losses keep useful gradients near black and white.
    """

    def __init__(self, in_channels: int, width: int, n_up: int) -> None:
        super().__init__()
        self.n_up = n_up
        self.stem = _conv(in_channels, width)
        blocks, c = [], width
        for _ in range(n_up):
            nxt = max(c // 2, 16)
            blocks.append(nn.Sequential(_conv(c, nxt), _conv(nxt, nxt)))
            c = nxt
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, 3, 3))

    def forward(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h = self.stem(z)
        for i, block in enumerate(self.blocks):
            div = 2 ** (self.n_up - 1 - i)
            h = block(F.interpolate(h, size=(size[0] // div, size[1] // div), mode="nearest"))
        if self.n_up == 0:
            h = F.interpolate(h, size=size, mode="nearest")
        return self.to_rgb(h)


class FusionHead(nn.Module):
    """The trainable part: a fusion operator per scale, the merge and the decoder."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        fine, deep = cfg.channels
        if cfg.method == "attention":
            self.fuse_fine: nn.Module = AttentionFusion(fine, cfg.key_dim, cfg.max_keys)
            self.fuse_deep: nn.Module = AttentionFusion(deep, cfg.key_dim, cfg.max_keys)
        else:
            self.fuse_fine, self.fuse_deep = AdaINFusion(), AdaINFusion()
        self.project = nn.Conv2d(deep, fine, 1)  # the scales' widths differ (conv_4 192, mixed_2 288)
        self.merge = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(fine, fine, 3))
        self.decoder = Decoder(fine, cfg.decoder_width, int(math.log2(cfg.fine_stride)))

    def fuse(self, content: FeatureMaps, style: FeatureMaps, alpha: float = 1.0) -> FeatureMaps:
        """Fused features per scale; ``alpha`` < 1 blends them back towards the content's (style strength)."""
        fine, deep = self.cfg.scales
        fused = {fine: self.fuse_fine(content[fine], style[fine]), deep: self.fuse_deep(content[deep], style[deep])}
        if alpha != 1.0:
            fused = {k: alpha * v + (1.0 - alpha) * content[k] for k, v in fused.items()}
        return fused

    def decode(self, fused: FeatureMaps, size: tuple[int, int]) -> torch.Tensor:
        fine, deep = self.cfg.scales
        z_fine = fused[fine]
        z_deep = F.interpolate(self.project(fused[deep]), size=z_fine.shape[-2:], mode="nearest")
        return self.decoder(self.merge(z_fine + z_deep), size)

    def forward(self, content: FeatureMaps, style: FeatureMaps, size: tuple[int, int],
                alpha: float = 1.0) -> tuple[torch.Tensor, FeatureMaps]:  # fmt: skip
        """Stylise from encoder features: (image, fused features)."""
        if style[self.cfg.scales[0]].shape[0] != content[self.cfg.scales[0]].shape[0]:
            n = content[self.cfg.scales[0]].shape[0]
            style = {k: v.expand(n, -1, -1, -1) for k, v in style.items()}  # one style for a batch of contents
        fused = self.fuse(content, style, alpha)
        return self.decode(fused, size), fused


class Stylizer(nn.Module):
    """Frozen encoder + trained head: images in [0, 1] (N, 3, H, W) -> stylised images (clamp to show)."""

    def __init__(self, head: FusionHead, encoder: FeatureNet) -> None:
        super().__init__()
        missing = sorted(set(head.cfg.scales) - set(encoder.layers))
        if missing or encoder.network != head.cfg.network:
            raise ValueError(f"the encoder ({encoder.network}) lacks the head's {head.cfg.network} layers {missing}")
        self.head = head
        self.encoder = encoder

    @property
    def cfg(self) -> FusionConfig:
        return self.head.cfg

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> FeatureMaps:
        """Encoder features (the style's can be computed once and reused for many contents)."""
        maps = self.encoder(images)
        return {k: maps[k] for k in self.cfg.scales}

    def forward(self, content: torch.Tensor, style: torch.Tensor | None = None,
                style_features: FeatureMaps | None = None, alpha: float = 1.0) -> torch.Tensor:  # fmt: skip
        if style_features is None:
            if style is None:
                raise ValueError("give a style image or its encode() features")
            style_features = self.encode(style)
        out, _ = self.head(self.encode(content), style_features, content.shape[-2:], alpha)
        return out


class PatchDiscriminator(nn.Module):
    """A small spectral-norm PatchGAN on RGB in [0, 1]: the optional adversarial term.

    It judges local patches (receptive field about 30 px): strokes and colour texture rather than
    composition, which is what "anime style" means for a face crop.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, width * 2, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 2, width * 4, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 4, 1, 3, 1, 1)),
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2.0 - 1.0)
