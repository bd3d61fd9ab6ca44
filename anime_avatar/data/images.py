"""Image helpers shared by the stages: safe decoding, square crops, resizing, hashing."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageCheck:
    ok: bool
    reason: str = ""
    width: int = 0
    height: int = 0


def check_image(path: str | os.PathLike[str], max_bytes: int) -> ImageCheck:
    """Fully decode ``path`` to prove it is a usable image; say why when it is not."""
    try:
        size = os.path.getsize(path)
    except OSError as err:
        return ImageCheck(False, f"unreadable: {err.strerror}")
    if size > max_bytes:
        return ImageCheck(False, f"larger than {max_bytes // (1 << 20)} MiB")
    if size == 0:
        return ImageCheck(False, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                im.load()
                width, height = im.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return ImageCheck(False, "not an image (or an image too large to decode safely)")
    except (OSError, SyntaxError, ValueError) as err:
        return ImageCheck(False, f"corrupt image: {err}")
    return ImageCheck(True, width=width, height=height)


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image as 8-bit RGB, compositing any transparency onto white."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P") and ("transparency" in im.info or im.mode != "P"):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, im).convert("RGB")
        return im.convert("RGB")


def square_box(box: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square (x, y, side, side) around ``box`` grown by ``margin`` per side, kept inside the image.

    The square is shifted, not padded, when it crosses an edge, and shrunk only
    when the image itself is smaller than the square.
    """
    x, y, w, h = box
    side = round(max(w, h) * (1 + 2 * margin))
    side = max(1, min(side, width, height))
    cx, cy = x + w / 2, y + h / 2
    left = int(round(cx - side / 2))
    top = int(round(cy - side / 2))
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return left, top, side, side


def crop_resize(image: Image.Image, square: tuple[int, int, int, int], size: int) -> Image.Image:
    """Crop the square and resize it to ``size`` with a Lanczos filter (antialiased downscale)."""
    left, top, side, _ = square
    crop = image.crop((left, top, left + side, top + side))
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return crop


def phash64(image: Image.Image) -> int:
    """64-bit perceptual hash (DCT) as an unsigned integer."""
    return int(str(imagehash.phash(image)), 16)


def hamming_to_all(value: int, others: np.ndarray) -> np.ndarray:
    """Bit distances between one 64-bit hash and an array of them."""
    x = np.bitwise_xor(others, np.uint64(value))
    return np.bitwise_count(x)


def near_duplicates(hashes: list[int], max_distance: int) -> dict[int, tuple[int, int]]:
    """Map index -> (index of the earlier kept item, distance) for items to drop.

    An item is a duplicate when its perceptual hash lies within ``max_distance``
    bits of an earlier kept item; the first of a group is kept.
    """
    if max_distance < 0 or not hashes:
        return {}
    values = np.array(hashes, dtype=np.uint64)
    kept: list[int] = []
    kept_values = np.empty(len(values), dtype=np.uint64)
    dropped: dict[int, tuple[int, int]] = {}
    for i, v in enumerate(values):
        if kept:
            dist = hamming_to_all(int(v), kept_values[: len(kept)])
            j = int(np.argmin(dist))
            if dist[j] <= max_distance:
                dropped[i] = (kept[j], int(dist[j]))
                continue
        kept_values[len(kept)] = v
        kept.append(i)
    return dropped


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def image_stats(array: np.ndarray) -> tuple[float, float]:
    """Mean brightness and contrast (std of luma), both in 0..1, of an HxWx3 uint8 array."""
    luma = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(luma.mean() / 255.0), float(luma.std() / 255.0)
