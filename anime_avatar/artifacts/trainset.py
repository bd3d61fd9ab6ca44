"""``data/train/``: the training images as uint8 ``.npy`` shards, ``index.json`` and ``index.csv``.

``index.json`` records the count, the image side and how many training images each face
gave (``per_face``), so training and validation read those facts from the data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_json, write_csv

TRAIN_DIR = Path("data/train")
INDEX_JSON = "index.json"
INDEX_CSV = "index.csv"
SHARD_PATTERN = "images-{:05d}.npy"
INDEX_FIELDS = ("index", "face_id", "copy")


@dataclass(frozen=True)
class Variant:
    """Which face a training image comes from; copy 0 is the original when it was kept."""

    face_id: str
    copy: int


@dataclass(frozen=True)
class TrainSetInfo:
    count: int
    image_size: int
    channels: int
    per_face: int  # training images made from each face
    shards: tuple[tuple[str, int], ...]  # (file, images)


def write_train_set(
    folder: Path, images: np.ndarray, variants: Sequence[Variant], shard_size: int, per_face: int
) -> TrainSetInfo:
    """Write the images in shards of ``shard_size``, the per-image index, and index.json."""
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"training images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    shards = []
    for n, start in enumerate(range(0, len(images), shard_size)):
        name = SHARD_PATTERN.format(n)
        chunk = np.ascontiguousarray(images[start : start + shard_size])
        np.save(folder / name, chunk)
        shards.append((name, len(chunk)))
    write_csv(
        folder / INDEX_CSV,
        [{"index": i, "face_id": v.face_id, "copy": v.copy} for i, v in enumerate(variants)],
        INDEX_FIELDS,
    )
    info = TrainSetInfo(len(images), images.shape[1], 3, per_face, tuple(shards))
    atomic_write_json(
        folder / INDEX_JSON,
        {"count": info.count, "image_size": info.image_size, "channels": info.channels, "per_face": per_face,
         "shards": [{"file": f, "count": c} for f, c in shards]},
    )  # fmt: skip
    return info


def read_train_info(folder: Path = TRAIN_DIR) -> TrainSetInfo:
    path = folder / INDEX_JSON
    if not path.is_file():
        raise UserError(f"{path} is missing: run the augment stage first (dvc repro augment)")
    try:
        raw = json.loads(path.read_text())
        shards = tuple((s["file"], int(s["count"])) for s in raw["shards"])
        return TrainSetInfo(
            int(raw["count"]), int(raw["image_size"]), int(raw["channels"]), int(raw["per_face"]), shards
        )
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is damaged or from an older version ({err}): run dvc repro -f augment") from None


def _load_shard(path: Path, mmap: bool) -> np.ndarray:
    """One shard, plain numbers only: an object array (which only pickle could build) is refused, never run."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: not a training-image shard ({first}): run dvc repro -f augment") from None


def load_train_images(folder: Path = TRAIN_DIR, mmap: bool = True) -> np.ndarray:
    """The training set as one (N, S, S, 3) uint8 array (memory-mapped shards, concatenated if several)."""
    info = read_train_info(folder)
    arrays = [_load_shard(folder / name, mmap) for name, _ in info.shards]
    images = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    expected = (info.count, info.image_size, info.image_size, info.channels)
    if images.shape != expected or images.dtype != np.uint8:
        raise UserError(
            f"{folder} holds {images.dtype} {images.shape}, not the {expected} of {INDEX_JSON}: re-run augment"
        )
    return images
