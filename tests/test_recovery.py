"""The flows' recovery after a failed stage, on a two-output DVC stage (one cached, one not)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pipelines.recovery import kept_outputs
from tests.conftest import run

DVC_YAML = {
    "stages": {
        "make": {
            "cmd": "python -c \"import pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True); "
            "(p / 'model.bin').write_text('model v1'); pathlib.Path('report.json').write_text('{\\\"ok\\\": 1}')\"",
            "outs": ["out", {"report.json": {"cache": False}}],
        }
    }
}


def workspace(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    run(["dvc", "init", "--no-scm", "-q"], tmp_path)
    run(["dvc", "repro"], tmp_path)
    return tmp_path


def test_the_previous_outputs_come_back_and_what_the_failed_run_wrote_is_set_aside(tmp_path):
    root = workspace(tmp_path)
    with kept_outputs(root, "make") as kept:
        assert kept.uncached == ["report.json"]
        shutil.rmtree(root / "out")  # what DVC does before running the stage again
        (root / "report.json").unlink()
        (root / "out").mkdir()  # the failed run made a folder and wrote nothing in it
        done = kept.restore()
    assert (done.paths, done.set_aside, done.problems) == (["out", "report.json"], [], [])
    assert (root / "out/model.bin").read_text() == "model v1" and (root / "report.json").read_text() == '{"ok": 1}'
    assert "up to date" in run(["dvc", "status"], root).stdout
    assert not any((root / ".dvc/tmp").rglob("report.json"))  # the kept copies are gone

    with kept_outputs(root, "make") as kept:
        shutil.rmtree(root / "out")
        (root / "report.json").write_text('{"ok": 0, "failed": "an expectation"}')  # the failed run's report
        done = kept.restore()
    assert (done.paths, done.set_aside) == (["out", "report.json"], ["report.json"])
    assert (root / "report.json").read_text() == '{"ok": 1}'
    assert (done.failed_dir / "report.json").read_text() == '{"ok": 0, "failed": "an expectation"}'
    assert "up to date" in run(["dvc", "status"], root).stdout


def test_outputs_dvc_never_removed_are_left_alone(tmp_path):
    root = workspace(tmp_path)
    with kept_outputs(root, "make") as kept:
        done = kept.restore()  # e.g. DVC stopped before running the stage
    assert (done.paths, done.set_aside, done.problems) == ([], [], [])
    assert (root / "out/model.bin").read_text() == "model v1" and (root / "report.json").read_text() == '{"ok": 1}'


def test_a_stage_that_never_ran_has_nothing_to_restore(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    with kept_outputs(tmp_path, "make") as kept:
        done = kept.restore()
    assert (done.paths, done.set_aside, done.problems) == ([], [], [])


def test_the_flows_refuse_a_missing_local_data_folder_before_any_stage(tmp_path, monkeypatch):
    """The download task failed on it, and the flow retried that task three times: 74 s for a typo."""
    import pytest

    from anime_avatar.core.errors import UserError
    from pipelines.recovery import preflight
    from tests.conftest import params_with

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "art").mkdir()
    preflight(tmp_path, params_with({"data": {"source": "local", "path": "art"}}), force_download=False)
    with pytest.raises(UserError, match=r"^data.path: no-such-folder does not exist$"):
        preflight(tmp_path, params_with({"data": {"source": "local", "path": "no-such-folder"}}), False)
    with pytest.raises(UserError, match=r"^photos.path: /no/photos.zip does not exist$"):
        preflight(tmp_path, params_with({"photos": {"source": "local", "path": "/no/photos.zip"}}), False)


def test_retrain_without_model_registration_is_refused_before_the_pipeline(tmp_path):
    """It ran every stage (12 minutes with the defaults), then failed: a weekly schedule did so every week."""
    proc = run(["anime-avatar", "retrain", "--params", "p.yaml"], tmp_path, check=False)
    assert "reads params.yaml of the workspace only" in proc.stderr
    shutil.copy(Path(__file__).parents[1] / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("register_model: true", "register_model: false"))
    for command in (["retrain"], ["schedule", "--cron", "0 3 * * 1"]):
        proc = run(["anime-avatar", *command], tmp_path, check=False)
        assert proc.returncode == 1
        assert "tracking.register_model is false: set it to true, or run `anime-avatar pipeline`" in proc.stderr


def test_the_flows_outside_a_project_say_so_before_prefect_starts_and_make_nothing(tmp_path):
    """`anime-avatar pipeline` beside a params.yaml but no dvc.yaml started Prefect's server, took the lock and made
    mlflow.db (about 70 s), then refused, followed by Prefect's connection errors."""
    shutil.copy(Path(__file__).parents[1] / "params.yaml", tmp_path / "params.yaml")
    for command in ("pipeline", "retrain"):
        proc = run(["anime-avatar", command], tmp_path, check=False)
        assert proc.returncode == 1 and proc.stderr.strip().endswith("holds no dvc.yaml: run the flows from the "
                                                                     "project's root"), proc.stderr  # fmt: skip
        assert "Traceback" not in proc.stderr and "Error logging to API" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_stage_dvc_did_not_start_is_not_restored_over_another_repros_outputs(tmp_path):
    """`dvc repro` running beside the flow: the flow's stage failed on DVC's lock before it ran, and the flow put
    the old outputs back with `dvc checkout --force` while the other run was writing its new ones."""
    from pipelines.flows import StageFailed, restore_after

    root = workspace(tmp_path)
    with kept_outputs(root, "make") as kept:
        shutil.rmtree(root / "out")  # the other `dvc repro` is remaking the stage
        (root / "report.json").write_text('{"ok": 2}')
        locked = StageFailed("stage make failed (dvc repro exit 1): Unable to acquire lock")
        locked.ran = False
        assert restore_after(locked, kept).paths == []
        assert not (root / "out").exists() and (root / "report.json").read_text() == '{"ok": 2}'  # left to it
        assert restore_after(StageFailed("stage make failed (dvc repro exit 1)"), kept).paths == ["out", "report.json"]
