"""validate: Great Expectations checks of data/faces and data/train -> reports/validation.json (+ an HTML report).

The expected image side and images per face come from the data's own records
(faces.json, index.json); a failed expectation exits non-zero, so ``dvc repro`` stops
before training.
"""

from __future__ import annotations

import logging

from anime_avatar.artifacts.faces import FACES_DIR, face_ids, read_face_info
from anime_avatar.artifacts.reports import DATA_DOCS_DIR, VALIDATION_REPORT
from anime_avatar.artifacts.trainset import TRAIN_DIR, load_train_images, read_train_info
from anime_avatar.core.errors import ValidationFailed
from anime_avatar.core.fsutil import atomic_dir, atomic_write_json
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.data.validation import expectations, face_table, report, report_html, run_suites, train_table

log = logging.getLogger(__name__)


def validate(params: Params) -> None:
    cfg = params.validation
    size = read_face_info(FACES_DIR).image_size
    per_face = read_train_info(TRAIN_DIR).per_face
    faces = face_table(FACES_DIR, face_ids(FACES_DIR))
    train = train_table(load_train_images(TRAIN_DIR))
    tables = {
        "faces": (faces, expectations(cfg, size)),
        "train": (train, expectations(cfg, size, row_count=len(faces) * per_face)),
    }
    results = run_suites(tables)
    summary = report(results, {name: df for name, (df, _) in tables.items()})
    atomic_write_json(VALIDATION_REPORT, summary)
    if cfg.data_docs:
        with atomic_dir(DATA_DOCS_DIR) as docs_dir:
            (docs_dir / "index.html").write_text(report_html(summary), encoding="utf-8")
        log.info("validation report: %s", (DATA_DOCS_DIR / "index.html").resolve())
    if not summary["success"]:
        raise ValidationFailed(
            f"{len(summary['failed'])} expectation(s) failed (see {VALIDATION_REPORT}):\n  "
            + "\n  ".join(summary["failed"])
        )
    log.info("all %d expectations passed on %d faces and %d training images", len(results), len(faces), len(train))


if __name__ == "__main__":
    run_stage("validate", validate)
