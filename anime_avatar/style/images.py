"""Images <-> tensors for style transfer: float (N, 3, H, W) in [0, 1], resizing by the shorter side.

Square crops (of a face, of a whole picture) live in :mod:`anime_avatar.data.images`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from anime_avatar.core.limits import MAX_ASPECT, MAX_MADE_PIXELS, short_side_box, widest_aspect

log = logging.getLogger(__name__)


def resize_short(image: Image.Image, short: int) -> Image.Image:
    """Resize so that the shorter side is ``short`` pixels, keeping the aspect ratio (Lanczos).

    An extreme aspect ratio is first cropped to its centre (see :func:`~anime_avatar.core.limits.short_side_box`:
    a 20000x2 picture would otherwise become 2560000x256), with a warning that says so.
    """
    box = short_side_box(*image.size, short)
    if box is not None:
        cropped = image.crop(box)
        log.warning("a %dx%d picture cropped to its central %dx%d: at a shorter side of %d px, an image is at most "
                    "%.3g:1 (%d pixels at most, %d:1 at most)", *image.size, *cropped.size, short,
                    widest_aspect(short), MAX_MADE_PIXELS, MAX_ASPECT)  # fmt: skip
        image = cropped
    w, h = image.size
    scale = short / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # As every resize of the project (data.images): the served stylizer, which crops with center_square, and the
    # command then write the same pixels (without the gap they differed by a grey level on 9 % of a 1359 px photo).
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float (1, 3, H, W) in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """Float (3, H, W) or (1, 3, H, W) -> PIL RGB (clamped to [0, 1], rounded)."""
    if tensor.ndim == 4:
        tensor = tensor[0]
    array = (tensor.detach().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
