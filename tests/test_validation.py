import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anime_avatar.data.validation import expectations, face_table, report, report_html, run_suites, train_table
from tests.conftest import params_with, peak_traced_bytes, section


def varied_faces(n: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(1).integers(40, 220, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checks():
    """Run GX once over a good table and a table with one of every fault."""
    params = section("validate", min_count=5)
    good = train_table(varied_faces(8))
    bad = train_table(varied_faces(8))
    bad.loc[1, "brightness"] = 0.99  # too bright
    bad.loc[2, "contrast"] = 0.0  # flat
    bad.loc[3, "hash"] = bad.loc[4, "hash"]  # duplicate
    bad.loc[5, "width"] = 15
    bad.loc[6, "readable"] = False
    results = run_suites(
        {"good": (good, expectations(params, 16)), "bad": (bad, expectations(params, 16, row_count=9))}
    )
    return results, {"good": good, "bad": bad}


def test_good_table_passes_every_expectation(checks):
    results, _ = checks
    good = [r for r in results if r.table == "good"]
    assert len(good) == 8 and all(r.success for r in good)


def test_each_fault_fails_its_expectation(checks):
    results, tables = checks
    failed = {(r.expectation, r.column) for r in results if r.table == "bad" and not r.success}
    assert failed == {
        ("expect_table_row_count_to_equal", ""),
        ("expect_column_values_to_be_between", "brightness"),
        ("expect_column_values_to_be_between", "contrast"),
        ("expect_column_values_to_be_unique", "hash"),
        ("expect_column_values_to_be_between", "width"),
        ("expect_column_values_to_be_in_set", "readable"),
    }
    summary = report(results, tables)
    assert summary["success"] is False
    assert summary["tables"] == {"good": {"rows": 8}, "bad": {"rows": 8}}
    assert any("brightness" in line and "0.99" in line for line in summary["failed"])


def test_a_failure_names_the_images_that_fail_it(checks):
    """Not only the values: which of 8000 faces has a brightness of 0.99?"""
    results, tables = checks
    failed = {r.column: r for r in results if r.table == "bad" and not r.success}
    assert failed["brightness"].unexpected_examples == [{"image": "train[1]", "value": 0.99}]
    assert failed["hash"].unexpected_examples == [
        {"image": "train[3]", "value": tables["bad"].loc[4, "hash"]},
        {"image": "train[4]", "value": tables["bad"].loc[4, "hash"]},
    ]
    failures = report(results, tables)["failed"]
    assert "expect_column_values_to_be_between on bad.width: 1 unexpected, e.g. train[5] = 15" in failures


def test_face_table_marks_unreadable_files(tmp_path):
    Image.fromarray(varied_faces(1)[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    table = face_table(tmp_path, ["a", "b", "missing"])
    assert table["readable"].tolist() == [True, False, False]
    assert table.loc[0, ["width", "height", "channels"]].tolist() == [16, 16, 3]
    assert table["hash"].is_unique


def test_html_report_is_self_contained_and_names_every_check(checks, tmp_path):
    results, tables = checks
    page = report_html(report(results, tables))
    # Readable offline: no stylesheet, script, font or image fetched from anywhere.
    assert "<style>" in page and "<script" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page and "src=" not in page
    assert "FAILED" in page and page.count('<tr class="failed">') == 6 and page.count('<tr class="passed">') == 10
    assert 'good <span class="muted">(8 rows)</span>' in page
    assert "expect_column_values_to_be_unique" in page and "train[1] = 0.99" in page
    passing = report_html(report([r for r in results if r.table == "good"], {"good": tables["good"]}))
    assert "PASSED" in passing and "FAIL<" not in passing


def test_the_training_images_may_repeat_a_face_which_the_faces_table_may_not():
    """A random flip with p 0.5 gives the original back half the time: a repeat within the training images is
    allowed there; the faces they come from must be unique."""
    params = section("validate", min_count=5)
    faces = varied_faces(6)
    train = train_table(np.concatenate([faces, faces[:1]]))  # face 0 twice, as an unflipped copy would
    suite = expectations(params, 16, row_count=7, unique_hash=False)
    assert "hash" not in {getattr(e, "column", None) for e in suite}
    (unique,) = [e for e in expectations(params, 16) if getattr(e, "column", None) == "hash"]
    results = run_suites({"train": (train, suite), "faces": (train, [unique])})
    assert {(r.table, r.expectation): r.success for r in results if r.table == "faces"} == {
        ("faces", "expect_column_values_to_be_unique"): False
    }
    assert all(r.success for r in results if r.table == "train")


def test_data_docs_off_still_writes_the_declared_folder_saying_so(tmp_path, monkeypatch):
    from stages.validate import write_data_docs

    monkeypatch.chdir(tmp_path)
    summary = {"success": True, "failed": [], "tables": {}, "checks": []}
    (tmp_path / "reports" / "data_docs").mkdir(parents=True)
    (tmp_path / "reports" / "data_docs" / "index.html").write_text("an old report")
    write_data_docs(summary, enabled=False)  # dvc.yaml declares the folder: it must exist after the stage
    page = (tmp_path / "reports" / "data_docs" / "index.html").read_text()
    assert "validate.data_docs: false" in page and "an old report" not in page


# --- the training images are inspected shard by shard: the same table, without a whole-set copy ----------------


def write_shards(folder, n: int, size: int, shard_size: int) -> np.ndarray:
    from anime_avatar.artifacts.trainset import Variant, write_train_set

    images = varied_faces(n, size)
    folder.mkdir(parents=True)
    write_train_set(folder, images, [Variant(str(i), 0) for i in range(n)], shard_size, per_face=1)
    return images


def test_train_table_over_the_shards_is_the_table_of_the_whole_array(tmp_path):
    from anime_avatar.artifacts.trainset import iter_train_images

    images = write_shards(tmp_path / "train", n=23, size=16, shard_size=5)
    streamed = train_table(iter_train_images(tmp_path / "train"))
    pd.testing.assert_frame_equal(streamed, train_table(images))
    assert len(streamed) == 23 and streamed["hash"].is_unique


def test_a_shard_that_disagrees_with_the_index_is_named(tmp_path):
    from anime_avatar.artifacts.trainset import iter_train_images
    from anime_avatar.core.errors import UserError

    write_shards(tmp_path / "train", n=10, size=16, shard_size=4)
    np.save(tmp_path / "train" / "images-00001.npy", np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(UserError, match=r"images-00001.npy holds uint8 \(3, 16, 16, 3\), not the \(4, 16, 16, 3\)"):
        list(iter_train_images(tmp_path / "train"))


def test_validate_stage_does_not_copy_the_training_set_into_memory(tmp_path, monkeypatch):
    """It once concatenated the memory-mapped shards into one array; now it reads them one at a time."""
    import stages.validate
    from anime_avatar.artifacts.faces import write_face_set

    monkeypatch.chdir(tmp_path)
    write_face_set(tmp_path / "data" / "faces", [], [], image_size=64, detector="none")
    images = write_shards(tmp_path / "data" / "train", n=1000, size=64, shard_size=50)  # 12.3 MB; shards of 614 kB
    tables = {}
    monkeypatch.setattr(stages.validate, "run_suites", lambda t: tables.update(t) or [])  # GX is not measured
    params = params_with({"validate": {"data_docs": False}})
    stages.validate.validate(params)  # once before the measure: the modules it imports (GX's: ~100 MB) are loaded
    peak = peak_traced_bytes(lambda: stages.validate.validate(params))
    assert peak < images.nbytes / 4, f"peak {peak / 1e6:.2f} MB for a {images.nbytes / 1e6:.2f} MB training set"
    train, _ = tables["train"]
    assert train["hash"].tolist() == [hashlib.md5(image.tobytes()).hexdigest() for image in images]


@pytest.mark.parametrize("deduplicated", [True, False])
def test_faces_are_expected_unique_unless_the_detect_stage_kept_near_duplicates(tmp_path, monkeypatch, deduplicated):
    """detect.dedup_distance: -1 keeps near-duplicates on purpose: validation's uniqueness check then failed on them."""
    import json

    import stages.validate
    from anime_avatar.artifacts.faces import read_face_info, write_face_set

    monkeypatch.chdir(tmp_path)
    faces = tmp_path / "data" / "faces"
    write_face_set(faces, [], [], image_size=16, detector="none", deduplicated=deduplicated)
    assert read_face_info(faces).deduplicated is deduplicated
    write_shards(tmp_path / "data" / "train", n=0, size=16, shard_size=5)
    tables = {}
    monkeypatch.setattr(stages.validate, "run_suites", lambda t: tables.update(t) or [])
    stages.validate.validate(params_with({"validate": {"data_docs": False}}))
    checked = {getattr(e, "column", None) for e in tables["faces"][1]}
    assert ("hash" in checked) is deduplicated
    # A faces.json from before the flag was recorded: made with the default, which drops near-duplicates.
    info = json.loads((faces / "faces.json").read_text())
    del info["deduplicated"]
    (faces / "faces.json").write_text(json.dumps(info))
    assert read_face_info(faces).deduplicated is True
