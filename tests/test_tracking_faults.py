"""Tracking faults, piece by piece: the store checks, the run journal, stale runs, restore hints.

The end-to-end cases (a real `mlflow server` killed mid-training, `dvc repro` and the flows after a
failed stage) are in test_outages.py and test_stage_failures.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from anime_avatar.artifacts.run import RunRecord, write_run_file
from anime_avatar.core.dvcfiles import restorable_paths, restore_hint, stage_outputs
from anime_avatar.core.errors import UserError
from anime_avatar.ops.run_journal import RunJournal, pending_runs, send_pending
from anime_avatar.ops.runs import settle_runs
from anime_avatar.ops.stage_run import log_to_recorded_run
from anime_avatar.ops.stale_runs import HOST_TAG, PID_TAG, REASON_TAG, STARTED_TAG, mark_stale_runs, process_tags
from anime_avatar.ops.tracking import mlflow_client
from anime_avatar.ops.tracking_store import RETRIES_ENV, TIMEOUT_ENV, check_tracking_store, sqlite_path
from tests.conftest import BIN, ROOT, free_port, venv_env


def store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    """A fresh SQLite tracking store with one experiment: (uri, client, experiment id)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)  # the runs' files in tmp_path too, not in the working folder's mlruns/
    return uri, client, client.create_experiment("faults", artifact_location=(tmp_path / "mlruns").as_uri())


class Outage:
    """An MlflowClient whose calls fail, as a dead server's do, while ``down`` is set."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.down, self.calls = client, False, 0

    def __getattr__(self, name: str):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.down:
                raise ConnectionError("[Errno 111] Connection refused")
            return attr(*args, **kwargs)

        return call


# --- the tracking store check ---------------------------------------------------------------


def test_sqlite_paths_of_tracking_uris():
    assert sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert sqlite_path("sqlite:////abs/m.db") == Path("/abs/m.db")
    assert sqlite_path("http://127.0.0.1:5000") is None and sqlite_path("sqlite:///:memory:") is None


def test_a_sqlite_uri_with_a_query_is_the_same_database_everywhere(tmp_path, monkeypatch):
    """`sqlite:///mlflow.db?timeout=30` (MLflow reads it) was "no MLflow database at mlflow.db?timeout=30" for `runs`
    and `generate`, and the retrain's champion lookup took the store for missing: a worse version was promoted."""
    from anime_avatar.ops.tracking import missing_tracking_db
    from pipelines.flows import champion_if_store

    monkeypatch.chdir(tmp_path)
    assert missing_tracking_db("sqlite:///mlflow.db?timeout=30") == Path("mlflow.db")
    uri, client, experiment = store(tmp_path)
    assert missing_tracking_db("sqlite:///mlflow.db?timeout=30") is None
    assert missing_tracking_db(f"{uri}?timeout=30") is None and missing_tracking_db("http://127.0.0.1:1") is None
    client.create_registered_model("gen")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "fid", 50.0)
    version = client.create_model_version("gen", f"runs:/{run.info.run_id}/generator", run.info.run_id)
    client.set_registered_model_alias("gen", "champion", version.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{uri}?timeout=30")
    assert champion_if_store(tmp_path, "gen").version == "1"


def test_a_store_copied_from_another_project_is_refused_before_a_run_writes_models_there(tmp_path, monkeypatch, caplog):
    """`cp -r project copy`: the copy's runs logged their models into the original's mlruns/ (an absolute path
    in mlflow.db), where nothing of the copy's store pointed."""
    from anime_avatar.ops.stage_run import tracking_ready

    def store_of(folder: Path) -> str:
        # What the stages' `sqlite:///mlflow.db` means in ``folder``, spelled out: MLflow caches a store by its URI
        # for the life of the process, so one relative URI would reach an earlier test's database.
        return f"sqlite:///{folder / 'mlflow.db'}"

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, copy = tmp_path / "project", tmp_path / "copy"
    original.mkdir()
    monkeypatch.chdir(original)
    tracking_ready(store_of(original), "anime-avatar")  # the stages run in the project's folder
    # MLflow exports the URI it is pointed at; that is undone, or the next check would take it for the user's
    # choice and skip (and so would every stage a flow starts, after the flow's own check).
    assert "MLFLOW_TRACKING_URI" not in os.environ
    mlflow = tracking_ready(store_of(original), "anime-avatar")  # and again: its own store passes
    experiment = mlflow.get_experiment_by_name("anime-avatar").experiment_id
    run = MlflowClient(store_of(original)).create_run(experiment).info.run_id
    write_run_file(RunRecord(run, experiment, store_of(original)))
    Path("reports").mkdir()
    Path("reports/samples.png").write_bytes(b"png")
    shutil.copytree(original, copy)
    write_run_file(RunRecord(run, experiment, store_of(copy)), copy / "models/run.json")  # its own mlflow.db
    monkeypatch.chdir(copy)
    with pytest.raises(UserError) as err:
        tracking_ready(store_of(copy), "anime-avatar")
    where = f"{original}/mlruns/1"
    assert str(err.value).startswith(f"{copy}/mlflow.db keeps its runs' files in {where}, outside this project "
                                     f"({copy}): a store copied or moved here from another project")  # fmt: skip
    # The evaluate stage logs to the recorded run: not into the original's mlruns/ either.
    evaluated = (Path("models/generator.pt"), run), {"fid": 100.0}, (Path("reports/samples.png"),)
    assert not log_to_recorded_run(Path("models/run.json"), "train", *evaluated)
    assert not list((original / "mlruns").rglob("samples.png"))
    monkeypatch.chdir(original)
    assert log_to_recorded_run(Path("models/run.json"), "train", *evaluated)  # in the project itself: logged
    assert len(list((original / "mlruns").rglob("samples.png"))) == 1
    # Records a run of the copy kept while its store was away are not sent by `runs` either (its files would go
    # to the original's mlruns/): they stay, with a warning. Until 2026-12-07 `runs` sent them.
    monkeypatch.chdir(copy)
    outage = Outage(MlflowClient(store_of(copy)))
    outage.down = True
    journal = RunJournal(store_of(copy), run, outage)
    journal.log_artifact(Path("reports/samples.png"), "kept")
    assert journal.finish("FINISHED") is False and pending_runs(store_of(copy))
    with caplog.at_level(logging.WARNING):
        settle_runs(MlflowClient(store_of(copy)), "anime-avatar")
    assert "the records earlier runs kept were not sent: " in caplog.text and "a store copied or moved" in caplog.text
    assert pending_runs(store_of(copy)) and len(list((original / "mlruns").rglob("samples.png"))) == 1
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_of(copy))  # a store the user chose: their choice
    tracking_ready(store_of(copy), "anime-avatar")
    mlflow_client(store_of(original))  # and pointing MLflow elsewhere leaves it theirs
    assert os.environ["MLFLOW_TRACKING_URI"] == store_of(copy)


