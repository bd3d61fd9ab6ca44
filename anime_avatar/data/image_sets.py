"""Sets of images named by a setting: a folder (read recursively), an archive (unpacked safely) or one image file.

What the style sets, the translator's domains and the commands' --content folders are read with; every error
names the setting it came from.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.core.limits import MAX_READ_SIDE
from anime_avatar.data.images import IMAGE_SUFFIXES, load_rgb

T = TypeVar("T")
MAX_ARCHIVE_BYTES = 4 << 30  # an archive of style images may not unpack to more than this


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively, by suffix), in name order, leaving out hidden files and
    folders and ``__MACOSX/``: the AppleDouble files macOS adds beside each file it copies or zips (``._face.jpg``)
    carry an image suffix but hold no image."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(folder))
    )  # fmt: skip


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def spread(items: Sequence[T], n: int) -> list[T]:
    """``n`` items evenly spread over ``items`` (all of them when n is 0 or at least their number)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def load_image_set(
    path: Path, key: str, limit: int = 0, prepare: Callable[[Image.Image], Image.Image] | None = None
) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) pairs from a folder (recursively), an archive (unpacked safely) or one image file;
    the name is the file's path inside the folder, without its suffix.

    ``limit`` > 0 keeps that many, evenly spread in name order. ``key`` names the setting in errors.
    ``prepare`` (e.g. a crop to the size used) is applied to each image as it is read, so that a set of large
    photos never sits in memory at full resolution. An image larger than MAX_READ_SIDE is read reduced, as the
    commands read one (a JPEG over the decoder's pixel limit, such as a 108-megapixel phone photo, included).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{key}: {path} does not exist")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return [(path.stem, _read(path, key, prepare, shown_as=path))]
    if path.is_file():
        from anime_avatar.data.sources import extract_archive

        with tempfile.TemporaryDirectory(prefix="anime-avatar-styles-") as tmp:
            extract_archive(path, Path(tmp), MAX_ARCHIVE_BYTES)
            return _read_all(Path(tmp), key, limit, prepare, shown_as=path)
    return _read_all(path, key, limit, prepare, shown_as=path)


def _read_all(
    folder: Path, key: str, limit: int, prepare: Callable[[Image.Image], Image.Image] | None, shown_as: Path
) -> list[tuple[str, Image.Image]]:
    """Each image of ``folder``; errors name ``shown_as`` (the folder, or the archive it was unpacked from:
    its members are named inside it, not by the temporary folder they lay in)."""
    files = image_files(folder)
    if not files:
        raise UserError(f"{key}: no images in {shown_as} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    found = []
    for path in spread(files, limit):
        name = path.relative_to(folder)
        found.append((name.with_suffix("").as_posix(), _read(path, key, prepare, shown_as=shown_as / name)))
    return found


def _read(path: Path, key: str, prepare: Callable[[Image.Image], Image.Image] | None, shown_as: Path) -> Image.Image:
    image = read_image(path, key, MAX_READ_SIDE, shown_as=shown_as)
    return image if prepare is None else prepare(image)


def read_image(path: Path, key: str, max_side: int | None = None, shown_as: Path | None = None) -> Image.Image:
    """An image file as RGB (downscaled to ``max_side``, see :func:`anime_avatar.data.images.read_image`); a
    missing or unreadable file raises one UserError naming ``key`` (the setting) and the file (``shown_as``, else
    ``path``)."""
    shown = path if shown_as is None else shown_as
    if not Path(path).is_file():
        raise UserError(f"{key}: {shown} " + ("is not a file" if Path(path).exists() else "does not exist"))
    try:
        return load_rgb(path, max_side)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"{key}: {shown} is not a readable image ({err})") from None
