"""augment: data/faces -> data/train (albumentations copies, packed uint8 .npy shards + index)."""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from anime_avatar import layout
from anime_avatar.augment import INDEX_FIELDS, augment_faces, build_pipeline, write_shards
from anime_avatar.errors import UserError
from anime_avatar.fsutil import atomic_dir, atomic_write_json, read_csv, write_csv
from anime_avatar.images import load_rgb
from anime_avatar.params import Params
from anime_avatar.stage import run_stage

log = logging.getLogger(__name__)


def load_faces(image_size: int) -> tuple[np.ndarray, list[str]]:
    faces_csv = layout.FACES_DIR / layout.FACES_CSV
    if not faces_csv.is_file():
        raise UserError(f"{faces_csv} is missing: run the detect stage first (dvc repro detect)")
    ids = [row["face_id"] for row in read_csv(faces_csv)]
    faces = np.empty((len(ids), image_size, image_size, 3), dtype=np.uint8)
    for i, face_id in enumerate(tqdm(ids, desc="load faces", unit="img", leave=False)):
        image = load_rgb(layout.FACES_DIR / f"{face_id}.png")
        if image.size != (image_size, image_size):
            raise UserError(
                f"{face_id}.png is {image.size[0]}x{image.size[1]}, not detect.image_size={image_size}: "
                "re-run the detect stage"
            )
        faces[i] = np.asarray(image)
    return faces, ids


def augment(params: Params) -> None:
    cfg = params.augment
    build_pipeline(cfg)  # fail on bad transforms before any work
    faces, ids = load_faces(params.detect.image_size)
    images, variants = augment_faces(faces, ids, cfg)
    with atomic_dir(layout.TRAIN_DIR) as out:
        shards = write_shards(images, out, cfg.shard_size)
        write_csv(
            out / "index.csv",
            [{"index": i, "face_id": v.face_id, "copy": v.copy} for i, v in enumerate(variants)],
            INDEX_FIELDS,
        )
        atomic_write_json(
            out / layout.TRAIN_INDEX,
            {"count": len(images), "image_size": params.detect.image_size, "channels": 3, "shards": shards},
        )
    log.info(
        "%d training images (%d faces x %d) in %s", len(images), len(ids), len(images) // len(ids), layout.TRAIN_DIR
    )


if __name__ == "__main__":
    run_stage("augment", augment)
