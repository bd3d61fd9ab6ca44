"""Layer helpers every method's nets use."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (spectral norm's u/v vectors are buffers and do not count)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def spectral_norm_init(layer: nn.Module) -> nn.Module:
    """Orthogonal init, zero bias, then spectral norm on ``weight``."""
    nn.init.orthogonal_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return spectral_norm(layer)
