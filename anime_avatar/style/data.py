"""Style training data: seeded training batches (image sets are read by :mod:`anime_avatar.data.image_sets`).

Training batches are a pure function of (seed, step): every random choice of a step (which faces, which
style crop, its side and place, a mirror flip) comes from a generator seeded by them, never from a global
stream, so a run resumed at step t draws what an uninterrupted run draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.core.loops import step_generator
from anime_avatar.style.images import resize_short


def _resize_uint8(faces: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> uint8 (N, 3, size, size); bicubic up (the pipeline's crops may be 32 px),
    antialiased down."""
    images = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float()
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return images.round().clamp(0, 255).to(torch.uint8)


class StyleBatches:
    """Content faces and style images in memory; :meth:`batch` is a pure function of (seed, step).

    Content: square faces resized to ``size``. Style: each image resized to short side 2*size; each sample
    is a random square crop with a side between ``size`` and that short side (brush strokes at several
    scales), resized to ``size`` and mirrored at random.
    """

    def __init__(self, faces: np.ndarray, styles: Sequence[Image.Image], size: int) -> None:
        if len(faces) == 0 or not styles:
            raise UserError(f"style training needs faces and style images (got {len(faces)} and {len(styles)})")
        self.size = size
        # Kept as uint8 (a quarter of float32's memory); converted per batch.
        self.content = torch.cat([_resize_uint8(faces[i : i + 256], size) for i in range(0, len(faces), 256)])
        self.styles = [torch.from_numpy(np.array(resize_short(im, 2 * size))).permute(2, 0, 1) for im in styles]

    def batch(self, seed: int, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(content, style) float batches (n, 3, size, size) in [0, 1] for ``step``."""
        gen = step_generator(seed, 0, step, 0)
        content = self.content[torch.randint(len(self.content), (n,), generator=gen)].float() / 255.0
        return content, torch.cat([self._style_crop(gen) for _ in range(n)])

    def _style_crop(self, gen: torch.Generator) -> torch.Tensor:
        image = self.styles[int(torch.randint(len(self.styles), (1,), generator=gen))]
        _, h, w = image.shape
        low, high = self.size, min(h, w)
        side = int(torch.randint(low, high + 1, (1,), generator=gen)) if high > low else high
        top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        crop = image[None, :, top : top + side, left : left + side].float() / 255.0
        crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if bool(torch.randint(2, (1,), generator=gen)):
            crop = crop.flip(-1)
        return crop.clamp(0, 1)
