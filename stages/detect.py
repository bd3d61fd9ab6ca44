"""detect: crop the faces of data/raw into data/faces/ (<face_id>.png, faces.csv, faces.json)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from anime_avatar.artifacts.faces import FACES_DIR, FaceSetWriter
from anime_avatar.artifacts.raw import RAW_DIR, read_manifest
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_dir
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.data.detection import DetectionTally, FileJob, Found, unique_faces, zero_faces_message
from anime_avatar.data.executors import detect_results

log = logging.getLogger(__name__)


def detect(params: Params) -> None:
    cfg = params.detect
    jobs = [FileJob(image.relpath, str(RAW_DIR / image.relpath), image.sha256) for image in read_manifest(RAW_DIR)]
    tally = DetectionTally()
    with atomic_dir(FACES_DIR) as out:  # crops go to a temporary folder as they come; it replaces data/faces at the end
        faces = FaceSetWriter(out)
        duplicates = write_faces(unique_faces(detect_results(jobs, cfg), cfg.dedup_distance, tally), faces)
        for source, error in tally.errors:
            log.warning("%s: %s", source, error)
        if not faces.count:
            raise UserError(zero_faces_message(cfg, tally.images))  # the temporary folder goes, data/faces stays
        faces.finish(cfg.image_size, cfg.detector, deduplicated=cfg.dedup_distance >= 0)
    log.info(
        "%d faces from %d images with %s (%d near-duplicates dropped)",
        faces.count, tally.images, cfg.detector, duplicates,
    )  # fmt: skip


def write_faces(found: Iterable[Found], faces: FaceSetWriter) -> int:
    """Write each kept crop as it comes and record each near-duplicate; returns how many were dropped."""
    dropped = 0
    for item in found:
        if item.duplicate_of:
            faces.add_duplicate(item.crop, item.duplicate_of, item.distance)
            dropped += 1
        else:
            faces.add(item.crop)
    return dropped


if __name__ == "__main__":
    run_stage("detect", detect)
