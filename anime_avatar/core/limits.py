"""The pixel limits of what the code makes from an input: the one place that holds them.

A tiny input can ask for a huge image (a 20000x2 picture resized by its shorter side, ``--size 100000``), and a
phone photo can be larger than it is safe to decode: these numbers bound both, whatever the path.
"""

from __future__ import annotations

from anime_avatar.core.errors import UserError

MAX_SIDE = 1024  # the largest side an output may be asked for (--size, --style-size; params' image sizes too)
MAX_MADE_PIXELS = MAX_SIDE * MAX_SIDE  # the most pixels of any image made from an input: the largest square output
MAX_ASPECT = 8  # the longest an image made from an input may be, in shorter sides (wider panoramas are cropped)
MAX_READ_SIDE = 4096  # the commands read larger inputs reduced (JPEG draft mode) and downscale them to this side


def check_side(value: int, name: str) -> int:
    """``value`` if it is a side in pixels that an output may have (1..MAX_SIDE), else a UserError naming ``name``."""
    if not 1 <= value <= MAX_SIDE:
        raise UserError(f"{name}: {value} is not between 1 and {MAX_SIDE} pixels")
    return value


def short_side_box(width: int, height: int, short: int) -> tuple[int, int, int, int] | None:
    """The central box (left, top, right, bottom) of a ``width`` x ``height`` image that, resized to a shorter side
    of ``short`` pixels, is at most MAX_ASPECT times longer than wide and within MAX_MADE_PIXELS; None when the
    whole image is. Only an extreme aspect ratio is cropped: ``short`` itself is at most MAX_SIDE.
    """
    check_side(short, "the shorter side")
    low, high = min(width, height), max(width, height)
    keep = min(low * MAX_ASPECT, MAX_MADE_PIXELS // short * low // short)  # the longer side's input pixels to keep
    keep = max(keep, low)
    if keep >= high:
        return None
    if width >= height:
        left = (width - keep) // 2
        return left, 0, left + keep, height
    top = (height - keep) // 2
    return 0, top, width, top + keep