def test_unreachable_server_is_one_line_at_once():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError) as err:
        check_tracking_store(uri)
    message = str(err.value)
    assert message.startswith(f"the MLflow tracking server {uri} does not answer (") and "Connection refused" in message
    assert "MLFLOW_TRACKING_URI" in message and "\n" not in message


@pytest.mark.parametrize("kind", ["generator", "stylizer"])
def test_a_model_uri_on_a_server_that_does_not_answer_is_one_refused_connection_not_minutes(monkeypatch, kind):
    """The studio asks for models:/…@champion by name; that path skipped fail_fast_http and spent 256 s in
    MLflow's retries before falling back to models/generator.pt (`generate` without --model took 10 s); and
    `stylize --model models:/…` never turned the retries off: 4 min 18 s before its error."""
    from anime_avatar.ops.registry import resolve_generator
    from anime_avatar.ops.stylizer_models import resolve_stylizer

    monkeypatch.delenv(RETRIES_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    resolve, uri, what = {
        "generator": (resolve_generator, "models:/anime-avatar-generator@champion", "the generator"),
        "stylizer": (resolve_stylizer, "models:/anime-avatar-stylizer/1", "the stylizer"),
    }[kind]
    with pytest.raises(UserError, match=rf"^cannot load {what} {uri}: .*Connection refused"):
        resolve(uri, f"anime-avatar-{kind}")
    assert (os.environ[RETRIES_ENV], os.environ[TIMEOUT_ENV]) == ("0", "10")


def test_a_champion_that_cannot_be_decided_says_how_to_decide_it_later(monkeypatch):
    from pipelines.flows import champion_decision

    monkeypatch.setenv(RETRIES_ENV, "0")  # the flows set these (fail_fast_http): a refused connection, at once
    monkeypatch.setenv(TIMEOUT_ENV, "5")
    uri = f"http://127.0.0.1:{free_port()}"  # the retrain's server, gone while its stages ran
    with pytest.raises(UserError) as err:
        champion_decision(uri, "anime-avatar-generator", "0" * 32, current=None)
    message = str(err.value)
    assert message.startswith("the champion of anime-avatar-generator was not decided: ")
    assert f"MLflow at {uri} does not answer (" in message
    assert message.endswith("once it does, `anime-avatar retrain --no-refresh` decides it without retraining")
    assert "\n" not in message


def test_server_that_accepts_but_never_answers_is_reported_after_the_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(UserError, match=r"does not answer \(no answer within 1 s\)"):
            check_tracking_store(uri, timeout=1)


def test_corrupt_mlflow_db_is_one_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"these bytes are no database" * 100)
    with pytest.raises(UserError) as err:
        check_tracking_store(f"sqlite:///{db}")
    assert str(err.value).startswith(f"{db} is not a usable MLflow database (file is not a database)")
    assert f"mv {db} {db}.broken" in str(err.value)


