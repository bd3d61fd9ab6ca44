"""The workspace lock, and reading data versions out of dvc.lock."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import pytest
import yaml

from anime_avatar.core.errors import UserError
from anime_avatar.ops.audit import DataVersion, LockVersion, RunRecord, format_history, lock_data, lock_history
from anime_avatar.ops.data_versions import data_version, data_versions, path_version
from anime_avatar.ops.lock import HOLDER_FILE, WorkspaceBusy, workspace_lock
from tests.conftest import BIN, ROOT, run

LOCK = """
schema: '2.0'
stages:
  download:
    cmd: python -m stages.download
    outs:
    - path: data/raw
      hash: md5
      md5: aaaa1111.dir
      size: 100
      nfiles: 12
  augment:
    cmd: python -m stages.augment
    deps:
    - path: data/faces
      md5: bbbb2222.dir
    outs:
    - path: data/train
      hash: md5
      md5: cccc3333.dir
      size: 50
      nfiles: 3
  train:
    outs:
    - path: models/generator.pt
      md5: dddd4444
"""


def test_lock_data_reads_the_data_outputs_only():
    assert lock_data(LOCK) == {
        "data/raw": DataVersion("aaaa1111.dir", 12, 100),
        "data/train": DataVersion("cccc3333.dir", 3, 50),
    }
    assert lock_data("") == {}


def test_a_data_folder_changed_since_dvc_lock_is_versioned_by_its_contents(tmp_path, monkeypatch, caplog):
    # A stage run by hand after its folder changed (data/photos refilled, data/train rebuilt with another seed: the
    # same sizes) must not resume a checkpoint or hit a feature cache of the old contents: the version a stage
    # keys them by is computed from the folder, and is the hash DVC itself gives it.
    monkeypatch.chdir(tmp_path)
    run(["git", "init", "-q"], tmp_path)
    run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    train = Path("data/train")
    (train / "a").mkdir(parents=True)
    (train / "a-b").write_bytes(b"x" * 20)  # before a/b as text (DVC's order), after it as path parts
    (train / "a" / "b").write_bytes(b"y" * 20)
    (train / "c").write_bytes(b"z" * 10)
    run([str(BIN / "dvc"), "add", "-q", "data/train"], tmp_path)
    dvc_hash = yaml.safe_load((tmp_path / "data" / "train.dvc").read_text())["outs"][0]["md5"]
    assert data_version(train) == f"md5:{dvc_hash}"
    (train / "c").write_bytes(b"w" * 10)  # the same count and sizes, other bytes
    assert data_version(train) not in (f"md5:{dvc_hash}", None) and data_version(train).endswith(".dir")
    # The tags of folders a stage does not read come from dvc.lock, unless their count or size changed.
    Path("dvc.lock").write_text(LOCK)  # data/train: 3 files, 50 bytes
    assert data_versions()["data/train"] == "md5:cccc3333.dir"
    (train / "c").unlink()
    with caplog.at_level("INFO"):
        assert "data/train" not in data_versions() and "data/raw" not in data_versions()  # (data/raw: not here)
    assert "data/train has changed since dvc.lock recorded it" in caplog.text
    # A setting's path may start with ~, as load_image_set reads it.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert path_version(Path("~/data/train")) == data_version(train)


def test_history_lists_runs_under_their_data_version_and_the_rest_apart():
    history = [LockVersion("f" * 40, "2026-11-25", "data v1", lock_data(LOCK))]
    on_it = RunRecord("1" * 32, 12.5, {"data_version.train": "md5:cccc3333.dir"}, ("2 (champion)",))
    elsewhere = RunRecord("2" * 32, None, {"data_version.train": "md5:eeee.dir"})
    text = format_history(history, [on_it, elsewhere])
    lines = text.splitlines()
    assert lines[0] == f"{'f' * 10}  2026-11-25  data v1"
    assert lines[1].split() == ["data/raw", "aaaa1111", "(12", "files)"]
    assert lines[2].split() == ["data/faces", "-"]
    assert lines[4] == "    runs:       111111111111 (FID 12.50, model version 2 (champion))"
    assert "found in no dvc.lock" in lines[5] and lines[6].startswith("    222222222222 (no FID)")
    # Commits that changed only other stages' outputs (a retrained model) join the block of their data version:
    # before, each repeated it with the same runs (26 blocks for 2 data versions in this repository).
    later = [
        LockVersion(c * 40, d, f"retrained {c}", lock_data(LOCK)) for c, d in (("e", "2026-11-27"), ("d", "2026-11-26"))
    ]
    merged = format_history([*later, *history], [on_it]).splitlines()
    assert merged[:2] == [f"{'e' * 10}  2026-11-27  retrained e",
                          f"    (and 2 earlier commits with the same data, back to {'f' * 10} 2026-11-25)"]  # fmt: skip
    assert sum(line.startswith("    runs:") for line in merged) == 1


def git_commit(repo, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", message], repo)


def test_history_of_a_project_in_a_subfolder_of_its_repository(tmp_path):
    """`dvc init --subdir`: the lock is project/dvc.lock in git, and every commit's version is read from there."""
    run(["git", "init", "-q"], tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.lock").write_text(LOCK)
    git_commit(tmp_path, "data v1")
    (project / "dvc.lock").write_text(LOCK.replace("cccc3333", "ffff9999"))
    git_commit(tmp_path, "data v2")
    history = lock_history(project)
    assert [(h.subject, h.data["data/train"].md5) for h in history] == [
        ("data v2", "ffff9999.dir"), ("data v1", "cccc3333.dir"),
    ]  # fmt: skip


def test_history_in_a_repository_without_a_commit_shows_the_workspace_lock(tmp_path):
    run(["git", "init", "-q"], tmp_path)
    (tmp_path / "dvc.lock").write_text(LOCK)
    [only] = lock_history(tmp_path)
    assert (only.commit, only.subject, only.data["data/raw"].nfiles) == ("workspace", "dvc.lock not committed", 12)


def test_a_dvc_lock_with_merge_conflict_markers_is_one_line_and_a_committed_one_is_read_as_empty(tmp_path):
    conflicted = LOCK.replace("      md5: cccc3333.dir\n", "<<<<<<< HEAD\n      md5: cccc3333.dir\n=======\n"
                              "      md5: ffff9999.dir\n>>>>>>> other\n")  # fmt: skip
    with pytest.raises(UserError) as err:
        lock_data(conflicted)
    assert str(err.value).startswith("dvc.lock is not valid YAML (") and "resolve the merge conflict" in str(err.value)
    assert "\n" not in str(err.value)

    run(["git", "init", "-q"], tmp_path)
    (tmp_path / "dvc.lock").write_text(conflicted)
    git_commit(tmp_path, "committed mid-merge")
    (tmp_path / "dvc.lock").write_text(LOCK)
    history = lock_history(tmp_path)
    assert [(h.commit, h.data.get("data/train")) for h in history][1:] == [(history[1].commit, None)]
    assert history[0].commit == "workspace" and history[0].data["data/train"].md5 == "cccc3333.dir"
    (tmp_path / "dvc.lock").write_text(conflicted)
    with pytest.raises(UserError, match="dvc.lock is not valid YAML"):
        lock_history(tmp_path)


def _try_lock(root: str, queue) -> None:
    from pathlib import Path

    try:
        with workspace_lock(Path(root), "child"):
            queue.put("acquired")
    except WorkspaceBusy as err:
        queue.put(str(err))


def test_the_lock_refuses_another_process_and_names_the_holder(tmp_path):
    queue = multiprocessing.get_context("fork").Queue()
    with workspace_lock(tmp_path, "flow anime-avatar-pipeline 123"):
        assert (tmp_path / HOLDER_FILE).is_file()
        child = multiprocessing.get_context("fork").Process(target=_try_lock, args=(str(tmp_path), queue))
        child.start()
        child.join(30)
        message = queue.get(timeout=5)
    assert "locked by flow anime-avatar-pipeline 123 (pid" in message
    assert not (tmp_path / HOLDER_FILE).exists()
    with workspace_lock(tmp_path, "again"):  # released: can be taken again
        pass
    with pytest.raises(RuntimeError), workspace_lock(tmp_path, "x"):
        raise RuntimeError("a failing flow still releases the lock")
    with workspace_lock(tmp_path, "after failure"):
        pass


def test_runs_and_audit_without_a_tracking_database_say_so_and_create_nothing(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    for command in (["anime-avatar", "runs"], ["anime-avatar", "audit"]):
        proc = run(command, tmp_path, check=False, env={"MLFLOW_TRACKING_URI": ""})
        assert (
            proc.returncode == 1 and "no MLflow database at" in proc.stderr and "run the pipeline first" in proc.stderr
        )
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]
