"""``data/raw/``: the downloaded images, ``manifest.csv`` (one row per image) and ``rejected.csv``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import read_csv, write_csv

RAW_DIR = Path("data/raw")
PHOTOS_DIR = Path("data/photos")  # the translator's photo domain (download_photos), laid out as data/raw
IMAGES = "images"  # every image lies under data/raw/images/
MANIFEST = "manifest.csv"
REJECTED = "rejected.csv"
MANIFEST_FIELDS = ("relpath", "sha256", "bytes", "width", "height", "source", "license", "faces")
REJECTED_FIELDS = ("relpath", "reason")


@dataclass(frozen=True)
class RawImage:
    """One row of manifest.csv; ``relpath`` is relative to the raw folder."""

    relpath: str
    sha256: str
    bytes: int
    width: int
    height: int
    source: str
    license: str
    faces: str = ""  # JSON list of true [x, y, w, h] boxes (synthetic data only)

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rejected:
    """One row of rejected.csv: a file that did not become a raw image, and why."""

    relpath: str
    reason: str

    def row(self) -> dict[str, Any]:
        return asdict(self)


def write_raw_set(folder: Path, images: Iterable[RawImage], rejected: Iterable[Rejected]) -> None:
    """Write the manifest and the rejections of a raw folder whose images are already in place."""
    write_csv(folder / MANIFEST, [i.row() for i in images], MANIFEST_FIELDS)
    write_csv(folder / REJECTED, [r.row() for r in rejected], REJECTED_FIELDS)


def synthetic_only(folder: Path) -> bool:
    """Whether ``folder`` is a raw set whose every image is procedural (``source: synthetic``, the offline
    default): a model that learned from it has seen no real picture. False for any other folder."""
    path = folder / MANIFEST
    sources = [row["source"] for row in read_csv(path)] if path.is_file() else []
    return bool(sources) and all(source.startswith("synthetic") for source in sources)


def read_manifest(folder: Path = RAW_DIR) -> list[RawImage]:
    path = folder / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} is missing: run the download stage first (dvc repro download)")
    return [
        RawImage(**{**row, "bytes": int(row["bytes"]), "width": int(row["width"]), "height": int(row["height"])})
        for row in read_csv(path)
    ]
