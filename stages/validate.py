"""validate: Great Expectations checks of data/faces and data/train -> reports/validation.json (+ an HTML report).

The expected image side and images per face come from the data's own records
(faces.json, index.json); a failed expectation exits non-zero, so ``dvc repro`` stops
before training.
"""

from __future__ import annotations

import logging

from anime_avatar.artifacts.faces import FACES_DIR, face_ids, read_face_info
from anime_avatar.artifacts.reports import DATA_DOCS_DIR, VALIDATION_REPORT
from anime_avatar.artifacts.trainset import TRAIN_DIR, iter_train_images, read_train_info
from anime_avatar.core.errors import ValidationFailed
from anime_avatar.core.fsutil import atomic_dir, atomic_write_json
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.data.validation import expectations, face_table, report, report_html, run_suites, train_table

log = logging.getLogger(__name__)


def validate(params: Params) -> None:
    cfg = params.validation
    face_info = read_face_info(FACES_DIR)
    train_info = read_train_info(TRAIN_DIR)
    faces = face_table(FACES_DIR, face_ids(FACES_DIR))
    train = train_table(iter_train_images(TRAIN_DIR), total=train_info.count)  # shard by shard, never concatenated
    tables = {
        # Faces are expected unique unless the detect stage kept near-duplicates (detect.dedup_distance: -1).
        "faces": (faces, expectations(cfg, face_info.image_size, unique_hash=face_info.deduplicated)),
        "train": (
            train,
            expectations(cfg, face_info.image_size, row_count=len(faces) * train_info.per_face, unique_hash=False),
        ),
    }
    results = run_suites(tables)
    summary = report(results, {name: df for name, (df, _) in tables.items()})
    atomic_write_json(VALIDATION_REPORT, summary)
    write_data_docs(summary, cfg.data_docs)
    if not summary["success"]:
        raise ValidationFailed(
            f"{len(summary['failed'])} expectation(s) failed (see {VALIDATION_REPORT}):\n  "
            + "\n  ".join(summary["failed"])
        )
    log.info("all %d expectations passed on %d faces and %d training images", len(results), len(faces), len(train))


def write_data_docs(summary: dict, enabled: bool) -> None:
    """reports/data_docs/index.html: the checks as one page, or (validate.data_docs: false) a page that says the
    report is off. The folder is written either way: dvc.yaml declares it, and an old report must not stay
    behind looking current."""
    page = report_html(summary) if enabled else DATA_DOCS_OFF
    with atomic_dir(DATA_DOCS_DIR) as docs_dir:
        (docs_dir / "index.html").write_text(page, encoding="utf-8")
    if enabled:
        log.info("validation report: %s", (DATA_DOCS_DIR / "index.html").resolve())


DATA_DOCS_OFF = """<!doctype html><html><head><meta charset="utf-8"><title>Validation report: off</title></head>
<body><p>The HTML validation report is off (<code>validate.data_docs: false</code>); the checks and their results are
in <code>reports/validation.json</code>.</p></body></html>
"""


if __name__ == "__main__":
    run_stage("validate", validate)
