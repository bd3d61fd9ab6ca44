"""augment: data/faces -> data/train (albumentations copies, packed uint8 .npy shards + index)."""

from __future__ import annotations

import logging

from anime_avatar.artifacts.faces import FACES_DIR, FaceFiles, read_face_info
from anime_avatar.artifacts.trainset import TRAIN_DIR, write_train_set
from anime_avatar.core.fsutil import atomic_dir
from anime_avatar.core.params import Params
from anime_avatar.core.progress import progress_bar
from anime_avatar.core.stage import run_stage
from anime_avatar.data.augment import augmented_images, check_transforms, per_face, train_variants

log = logging.getLogger(__name__)


def augment(params: Params) -> None:
    cfg = params.augment
    check_transforms(cfg, read_face_info(FACES_DIR).image_size)  # before any work: names a transform that cannot apply
    faces = FaceFiles(FACES_DIR)  # read crop by crop, once per pass: memory holds one shard, not the set
    variants = train_variants(faces.ids, cfg)
    images = progress_bar(
        iterable=augmented_images(faces, faces.ids, cfg), total=len(variants), desc="augment", unit="img", leave=False
    )
    with atomic_dir(TRAIN_DIR) as out:
        info = write_train_set(out, images, variants, cfg.shard_size, per_face(cfg))
    log.info("%d training images (%d faces x %d) in %s", info.count, len(faces), info.per_face, TRAIN_DIR)


if __name__ == "__main__":
    run_stage("augment", augment)