def test_mlflow_db_in_a_missing_folder_is_one_line(tmp_path):
    missing = r"cannot create the MLflow database .*/nowhere/mlflow.db \(No such file or directory\)"
    with pytest.raises(UserError, match=missing):
        check_tracking_store(f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}")


def read_only_command(path: Path, command: list[str]) -> list[str]:
    """``command`` run where ``path`` is read-only: file modes for ordinary users; for root (whom modes do not
    stop), a read-only bind mount in a private mount namespace."""
    path.chmod(0o444)
    if os.geteuid() != 0:
        return command
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("running as root without user namespaces (unshare -rm): a file cannot be made read-only")
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, str(path), *command]


def test_read_only_mlflow_db_is_one_line(tmp_path):
    uri, client, _ = store(tmp_path)
    db = sqlite_path(uri)
    code = f"from anime_avatar.ops.tracking_store import check_tracking_store; check_tracking_store({uri!r})"
    proc = subprocess.run(
        read_only_command(db, [sys.executable, "-c", code]), capture_output=True, text=True, cwd=ROOT
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"UserError: the MLflow database {db} is read-only (attempt to write a readonly database)" in proc.stderr


# --- the run journal ------------------------------------------------------------------------


def test_journal_keeps_records_in_order_while_the_store_is_away_and_sends_them_when_back(tmp_path, caplog):
    uri, client, experiment = store(tmp_path)
    run_id = client.create_run(experiment).info.run_id
    outage, now = Outage(client), [0.0]
    journal = RunJournal(uri, run_id, outage, clock=lambda: now[0])
    sample = tmp_path / "step-2.png"
    sample.write_bytes(b"png")

    with caplog.at_level(logging.INFO, logger="anime_avatar.ops.run_journal"):
        journal.log_metrics({"loss": 1.0}, step=1)
        outage.down = True
        journal.log_metrics({"loss": 2.0}, step=2)
        journal.log_artifact(sample, "samples")
        now[0] = 4.0  # before the first retry (5 s): kept without a call
        calls = outage.calls
        journal.log_metrics({"loss": 3.0}, step=3)
        assert outage.calls == calls and len(journal.kept) == 3
        outage.down = False
        now[0] = 6.0
        journal.log_metrics({"loss": 4.0}, step=4)

    assert journal.kept == [] and journal.outages == 1
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/step-2.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stopped answering ([Errno 111] Connection refused)" in warnings[0]
    assert "answers again: sent the 4 record(s) kept during the outage" in caplog.text


def test_a_registration_the_store_failed_is_tried_again_without_logging_the_model_twice(tmp_path, monkeypatch):
    """The model record logged and registered in one call: a registration that failed (SQLite's `database is
    locked`) made the retry log the whole model again (4.3 MB each time), and again in a later process."""
    import mlflow
    import torch

    from anime_avatar.artifacts.generator import save_generator
    from anime_avatar.gan.nets import build_generator, net_config
    from tests.conftest import params_with

    uri, client, experiment = store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    torch.manual_seed(0)
    config = net_config(params_with({"model": {"channels": 8, "z_dim": 16}}).model, 32)
    net = build_generator(config)
    save_generator(tmp_path / "generator.pt", config.to_dict(), net.state_dict(), net.state_dict(), step=1)
    run = client.create_run(experiment).info.run_id
    register, failures = mlflow.register_model, []

    def locked_once(*args, **kwargs):
        if not failures:
            failures.append(args)
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")
        return register(*args, **kwargs)

    monkeypatch.setattr(mlflow, "register_model", locked_once)
    journal = RunJournal(uri, run, client=client, clock=lambda: 1e9)
    journal.log_model(tmp_path / "generator.pt", "gen", "generator")
    assert [r.kind for r in journal.kept] == ["model"] and failures  # logged, not registered: kept
    saved = journal.save(tmp_path / "pending")  # as a stage that ends during the outage
    assert send_pending(uri, tmp_path / "pending") == [run]  # a later process sends it
    logged = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert len(logged) == 1 and not saved.exists()
    (version,) = client.search_model_versions("name='gen'")
    assert version.run_id == run and version.source == f"models:/{logged[0].model_id}"

    # A registration the store made but whose answer was lost (a timeout): the retry does not make a second version.
    def made_but_unanswered(*args, **kwargs):
        made = register(*args, **kwargs)
        if len(failures) == 1:
            failures.append(made)
            raise mlflow.exceptions.MlflowException("HTTPConnectionPool: Read timed out. (read timeout=10)")
        return made

    monkeypatch.setattr(mlflow, "register_model", made_but_unanswered)
    second = client.create_run(experiment).info.run_id
    journal = RunJournal(uri, second, client=client, clock=lambda: 1e9)
    journal.log_model(tmp_path / "generator.pt", "gen", "generator")
    assert [r.kind for r in journal.kept] == ["model"] and journal.flush()
    assert [str(v.version) for v in client.search_model_versions(f"name='gen' and run_id='{second}'")] == ["2"]


def test_records_kept_by_a_stage_are_found_by_a_flow_that_names_the_store_by_its_absolute_path(tmp_path, monkeypatch):
    """A stage records `sqlite:///mlflow.db` (run from the project), a flow `sqlite:////abs/project/mlflow.db`: until
    2026-12-07 the flow did not see what a stage kept, and marked its run KILLED."""
    monkeypatch.chdir(tmp_path)
    uri, client, experiment = store(tmp_path)
    run_id = client.create_run(experiment).info.run_id
    outage = Outage(client)
    outage.down = True
    journal = RunJournal("sqlite:///mlflow.db", run_id, outage)
    journal.log_metrics({"loss": 1.0})
    assert journal.finish("FINISHED") is False
    assert [p.name for p in pending_runs(uri)] == [run_id] and pending_runs(f"sqlite:///{tmp_path / 'other.db'}") == []
    assert send_pending(uri, client=client) == [run_id] and client.get_run(run_id).info.status == "FINISHED"


def test_records_unsent_at_the_end_are_saved_and_sent_by_a_later_process(tmp_path):
    uri, client, experiment = store(tmp_path)
    run_id = client.create_run(experiment).info.run_id
    outage = Outage(client)
    outage.down = True
    journal = RunJournal(uri, run_id, outage)
    sample = tmp_path / "step-2.png"
    sample.write_bytes(b"first grid")
    journal.log_params({"train.steps": "4"})
    journal.log_metrics({"loss": 2.0}, step=2)
    journal.log_artifact(sample, "samples")

    assert journal.finish("FINISHED", folder=tmp_path / "pending") is False
    saved = tmp_path / "pending" / run_id
    kinds = [json.loads(line)["kind"] for line in (saved / "records.jsonl").read_text().splitlines()]
    assert kinds == ["params", "metrics", "artifact", "end"]
    sample.write_bytes(b"the next run's grid")  # the kept copy is what gets logged
    assert client.get_run(run_id).info.status == "RUNNING"

    assert send_pending(uri, tmp_path / "pending", client) == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"train.steps": "4"}
    assert run.data.metrics == {"loss": 2.0}
    logged = Path(client.download_artifacts(run_id, "samples/step-2.png", str(tmp_path / "dl")))
    assert logged.read_bytes() == b"first grid"
    assert not saved.exists()


