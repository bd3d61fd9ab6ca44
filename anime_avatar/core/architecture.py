"""The GAN architecture as a typed, validated config: what ``model.*`` params and the training images' side
describe, and what ``models/generator.pt`` records so that the generator can be rebuilt.

It lives beside the params schema (not with the networks) so that checking params never imports torch or
the networks' code: the data stages do not depend on the GAN's implementation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anime_avatar.core.params import ModelParams

ARCHS = ("dcgan", "sagan")
RESOLUTIONS = (32, 64, 128, 256)
BASE = 4  # side of the first generator map and of the last discriminator map


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a generator/discriminator pair; validated on construction.

    ``attention`` lists resolutions (4 .. resolution) that get a self-attention block;
    it is used by sagan and ignored by dcgan (but still validated, so typos fail fast).
    """

    arch: str
    resolution: int
    z_dim: int
    channels: int
    attention: tuple[int, ...]
    max_channels: int

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {', '.join(ARCHS)} (got {self.arch!r})")
        if not _is_int(self.resolution) or self.resolution not in RESOLUTIONS:
            raise ValueError(
                f"model.resolution must be one of {', '.join(map(str, RESOLUTIONS))} (got {self.resolution!r})"
            )
        for key in ("z_dim", "channels", "max_channels"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise ValueError(f"model.{key} must be a positive integer (got {value!r})")
        if self.max_channels < self.channels:
            raise ValueError(
                f"model.max_channels ({self.max_channels}) must be at least model.channels ({self.channels})"
            )
        try:
            attention = tuple(self.attention)
        except TypeError:
            raise ValueError(f"model.attention must be a list of resolutions (got {self.attention!r})") from None
        valid = self.resolutions
        bad = [r for r in attention if not _is_int(r) or r not in valid]
        if bad:
            raise ValueError(
                f"model.attention: {', '.join(map(repr, bad))} not a resolution of a {self.resolution}px net; "
                f"valid: {', '.join(map(str, valid))}"
            )
        object.__setattr__(self, "attention", tuple(sorted(set(attention))))

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map sides from the 4x4 base up to the output: (4, 8, ..., resolution)."""
        return tuple(BASE * 2**i for i in range(int(math.log2(self.resolution // BASE)) + 1))

    def width(self, r: int) -> int:
        """Channels of the feature maps at side ``r``."""
        return min(self.channels * (self.resolution // r), self.max_channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``attention`` as a list), as model files and checkpoint fingerprints store them."""
        return {**asdict(self), "attention": list(self.attention)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NetConfig:
        return cls(**{**raw, "attention": tuple(raw["attention"])})


def net_config(model: ModelParams, resolution: int, key: str = "resolution") -> NetConfig:
    """The architecture of ``model`` params at ``resolution`` (the training images' side).

    ``key`` names where the resolution came from in the error when it is not one the nets support.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"{key} must be one of {', '.join(map(str, RESOLUTIONS))} to train a GAN (got {resolution})")
    return NetConfig(model.arch, resolution, model.z_dim, model.channels, tuple(model.attention), model.max_channels)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
