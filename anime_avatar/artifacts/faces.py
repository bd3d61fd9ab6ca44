"""``data/faces/``: square face crops ``<face_id>.png``, ``faces.csv``, ``duplicates.csv`` and ``faces.json``.

``faces.json`` records the facts later stages need (the crops' side, their count, the
detector), so they read them here instead of from the detect section of params.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import overload

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
    # Whether near-duplicates were dropped (detect.dedup_distance >= 0): validation then expects unique faces. A
    # faces.json written before it was recorded was made with the default, which drops them.
    deduplicated: bool = True


def face_path(folder: Path, face_id: str) -> Path:
    return folder / f"{face_id}.png"


def write_face_set(
    folder: Path,
    crops: Sequence[FaceCrop],
    duplicates: Sequence[tuple[FaceCrop, FaceCrop, int]],
    image_size: int,
    detector: str,
    deduplicated: bool = True,
) -> FaceSetInfo:
    """Write the crops, their table, the dropped near-duplicates (dropped, kept, distance) and the info file."""
    writer = FaceSetWriter(folder)
    for crop in crops:
        writer.add(crop)
    for dropped, kept, distance in duplicates:
        writer.add_duplicate(dropped, kept.face_id, distance)
    return writer.finish(image_size, detector, deduplicated)


class FaceSetWriter:
    """Writes a face set into ``folder`` as the crops come: each PNG at once (so no crop's bytes wait in memory
    for the rest), the tables and the info file at the end. ``folder`` is the stage's temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._rows: list[dict[str, object]] = []
        self._duplicates: list[dict[str, object]] = []

    def add(self, crop: FaceCrop) -> None:
        face_path(self.folder, crop.face_id).write_bytes(crop.png)
        self._rows.append(crop.row())

    def add_duplicate(self, dropped: FaceCrop, duplicate_of: str, distance: int) -> None:
        """A near-duplicate left out: recorded in duplicates.csv, its crop not written."""
        self._duplicates.append(
            {"face_id": dropped.face_id, "source": dropped.source, "duplicate_of": duplicate_of, "distance": distance}
        )

    @property
    def count(self) -> int:
        return len(self._rows)

    def finish(self, image_size: int, detector: str, deduplicated: bool) -> FaceSetInfo:
        write_csv(self.folder / FACES_CSV, self._rows, FACE_FIELDS)
        write_csv(self.folder / DUPLICATES_CSV, self._duplicates, DUPLICATE_FIELDS)
        info = FaceSetInfo(image_size, len(self._rows), detector, deduplicated)
        atomic_write_json(self.folder / INFO_JSON, asdict(info))
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
    files = FaceFiles(folder)
    faces = np.empty((len(files), files.image_size, files.image_size, 3), dtype=np.uint8)
    for i, face in enumerate(
        progress_bar(iterable=files, total=len(files), desc="load faces", unit="img", leave=False)
    ):
        faces[i] = face
    return faces, files.ids


class FaceFiles(Sequence[np.ndarray]):
    """The crops of a face set as a sequence that reads each one from its PNG when asked: a pass over it holds
    one crop in memory, not the whole set as ``load_faces`` does."""

    def __init__(self, folder: Path = FACES_DIR) -> None:
        self.folder = folder
        self.image_size = read_face_info(folder).image_size
        self.ids = face_ids(folder)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (read_face(self.folder, face_id, self.image_size) for face_id in self.ids)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, index: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return read_face(self.folder, self.ids[index], self.image_size)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The crops in order as (n <= size, S, S, 3) arrays, each read when the last is done with."""
        for start in range(0, len(self), size):
            yield np.stack(self[start : start + size])


def read_face(folder: Path, face_id: str, size: int) -> np.ndarray:
    """One crop as a (size, size, 3) uint8 array; a crop of another size or an unreadable one raises UserError."""
    path = face_path(folder, face_id)
    image = _read_crop(path)
    if image.size != (size, size):
        raise UserError(
            f"{path} is {image.size[0]}x{image.size[1]}, not the {size}x{size} "
            f"that {folder / INFO_JSON} records: run the detect stage again (dvc repro -f detect)"
        )
    return np.array(image)  # a writable copy, as the rows of load_faces' array are


def _read_crop(path: Path) -> Image.Image:
    """A crop the detect stage wrote (8-bit RGB PNG): plain Pillow, not the data package's reader for any image."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}): run the detect stage again (dvc repro -f detect)") from None
