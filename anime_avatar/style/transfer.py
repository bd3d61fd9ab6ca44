"""One entry point for every style-transfer method, used by the CLI (stylize, avatar, generate --style),
the MLflow model and the eval stage.

Methods by name: ``gatys-inception``, ``gatys-inception-softmax``, ``gatys-vgg19``, ``gatys-vgg19-softmax``
(optimisation, :mod:`~anime_avatar.style.gatys`), ``attention`` and ``adain`` (the trained nets of a
stylizer file, :mod:`~anime_avatar.style.nets`). The command line says ``--method gatys|network|adain``;
``network`` is the attention net.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from anime_avatar.core.params import STYLE_METHODS, GatysParams
from anime_avatar.style.features import LAYERS, build_features
from anime_avatar.style.gatys import gatys_transfer
from anime_avatar.style.images import resize_short, to_image, to_tensor

# A method: (content (1, 3, H, W), style (1, 3, H', W')), both in [0, 1] -> stylised (1, 3, H, W) in [0, 1].
Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CLI_METHODS = ("gatys", "network", "adain")


def method_name(cli_method: str, features: str = "inception", softmax: bool = True) -> str:
    """The method's full name from the command line's ``--method``, ``--features`` and ``--plain``."""
    if cli_method == "gatys":
        return f"gatys-{features}{'-softmax' if softmax else ''}"
    return "attention" if cli_method == "network" else cli_method


def is_gatys(name: str) -> bool:
    return name.startswith("gatys-")


def gatys_variant(name: str) -> tuple[str, bool]:
    """(feature network, softmax) of a ``gatys-*`` method name."""
    network = name.removeprefix("gatys-").removesuffix("-softmax")
    return network, name.endswith("-softmax")


def make_method(name: str, gatys: GatysParams | None = None, stylizer: Path | None = None,
                device: torch.device | str = "cpu", progress: bool = True) -> Method:  # fmt: skip
    """The stylising function of method ``name``; loads its networks once (the VGG-19 weights, or the
    ``attention``/``adain`` net of the ``stylizer`` file)."""
    if name not in STYLE_METHODS:
        raise ValueError(f"unknown style method {name!r}; choose from {', '.join(STYLE_METHODS)}")
    if is_gatys(name):
        if gatys is None:
            raise ValueError("a gatys method needs its settings (the gatys section of params.yaml)")
        network, softmax = gatys_variant(name)
        choice = LAYERS[network]
        features = build_features(network, choice.content + choice.style, device)
        return lambda content, style: gatys_transfer(content, style, features, gatys, softmax, progress).image
    from anime_avatar.artifacts.stylizer import STYLIZER
    from anime_avatar.style.model_file import load_stylizer

    net = load_stylizer(stylizer or STYLIZER, name, device).net

    def run_net(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(content, style).clamp(0.0, 1.0)

    return run_net


def stylize_image(method: Method, content: Image.Image, style: Image.Image, size: int,
                  device: torch.device | str = "cpu") -> Image.Image:  # fmt: skip
    """``content`` in the style of ``style``, both resized to a shorter side of ``size`` pixels."""
    c = to_tensor(resize_short(content, size)).to(device)
    s = to_tensor(resize_short(style, size)).to(device)
    return to_image(method(c, s))
