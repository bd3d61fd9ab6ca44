"""Style training data: image sets (a folder, an archive or one file) and seeded training batches.

Training batches are a pure function of (seed, step): every random choice of a step (which faces, which
style crop, its side and place, a mirror flip) comes from a generator seeded by them, never from a global
stream, so a run resumed at step t draws what an uninterrupted run draws.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.core.loops import step_generator
from anime_avatar.data.images import IMAGE_SUFFIXES, load_rgb
from anime_avatar.style.images import resize_short

T = TypeVar("T")
MAX_ARCHIVE_BYTES = 4 << 30  # an archive of style images may not unpack to more than this


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively, by suffix), in name order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def spread(items: Sequence[T], n: int) -> list[T]:
    """``n`` items evenly spread over ``items`` (all of them when n is 0 or at least their number)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def load_image_set(path: Path, key: str, limit: int = 0) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) pairs from a folder (recursively), an archive (unpacked safely) or one image file;
    the name is the file's path inside the folder, without its suffix.

    ``limit`` > 0 keeps that many, evenly spread in name order. ``key`` names the setting in errors.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{key}: {path} does not exist")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [(path.stem, read_image(path, key))]
    if path.is_file():
        from anime_avatar.data.sources import extract_archive

        with tempfile.TemporaryDirectory(prefix="anime-avatar-styles-") as tmp:
            extract_archive(path, Path(tmp), MAX_ARCHIVE_BYTES)
            return _read_all(Path(tmp), f"{key} ({path})", limit)
    return _read_all(path, key, limit)


def _read_all(folder: Path, key: str, limit: int) -> list[tuple[str, Image.Image]]:
    files = image_files(folder)
    if not files:
        raise UserError(f"{key}: no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return [(p.relative_to(folder).with_suffix("").as_posix(), read_image(p, key)) for p in spread(files, limit)]


def read_image(path: Path, key: str) -> Image.Image:
    """An image file as RGB; a missing or unreadable file raises one UserError naming ``key`` (the setting)."""
    if not Path(path).is_file():
        raise UserError(f"{key}: {path} does not exist" if not Path(path).exists() else f"{key}: {path} is not a file")
    try:
        return load_rgb(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"{key}: {path} is not a readable image ({err})") from None


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
