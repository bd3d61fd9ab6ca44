"""Image helpers shared by the stages: safe decoding, square crops, resizing, hashing."""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# The formats any image is read as (files, uploads, served requests). Not whatever Pillow knows: its EPS plugin
# hands the bytes to Ghostscript when `gs` is installed (whose -dSAFER has had bypasses), and its rarer parsers
# are less tried. (JPEG's opener also reads MPO, the JPEG of phones and cameras that hold a second picture.)
READ_FORMATS = ("PNG", "JPEG", "WEBP", "AVIF", "GIF", "BMP", "DIB", "TIFF", "PPM", "ICO", "QOI")


# Pillow's own decompression-bomb limit (about 9459x9459): larger images are refused, whatever
# Image.MAX_IMAGE_PIXELS is set to, so one worker's decoded image stays below ~270 MB of RGB.
MAX_PIXELS = 89_478_485
ORIENTATION = 0x0112  # the EXIF tag
TOO_LARGE = f"more than {MAX_PIXELS / 1e6:.1f} megapixels: refused (too large to decode safely)"


class UnreadableImage(ValueError):
    """A file that does not decode to an image we can use; the message is the reason, for rejected.csv."""


@dataclass(frozen=True)
class DecodedImage:
    """An image as every stage sees it: upright 8-bit RGB, plus the mode the file itself holds."""

    rgb: Image.Image
    mode: str  # the file's mode, e.g. "I;16", "CMYK", "P"

    @property
    def channels(self) -> int:
        return Image.getmodebands(self.mode)


def read_image(path: str | os.PathLike[str], max_side: int | None = None) -> DecodedImage:
    """Decode any mode and bit depth Pillow opens into upright 8-bit RGB; raise UnreadableImage with the reason.

    The one way images are read (download checks, detection, loading crops, validation, the commands):
    EXIF orientation is applied, 16-bit and 32-bit integer pixels are scaled from 0..65535,
    float pixels from 0..1, and transparency is composited onto white. An animated image gives its
    first frame, with a warning.

    ``max_side`` (the commands): a larger image is downscaled to it, with a warning, and a JPEG is decoded
    reduced (libjpeg's 1/2, 1/4, 1/8 scales), so that a JPEG over MAX_PIXELS, such as a 108-megapixel phone
    photo, is read rather than refused. Other formats over MAX_PIXELS stay refused: they cannot be decoded reduced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with _open(path, max_side) as im:
                width, height = im.size
                if max_side is not None and im.format == "JPEG" and max(width, height) > max_side:
                    scale = max_side / max(width, height)  # draft picks the smallest scale still at least this
                    im.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise UnreadableImage(f"{width}x{height} is {TOO_LARGE}")
                frames = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) else 1
                im.load()
                mode = im.mode
                rgb = _to_rgb(_upright(im))
        except UnreadableImage:
            raise
        except UnidentifiedImageError:
            raise UnreadableImage("not an image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UnreadableImage(TOO_LARGE) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
            raise UnreadableImage(f"cannot open: {err.strerror}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise UnreadableImage(f"corrupt image: {err}") from None
        except MemoryError:
            raise
        except Exception as err:  # Pillow's decoders raise others on broken files (a cut QOI: IndexError)
            raise UnreadableImage(f"corrupt image: {type(err).__name__}: {err}") from None
    if frames > 1:
        log.warning("%s: an animated image: read the first of %d frames", os.fspath(path), frames)
    if max_side is not None and max(width, height) > max_side:
        rgb = fit_within(rgb, max_side)  # as it is when draft mode has reduced it to max_side already
        log.warning("%s: %dx%d is larger than %d px: read downscaled to %dx%d", os.fspath(path), width, height,
                    max_side, *rgb.size)  # fmt: skip
    return DecodedImage(rgb, mode)


def _open(path: str | os.PathLike[str], max_side: int | None) -> Image.Image:
    """Image.open, except a JPEG to be read reduced: Pillow refuses one over twice MAX_PIXELS on opening, before
    draft mode could reduce it, so it is opened as a JPEG directly and its reduced size checked instead."""
    if max_side is not None:
        with open(path, "rb") as f:
            is_jpeg = f.read(3) == b"\xff\xd8\xff"
        if is_jpeg:
            return JpegImagePlugin.JpegImageFile(path)
    return Image.open(path, formats=READ_FORMATS)


def load_rgb(path: str | os.PathLike[str], max_side: int | None = None) -> Image.Image:
    """The image at ``path`` as upright 8-bit RGB (see :func:`read_image`)."""
    return read_image(path, max_side).rgb


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, so a photo taken sideways is detected upright."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": ignored below anyway
            if im.getexif().get(ORIENTATION, 1) == 1:
                return im  # upright already: no copy (it would double the memory of a huge image)
            return ImageOps.exif_transpose(im)
    except Exception:  # a damaged EXIF block raises many types; the pixels are still good
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB with the full range of the source's bit depth; transparency composited onto white."""
    if im.mode.startswith("I;16") or im.mode == "I":
        # Pillow's own conversion clips these to 255 (a 16-bit image turns white): scale instead.
        # "I" holds 16-bit data as Pillow reads it from 16-bit PGM and TIFF files; more is clipped.
        pixels = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        # Float images hold 0..1 (as TIFFs from scientific and HDR tools do); outside is clipped.
        pixels = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0)
        return Image.fromarray(np.rint(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8), "L").convert("RGB")
    if "A" in im.getbands() or "a" in im.mode or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