# --- runs whose process is gone -------------------------------------------------------------


def test_runs_whose_process_is_gone_are_marked_killed_and_the_others_left(tmp_path):
    _, client, experiment = store(tmp_path)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    mine = process_tags()
    cases = {
        "gone": {**mine, PID_TAG: str(ended.pid)},
        "reused_pid": {**mine, STARTED_TAG: str(int(mine[STARTED_TAG]) - 3600)},
        "alive": mine,
        "other_host": {**mine, HOST_TAG: "another-machine", PID_TAG: str(ended.pid)},
        "untagged": {},
    }
    ids = {name: client.create_run(experiment, tags=tags).info.run_id for name, tags in cases.items()}
    finished = client.create_run(experiment, tags=cases["gone"]).info.run_id
    client.set_terminated(finished, "FINISHED")

    marked = mark_stale_runs(client, [experiment], keep=[])
    assert sorted(marked) == sorted([ids["gone"], ids["reused_pid"]])
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"gone": "KILLED", "reused_pid": "KILLED", "alive": "RUNNING", "other_host": "RUNNING",
                      "untagged": "RUNNING"}  # fmt: skip
    assert client.get_run(finished).info.status == "FINISHED"
    reason = client.get_run(ids["gone"]).data.tags[REASON_TAG]
    assert f"process {ended.pid} on {mine[HOST_TAG]} ended without closing the run" in reason
    assert mark_stale_runs(client, [experiment]) == []  # once


