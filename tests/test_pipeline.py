"""End to end: `dvc repro validate` (the four data stages) in a fresh DVC workspace, on tiny params."""

from __future__ import annotations

import json

import pytest

from anime_avatar.core.fsutil import read_csv
from tests.conftest import GETCHU, needs_shared, run

TINY = {
    "data": {"synthetic": {"count": 12, "size": 512}},
    "detect": {"image_size": 32},
    "validate": {"min_count": 8},
}

pytestmark = pytest.mark.slow


def test_dvc_repro_runs_the_data_stages_and_stops_on_failed_validation(project):
    work = project(TINY)
    run(["dvc", "repro", "validate"], work)

    manifest = read_csv(work / "data/raw/manifest.csv")
    assert len(manifest) == 12
    assert all(json.loads(row["faces"]) for row in manifest)
    faces = read_csv(work / "data/faces/faces.csv")
    true_faces = sum(len(json.loads(row["faces"])) for row in manifest)
    assert 0.8 * true_faces <= len(faces) <= 1.2 * true_faces
    assert {row["detector"] for row in faces} == {"animeface"}
    assert all((work / "data/faces" / f"{row['face_id']}.png").is_file() for row in faces)
    index = json.loads((work / "data/train/index.json").read_text())
    assert index["count"] == 2 * len(faces) and index["image_size"] == 32
    report = json.loads((work / "reports/validation.json").read_text())
    assert report["success"] is True and report["tables"]["train"]["rows"] == 2 * len(faces)
    assert (work / "reports/data_docs/index.html").is_file()

    again = run(["dvc", "repro", "validate"], work)
    assert "Data and pipelines are up to date" in again.stdout

    # A failing expectation stops the pipeline with its name, and keeps the training data.
    params = (work / "params.yaml").read_text().replace("min_count: 8", "min_count: 100000")
    (work / "params.yaml").write_text(params)
    failed = run(["dvc", "repro", "validate"], work, check=False)
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "expect_table_row_count_to_be_between on faces" in output
    assert "Traceback" not in output
    assert json.loads((work / "data/train/index.json").read_text()) == index
    assert json.loads((work / "reports/validation.json").read_text())["success"] is False


def test_bad_params_stop_a_stage_with_one_message(project):
    work = project(TINY)
    (work / "params.yaml").write_text((work / "params.yaml").read_text().replace("margin: 0.25", "margin: -3"))
    proc = run(["python", "-m", "stages.detect"], work, check=False)
    assert proc.returncode == 1
    assert "detect.margin: Input should be greater than or equal to 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_input_names_the_stage_to_run(project):
    work = project(TINY)
    proc = run(["python", "-m", "stages.detect"], work, check=False)
    assert proc.returncode == 1 and "run the download stage first" in proc.stderr


@needs_shared(GETCHU)
def test_getchu_faces_run_through_all_data_stages_with_detector_none(project):
    work = project(
        {
            "data": {"source": "local", "path": str(GETCHU), "license": "research use only"},
            "detect": {"detector": "none"},
        }
    )
    run(["dvc", "repro", "validate"], work)
    assert len(read_csv(work / "data/raw/manifest.csv")) == 10_000
    faces = read_csv(work / "data/faces/faces.csv")
    duplicates = read_csv(work / "data/faces/duplicates.csv")
    assert len(faces) + len(duplicates) == 10_000
    assert len(faces) > 9_500
    report = json.loads((work / "reports/validation.json").read_text())
    assert report["success"] is True and report["tables"]["faces"]["rows"] == len(faces)