@dataclass(frozen=True)
class ImageCheck:
    ok: bool
    reason: str = ""
    width: int = 0
    height: int = 0


def check_image(path: str | os.PathLike[str], max_bytes: int) -> ImageCheck:
    """Fully decode ``path`` the way the stages will, to prove it is usable; say why when it is not.

    Width and height are those of the upright image (EXIF orientation applied).
    """
    try:
        size = os.path.getsize(path)
    except OSError as err:
        return ImageCheck(False, f"unreadable: {err.strerror}")
    if size > max_bytes:
        return ImageCheck(False, f"larger than {max_bytes // (1 << 20)} MiB")
    if size == 0:
        return ImageCheck(False, "empty file")
    try:
        width, height = read_image(path).rgb.size
        with Image.open(path, formats=READ_FORMATS) as im:
            im.verify()  # checksums that decoding alone does not look at (PNG CRCs)
    except UnreadableImage as err:
        return ImageCheck(False, str(err))
    except (OSError, SyntaxError, ValueError) as err:
        return ImageCheck(False, f"corrupt image: {err}")
    return ImageCheck(True, width=width, height=height)


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


def center_square(image: Image.Image, size: int) -> Image.Image:
    """The central square of ``image`` (its shorter side) resized to ``size``: the square, with no margin, around
    a box that is the whole picture, as the ``none`` detector crops a picture that is one face."""
    width, height = image.size
    return crop_resize(image, square_box((0, 0, width, height), 0.0, width, height), size)


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` downscaled (antialiased) so that its longer side is at most ``max_side``; smaller ones as they are."""
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


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
    seen = DuplicateFilter(max_distance)
    kept: list[int] = []
    dropped: dict[int, tuple[int, int]] = {}
    for i, value in enumerate(hashes):
        match = seen.check(value)
        if match is None:
            kept.append(i)
        else:
            dropped[i] = (kept[match[0]], match[1])
    return dropped


class DuplicateFilter:
    """``near_duplicates`` one item at a time, for items that stream past (only their hashes are kept)."""

    def __init__(self, max_distance: int) -> None:
        self.max_distance = max_distance
        self._kept = np.empty(64, dtype=np.uint64)
        self._count = 0

    def check(self, value: int) -> tuple[int, int] | None:
        """``(k, distance)`` when ``value`` lies within ``max_distance`` bits of the k-th kept item (the nearest,
        the first among equals), else None, and ``value`` is kept."""
        if self.max_distance < 0:
            return None
        if self._count:
            dist = hamming_to_all(value, self._kept[: self._count])
            k = int(np.argmin(dist))
            if dist[k] <= self.max_distance:
                return k, int(dist[k])
        if self._count == len(self._kept):
            self._kept = np.concatenate([self._kept, np.empty_like(self._kept)])  # doubles: amortised O(1)
        self._kept[self._count] = value
        self._count += 1
        return None


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def image_stats(array: np.ndarray) -> tuple[float, float]:
    """Mean brightness and contrast (std of luma), both in 0..1, of an HxWx3 uint8 array."""
    luma = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(luma.mean() / 255.0), float(luma.std() / 255.0)
