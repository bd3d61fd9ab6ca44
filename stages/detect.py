"""detect: crop the faces of data/raw into data/faces/ (<face_id>.png, faces.csv, faces.json)."""

from __future__ import annotations

import logging

from anime_avatar.artifacts.faces import FACES_DIR, write_face_set
from anime_avatar.artifacts.raw import RAW_DIR, read_manifest
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_dir
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.data.detection import FileJob, collect_faces, zero_faces_message
from anime_avatar.data.executors import detect_results

log = logging.getLogger(__name__)


def detect(params: Params) -> None:
    cfg = params.detect
    jobs = [FileJob(image.relpath, str(RAW_DIR / image.relpath), image.sha256) for image in read_manifest(RAW_DIR)]
    summary = collect_faces(detect_results(jobs, cfg), cfg.dedup_distance)
    for source, error in summary.errors:
        log.warning("%s: %s", source, error)
    if not summary.kept:
        raise UserError(zero_faces_message(cfg, summary.images))
    with atomic_dir(FACES_DIR) as out:
        write_face_set(out, summary.kept, summary.duplicates, cfg.image_size, cfg.detector)
    log.info(
        "%d faces from %d images with %s (%d near-duplicates dropped)",
        len(summary.kept), summary.images, cfg.detector, len(summary.duplicates),
    )  # fmt: skip


if __name__ == "__main__":
    run_stage("detect", detect)
