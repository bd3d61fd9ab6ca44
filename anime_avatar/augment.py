"""Offline augmentation with albumentations, packed into uint8 .npy shards for fast loading.

Only transforms whose effect a GAN must not learn to reproduce belong here (a
horizontal flip is fine: mirrored faces are still faces). Colour jitter, cutout
and the like leak into the generated images; they belong to training-time
augmentation (DiffAugment) instead.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anime_avatar.errors import ParamsError
from anime_avatar.params import AugmentParams

SHARD_PATTERN = "images-{:05d}.npy"
INDEX_FIELDS = ("index", "face_id", "copy")


def build_pipeline(params: AugmentParams):  # -> albumentations.Compose
    """An albumentations Compose from ``augment.transforms``; a bad entry raises ParamsError naming it."""
    import albumentations as A

    transforms = []
    for i, spec in enumerate(params.transforms):
        key = f"augment.transforms[{i}]"
        cls = getattr(A, spec.name, None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise ParamsError(f"{key}.name: {spec.name!r} is not an albumentations transform")
        try:
            with warnings.catch_warnings():
                # albumentations only warns about unknown arguments; a typo must not pass silently.
                warnings.simplefilter("error", UserWarning)
                transforms.append(cls(**spec.kwargs))
        except (TypeError, ValueError, UserWarning) as err:
            raise ParamsError(f"{key} ({spec.name}): {err}") from None
    return A.Compose(transforms, seed=params.seed)


@dataclass(frozen=True)
class Variant:
    face_id: str
    copy: int  # 0 is the original when keep_original, else the first augmented copy


def augment_faces(
    faces: np.ndarray, face_ids: Sequence[str], params: AugmentParams
) -> tuple[np.ndarray, list[Variant]]:
    """Return the training images (originals first if kept, then each copy of every face)."""
    pipeline = build_pipeline(params) if params.copies else None
    out: list[np.ndarray] = []
    variants: list[Variant] = []
    if params.keep_original:
        out.append(faces)
        variants += [Variant(fid, 0) for fid in face_ids]
    first = 1 if params.keep_original else 0
    for c in range(params.copies):
        assert pipeline is not None
        copy = np.stack([pipeline(image=face)["image"] for face in faces])
        if copy.dtype != np.uint8 or copy.shape != faces.shape:
            raise ParamsError(
                "augment.transforms must keep the image size and uint8 type "
                f"(got {copy.dtype} {copy.shape[1:]} from {faces.shape[1:]})"
            )
        out.append(copy)
        variants += [Variant(fid, first + c) for fid in face_ids]
    return np.concatenate(out), variants


def write_shards(images: np.ndarray, folder: Path, shard_size: int) -> list[dict[str, int | str]]:
    shards = []
    for n, start in enumerate(range(0, len(images), shard_size)):
        name = SHARD_PATTERN.format(n)
        np.save(folder / name, np.ascontiguousarray(images[start : start + shard_size]))
        shards.append({"file": name, "count": int(min(shard_size, len(images) - start))})
    return shards


def load_faces(folder: Path, image_size: int) -> tuple[np.ndarray, list[str]]:
    """The face crops listed in ``<folder>/faces.csv`` as one (N, S, S, 3) uint8 array, with their ids."""
    from tqdm import tqdm

    from anime_avatar.errors import UserError
    from anime_avatar.fsutil import read_csv
    from anime_avatar.images import load_rgb

    faces_csv = folder / "faces.csv"
    if not faces_csv.is_file():
        raise UserError(f"{faces_csv} is missing: run the detect stage first (dvc repro detect)")
    ids = [row["face_id"] for row in read_csv(faces_csv)]
    faces = np.empty((len(ids), image_size, image_size, 3), dtype=np.uint8)
    for i, face_id in enumerate(tqdm(ids, desc="load faces", unit="img", leave=False)):
        image = load_rgb(folder / f"{face_id}.png")
        if image.size != (image_size, image_size):
            raise UserError(
                f"{face_id}.png is {image.size[0]}x{image.size[1]}, not detect.image_size={image_size}: "
                "re-run the detect stage"
            )
        faces[i] = np.asarray(image)
    return faces, ids


def load_train_images(folder: Path, mmap: bool = True) -> np.ndarray:
    """The packed training set as one (N, H, W, 3) uint8 array (memory-mapped shards concatenated)."""
    index = json.loads((folder / "index.json").read_text())
    arrays = [np.load(folder / s["file"], mmap_mode="r" if mmap else None) for s in index["shards"]]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
