"""``data/faces/``: square face crops ``<face_id>.png``, ``faces.csv``, ``duplicates.csv`` and ``faces.json``.

``faces.json`` records the facts later stages need (the crops' side, their count, the
detector), so they read them here instead of from the detect section of params.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_json, read_csv, write_csv
from anime_avatar.core.progress import progress_bar

FACES_DIR = Path("data/faces")
FACES_CSV = "faces.csv"
DUPLICATES_CSV = "duplicates.csv"
INFO_JSON = "faces.json"
FACE_FIELDS = (
    "face_id", "source", "x", "y", "w", "h", "crop_x", "crop_y", "crop_size", "score", "detector", "phash",
)  # fmt: skip
DUPLICATE_FIELDS = ("face_id", "source", "duplicate_of", "distance")

Box = tuple[int, int, int, int]  # x, y, w, h in image pixels


@dataclass(frozen=True)
class FaceCrop:
    """One detected face: where it was found, and its crop as PNG bytes."""

    face_id: str
    source: str
    box: Box
    crop: Box
    score: float
    detector: str
    phash: int
    png: bytes

    def row(self) -> dict[str, object]:
        x, y, w, h = self.box
        cx, cy, side, _ = self.crop
        return {
            "face_id": self.face_id, "source": self.source, "x": x, "y": y, "w": w, "h": h,
            "crop_x": cx, "crop_y": cy, "crop_size": side, "score": round(self.score, 4),
            "detector": self.detector, "phash": f"{self.phash:016x}",
        }  # fmt: skip


@dataclass(frozen=True)
class FaceSetInfo:
    image_size: int
    count: int
    detector: str


def face_path(folder: Path, face_id: str) -> Path:
    return folder / f"{face_id}.png"


def write_face_set(
    folder: Path,
    crops: Sequence[FaceCrop],
    duplicates: Sequence[tuple[FaceCrop, FaceCrop, int]],
    image_size: int,
    detector: str,
) -> FaceSetInfo:
    """Write the crops, their table, the dropped near-duplicates (dropped, kept, distance) and the info file."""
    for crop in crops:
        face_path(folder, crop.face_id).write_bytes(crop.png)
    write_csv(folder / FACES_CSV, [c.row() for c in crops], FACE_FIELDS)
    write_csv(
        folder / DUPLICATES_CSV,
        [
            {"face_id": d.face_id, "source": d.source, "duplicate_of": o.face_id, "distance": n}
            for d, o, n in duplicates
        ],
        DUPLICATE_FIELDS,
    )
    info = FaceSetInfo(image_size=image_size, count=len(crops), detector=detector)
    atomic_write_json(folder / INFO_JSON, asdict(info))
    return info


def read_face_info(folder: Path = FACES_DIR) -> FaceSetInfo:
    path = folder / INFO_JSON
    if not path.is_file():
        raise UserError(f"{path} is missing: run the detect stage first (dvc repro detect)")
    try:
        return FaceSetInfo(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise UserError(f"{path} is damaged ({err}): run the detect stage again (dvc repro -f detect)") from None


def face_ids(folder: Path = FACES_DIR) -> list[str]:
    path = folder / FACES_CSV
    if not path.is_file():
        raise UserError(f"{path} is missing: run the detect stage first (dvc repro detect)")
    return [row["face_id"] for row in read_csv(path)]


def load_faces(folder: Path = FACES_DIR) -> tuple[np.ndarray, list[str]]:
    """Every crop of the face set as one (N, S, S, 3) uint8 array, with their ids (S from faces.json)."""
    size = read_face_info(folder).image_size
    ids = face_ids(folder)
    faces = np.empty((len(ids), size, size, 3), dtype=np.uint8)
    for i, face_id in enumerate(progress_bar(iterable=ids, desc="load faces", unit="img", leave=False)):
        image = _read_crop(face_path(folder, face_id))
        if image.size != (size, size):
            raise UserError(
                f"{face_path(folder, face_id)} is {image.size[0]}x{image.size[1]}, not the {size}x{size} "
                f"that {folder / INFO_JSON} records: run the detect stage again (dvc repro -f detect)"
            )
        faces[i] = np.asarray(image)
    return faces, ids


def _read_crop(path: Path) -> Image.Image:
    """A crop the detect stage wrote (8-bit RGB PNG): plain Pillow, not the data package's reader for any image."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}): run the detect stage again (dvc repro -f detect)") from None
