"""augment: data/faces -> data/train (albumentations copies, packed uint8 .npy shards + index)."""

from __future__ import annotations

import logging

from anime_avatar import layout
from anime_avatar.augment import INDEX_FIELDS, augment_faces, build_pipeline, load_faces, write_shards
from anime_avatar.fsutil import atomic_dir, atomic_write_json, write_csv
from anime_avatar.params import Params
from anime_avatar.stage import run_stage

log = logging.getLogger(__name__)


def augment(params: Params) -> None:
    cfg = params.augment
    build_pipeline(cfg)  # fail on bad transforms before any work
    faces, ids = load_faces(layout.FACES_DIR, params.detect.image_size)
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