# --- what a failed stage's message says -----------------------------------------------------


def lock_with(tmp_path: Path, stages: dict) -> Path:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    return tmp_path


def test_restore_hint_names_the_cached_outputs_dvc_removed(tmp_path):
    assert restore_hint("train", tmp_path) == ""  # no dvc.yaml: nothing known
    root = lock_with(tmp_path, {
        "train": {"outs": [{"path": "models/generator.pt", "md5": "a" * 32},
                           {"path": "models/run.json", "md5": "b" * 32}]},
        "validate": {"outs": [{"path": "reports/validation.json", "md5": "c" * 32}]},
    })  # fmt: skip
    assert {o.path for o in stage_outputs("train", root) if o.persist} == {"models/checkpoints", "plots/samples"}
    assert restorable_paths("train", root) == ["models/generator.pt", "models/run.json"]
    hint = restore_hint("train", root)
    assert "restore them with: dvc checkout models/generator.pt models/run.json (" in hint
    assert "metrics/train.json" in hint and "the next successful `dvc repro train` remakes them" in hint
    assert restore_hint("validate", root).endswith(
        "(reports/validation.json, reports/data_docs: not cached by DVC, the next successful `dvc repro validate` "
        "remakes them)"
    )
    assert restore_hint("download", root) == ""  # never ran: nothing to restore


def test_runs_lists_a_read_only_mlflow_db_and_warns_that_it_cannot_settle_it(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    tags = {**process_tags(), PID_TAG: str(ended.pid), "stage": "train"}
    experiment = client.create_experiment("anime-avatar", artifact_location=(tmp_path / "mlruns").as_uri())
    run_id = client.create_run(experiment, tags=tags).info.run_id

    command = read_only_command(tmp_path / "mlflow.db", [str(BIN / "anime-avatar"), "runs"])
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=venv_env())
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.splitlines()[1].split()
    assert row[0] == run_id[:12] and row[3] == "RUNNING"  # listed as it is: marking it KILLED needs a write
    assert "could not settle earlier runs (" in proc.stderr and "readonly database" in proc.stderr


def test_an_evaluation_is_logged_only_to_the_run_that_made_the_evaluated_file(tmp_path, monkeypatch, caplog):
    # The shipped translator (or any model file) copied over the workspace's: its scores are not the run's.
    uri, client, experiment = store(tmp_path)
    trained = client.create_run(experiment).info.run_id
    monkeypatch.chdir(tmp_path)
    write_run_file(RunRecord(trained, experiment, uri), Path("models/translator_run.json"))
    recorded = (Path("models/translator_run.json"), "translate_train")

    with caplog.at_level(logging.WARNING):
        assert not log_to_recorded_run(*recorded, (Path("models/translator.pt"), ""), {"eval.kid": 0.5})
        assert not log_to_recorded_run(*recorded, (Path("models/translator.pt"), "0ther"), {"eval.kid": 0.5})
    assert client.get_run(trained).data.metrics == {}
    assert "models/translator.pt was made by no tracked run, not by the run" in caplog.text
    assert "was made by MLflow run 0ther" in caplog.text
    assert log_to_recorded_run(*recorded, (Path("models/translator.pt"), trained), {"eval.kid": 0.25},
                               tags={"fid.n_samples": "100"})  # fmt: skip
    assert client.get_run(trained).data.metrics == {"eval.kid": 0.25}
    assert client.get_run(trained).data.tags["fid.n_samples"] == "100"
