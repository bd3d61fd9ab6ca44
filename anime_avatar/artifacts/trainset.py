"""``data/train/``: the training images as uint8 ``.npy`` shards, ``index.json`` and ``index.csv``.

``index.json`` records the count, the image side and how many training images each face
gave (``per_face``), so training and validation read those facts from the data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anime_avatar.core.errors import UserError, first_line
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
    folder: Path, images: Iterable[np.ndarray], variants: Sequence[Variant], shard_size: int, per_face: int
) -> TrainSetInfo:
    """Write the images in shards of ``shard_size``, the per-image index, and index.json.

    ``images`` is one (N, S, S, 3) uint8 array or any iterable of (S, S, 3) images: an iterator is consumed
    one shard at a time, so memory holds about one shard (its images, then their stacked copy), however large
    the set.
    """
    if isinstance(images, np.ndarray):
        _check_images(images)  # the whole array up front: nothing written for a wrong one
    shards: list[tuple[str, int]] = []
    side = images.shape[1] if isinstance(images, np.ndarray) else 0
    for n, chunk in enumerate(_shards(images, shard_size)):
        if side and chunk.shape[1] != side:
            raise ValueError(f"training images must all be {side}x{side}, shard {n} holds {chunk.shape}")
        side = chunk.shape[1]
        name = SHARD_PATTERN.format(n)
        np.save(folder / name, chunk)
        shards.append((name, len(chunk)))
    if not side:
        raise ValueError("no training images to write")
    write_csv(
        folder / INDEX_CSV,
        ({"index": i, "face_id": v.face_id, "copy": v.copy} for i, v in enumerate(variants)),  # no list of N rows
        INDEX_FIELDS,
    )
    info = TrainSetInfo(sum(count for _, count in shards), side, 3, per_face, tuple(shards))
    atomic_write_json(
        folder / INDEX_JSON,
        {"count": info.count, "image_size": info.image_size, "channels": info.channels, "per_face": per_face,
         "shards": [{"file": f, "count": c} for f, c in shards]},
    )  # fmt: skip
    return info


def _check_images(images: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"training images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")


def _shards(images: Iterable[np.ndarray], shard_size: int) -> Iterator[np.ndarray]:
    """Consecutive (n <= shard_size, S, S, 3) arrays of the images, each checked, each made when the last is done."""
    batch: list[np.ndarray] = []
    for image in images:
        batch.append(image)
        if len(batch) == shard_size:
            yield _stacked(batch)
            batch = []
    if batch:
        yield _stacked(batch)


def _stacked(batch: list[np.ndarray]) -> np.ndarray:
    if any(image.shape != batch[0].shape for image in batch):
        shapes = sorted({image.shape for image in batch})
        raise ValueError(f"training images must all have one shape, got {shapes}")
    chunk = np.stack(batch)  # a new C-contiguous array: the bytes np.save writes for a slice of the whole set
    _check_images(chunk)
    return chunk


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
        raise UserError(f"{path}: not a training-image shard ({first_line(err)}): run dvc repro -f augment") from None


def _checked_shards(folder: Path, info: TrainSetInfo, mmap: bool) -> Iterator[np.ndarray]:
    """Each shard of the set in order, loaded when the previous one is done with, checked against index.json."""
    if sum(count for _, count in info.shards) != info.count:
        raise UserError(f"{folder / INDEX_JSON}'s shards do not add up to its count {info.count}: re-run augment")
    for name, count in info.shards:
        shard = _load_shard(folder / name, mmap)
        expected = (count, info.image_size, info.image_size, info.channels)
        if shard.shape != expected or shard.dtype != np.uint8:
            raise UserError(
                f"{folder / name} holds {shard.dtype} {shard.shape}, not the {expected} of {INDEX_JSON}: re-run augment"
            )
        yield shard
        del shard  # no reference left here while the next one loads


class TrainImages:
    """The training set read in place: its shards memory-mapped, a batch gathered from them by index. Nothing
    copies the whole set into a process (the pages read stay in the OS's cache, shared by every process of a
    torchrun launch); ``take`` answers as ``np.ndarray.take(indices, axis=0)``, so an array serves as well."""

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        if not shards or not all(len(s) for s in shards):
            raise ValueError("a training set needs at least one image in each shard")
        self._shards = list(shards)
        self._ends = np.cumsum([len(s) for s in shards])
        self.shape: tuple[int, ...] = (int(self._ends[-1]), *shards[0].shape[1:])
        self.dtype = shards[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, indices: Iterable[int], axis: int = 0) -> np.ndarray:
        """The images at ``indices``, in that order, as one new array."""
        if axis != 0:
            raise ValueError("training images are taken along the first axis only")
        wanted = np.fromiter(indices, dtype=np.int64)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= len(self)):
            raise IndexError(f"image index out of range for a training set of {len(self)}")
        out = np.empty((len(wanted), *self.shape[1:]), self.dtype)
        shard_of = np.searchsorted(self._ends, wanted, side="right")
        for s in np.unique(shard_of):
            rows = shard_of == s
            out[rows] = self._shards[s][wanted[rows] - (self._ends[s] - len(self._shards[s]))]
        return out

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self.take(range(len(self)))
        return whole if dtype is None else whole.astype(dtype)


def open_train_images(folder: Path = TRAIN_DIR) -> TrainImages:
    """The training set of ``folder``, read in place (:class:`TrainImages`)."""
    info = read_train_info(folder)
    if info.count == 0:
        raise UserError(f"{folder / INDEX_JSON} holds no training images: re-run augment on a face set")
    return TrainImages(list(_checked_shards(folder, info, mmap=True)))


def load_train_images(folder: Path = TRAIN_DIR, mmap: bool = True) -> np.ndarray:
    """The training set as one (N, S, S, 3) uint8 array (memory-mapped shards, concatenated if several)."""
    arrays = list(_checked_shards(folder, read_train_info(folder), mmap))
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def iter_train_images(folder: Path = TRAIN_DIR) -> Iterator[np.ndarray]:
    """The training images one at a time, in order, from one memory-mapped shard at a time: unlike
    ``load_train_images``, nothing is concatenated, and each shard is unmapped before the next is opened."""
    for shard in _checked_shards(folder, read_train_info(folder), mmap=True):
        yield from shard
        del shard  # unmap it now: its pages leave this process's memory before the next shard's come in
