"""validate: Great Expectations checks of data/faces and data/train -> reports/validation.json (+ Data Docs).

A failed expectation exits non-zero, so ``dvc repro`` stops before training.
"""

from __future__ import annotations

import contextlib
import logging

from anime_avatar import layout
from anime_avatar.augment import load_train_images
from anime_avatar.errors import UserError, ValidationFailed
from anime_avatar.fsutil import atomic_dir, atomic_write_json, read_csv
from anime_avatar.params import Params
from anime_avatar.stage import run_stage
from anime_avatar.validation import expectations, face_table, report, run_suites, train_table

log = logging.getLogger(__name__)


def validate(params: Params) -> None:
    cfg = params.validation
    size = params.detect.image_size
    for needed in (layout.FACES_DIR / layout.FACES_CSV, layout.TRAIN_DIR / layout.TRAIN_INDEX):
        if not needed.is_file():
            raise UserError(f"{needed} is missing: run the detect and augment stages first")
    faces = face_table(layout.FACES_DIR, [r["face_id"] for r in read_csv(layout.FACES_DIR / layout.FACES_CSV)])
    train = train_table(load_train_images(layout.TRAIN_DIR))
    per_face = params.augment.copies + int(params.augment.keep_original)
    tables = {
        "faces": (faces, expectations(cfg, size)),
        "train": (train, expectations(cfg, size, row_count=len(faces) * per_face)),
    }
    docs = atomic_dir(layout.DATA_DOCS_DIR) if cfg.data_docs else contextlib.nullcontext(None)
    with docs as docs_dir:
        results = run_suites(tables, docs_dir)
    summary = report(results, {name: df for name, (df, _) in tables.items()})
    atomic_write_json(layout.VALIDATION_REPORT, summary)
    if cfg.data_docs:
        log.info("Data Docs: %s", (layout.DATA_DOCS_DIR / "index.html").resolve())
    if not summary["success"]:
        raise ValidationFailed(
            f"{len(summary['failed'])} expectation(s) failed (see {layout.VALIDATION_REPORT}):\n  "
            + "\n  ".join(summary["failed"])
        )
    log.info("all %d expectations passed on %d faces and %d training images", len(results), len(faces), len(train))


if __name__ == "__main__":
    run_stage("validate", validate)
