"""detect: crop the faces of data/raw into data/faces/<face_id>.png with faces.csv."""

from __future__ import annotations

import logging

from anime_avatar import layout
from anime_avatar.detection import (
    DUPLICATE_FIELDS,
    FACE_FIELDS,
    FileJob,
    collect_faces,
    detect_results,
    zero_faces_message,
)
from anime_avatar.errors import UserError
from anime_avatar.fsutil import atomic_dir, read_csv, write_csv
from anime_avatar.params import Params
from anime_avatar.stage import run_stage

log = logging.getLogger(__name__)


def raw_jobs() -> list[FileJob]:
    manifest = layout.RAW_DIR / layout.MANIFEST
    if not manifest.is_file():
        raise UserError(f"{manifest} is missing: run the download stage first (dvc repro download)")
    return [FileJob(r["relpath"], str(layout.RAW_DIR / r["relpath"]), r["sha256"]) for r in read_csv(manifest)]


def detect(params: Params) -> None:
    cfg = params.detect
    jobs = raw_jobs()
    summary = collect_faces(detect_results(jobs, cfg), cfg.dedup_distance)
    for source, error in summary.errors:
        log.warning("%s: %s", source, error)
    if not summary.kept:
        raise UserError(zero_faces_message(cfg, summary.images))
    with atomic_dir(layout.FACES_DIR) as out:
        for crop in summary.kept:
            (out / f"{crop.face_id}.png").write_bytes(crop.png)
        write_csv(out / layout.FACES_CSV, [c.row() for c in summary.kept], FACE_FIELDS)
        write_csv(
            out / layout.DUPLICATES_CSV,
            [
                {"face_id": dup.face_id, "source": dup.source, "duplicate_of": orig.face_id, "distance": dist}
                for dup, orig, dist in summary.duplicates
            ],
            DUPLICATE_FIELDS,
        )
    log.info(
        "%d faces from %d images with %s (%d near-duplicates dropped)",
        len(summary.kept), summary.images, cfg.detector, len(summary.duplicates),
    )  # fmt: skip


if __name__ == "__main__":
    run_stage("detect", detect)
