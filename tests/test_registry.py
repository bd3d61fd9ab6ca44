"""Champion promotion against a real MLflow registry (a temporary SQLite store), and the runs table."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from anime_avatar.core.errors import UserError
from anime_avatar.ops import registry, runs
from anime_avatar.ops.registry import Candidate, decide

NAME = "anime-avatar-generator"


def test_decide_promotes_only_a_strictly_lower_fid():
    new = Candidate("2", "b", 50.0)
    assert decide(new, None).promote
    assert decide(new, Candidate("1", "a", 60.0)).promote
    assert not decide(new, Candidate("1", "a", 50.0)).promote  # a tie keeps the champion
    assert not decide(new, Candidate("1", "a", 40.0)).promote
    assert not decide(Candidate("1", "a", 40.0), Candidate("1", "a", 40.0)).promote  # the same model
    assert decide(new, Candidate("1", "a", None)).promote  # a champion that was never evaluated
    # FIDs against other faces do not compare (each is against its own real statistics): retrain refreshed the
    # data, and the version scored on the current faces takes the alias, whatever the two numbers.
    other_faces = decide(Candidate("2", "b", 150.0, "md5:bbbb"), Candidate("1", "a", 100.0, "md5:aaaa"))
    assert other_faces.promote and "was scored on other faces (md5:aaaa)" in other_faces.reason
    assert not decide(Candidate("2", "b", 150.0, "md5:bbbb"), Candidate("1", "a", 100.0, "md5:bbbb")).promote
    assert (
        decide(Candidate("3", "c", 90.0, "md5:bbbb"), None, Candidate("1", "a", 50.0, "md5:aaaa")).winner.version == "3"
    )
    # A retrain on new faces: the champion (v1) was scored on the old ones, v2 (FID 100) and the new v3 (150) on the
    # new ones. v3 took the alias, though v2 beats it on the same faces.
    new_faces = decide(Candidate("3", "c", 150.0, "md5:bbbb"), Candidate("1", "a", 50.0, "md5:aaaa"),
                       Candidate("2", "b", 100.0, "md5:bbbb"))  # fmt: skip
    assert new_faces.promote and new_faces.winner.version == "2" and new_faces.outcome == "named"
    assert new_faces.reason == ("the champion (version 1, FID 50.00) was scored on other faces (md5:aaaa); of the "
                                "versions measured as the new version 3 (FID 150.00) was, version 2 (FID 100.00) is "
                                "the best")  # fmt: skip
    # FID is biased by the number of samples: 90 on 5,000 samples does not beat 100 on 1,000.
    more_samples = decide(Candidate("2", "b", 90.0, "md5:a", "5000"), Candidate("1", "a", 100.0, "md5:a", "1000"))
    assert more_samples.promote and "was scored on 1000 samples, not 5000" in more_samples.reason
    assert not decide(Candidate("2", "b", 90.0, "md5:a", "1000"), Candidate("1", "a", 80.0, "md5:a", "1000")).promote
    assert not decide(Candidate("2", "b", None), Candidate("1", "a", 60.0)).promote
    tags = decide(new, Candidate("1", "a", 60.0)).tags()
    assert tags == {
        "champion.decision": "promoted", "champion.reason": "FID 50.00 < 60.00 of version 1",
        "champion.new_version": "2", "champion.previous_version": "1", "champion.previous_fid": "60.0",
    }  # fmt: skip


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("anime-avatar")
    client = MlflowClient(uri)
    client.create_registered_model(NAME)

    def trained(fid: float | None, steps: int = 10, arch: str = "sagan") -> Candidate:
        with mlflow.start_run() as run:
            mlflow.set_tags({"stage": "train", "data_version.train": f"md5:{fid}.dir"})
            mlflow.log_params({"model.arch": arch, "train.steps": steps})
            if fid is not None:
                mlflow.log_metric("fid", fid + 50, step=steps // 2)
                mlflow.log_metric("fid", fid, step=steps)
        client.create_model_version(NAME, f"runs:/{run.info.run_id}/generator", run_id=run.info.run_id)
        return registry.version_of_run(client, NAME, run.info.run_id)

    return client, trained


def test_alias_moves_only_to_a_better_model(store):
    client, trained = store
    first = trained(80.0)
    assert registry.champion(client, NAME) is None
    registry.apply(client, NAME, decide(first, registry.champion(client, NAME)))
    assert registry.champion(client, NAME) == first

    worse = trained(90.0)
    decision = decide(worse, registry.champion(client, NAME))
    registry.apply(client, NAME, decision)
    assert registry.champion(client, NAME) == first
    assert client.get_run(worse.run_id).data.tags["champion.decision"] == "kept"
    assert client.get_model_version(NAME, worse.version).tags == {"champion.decision": "kept", "fid": "90.0000"}

    better = trained(70.0)
    registry.apply(client, NAME, decide(better, registry.champion(client, NAME)))
    assert registry.champion(client, NAME) == better
    assert client.get_run(better.run_id).data.tags["champion.previous_version"] == first.version


def test_a_champion_whose_run_was_deleted_and_collected_has_no_fid_and_the_runs_table_still_prints(
    store, tmp_path, monkeypatch
):
    import subprocess

    from tests.conftest import BIN, venv_env

    client, trained = store
    gone, kept = trained(80.0), trained(60.0)
    client.set_registered_model_alias(NAME, registry.CHAMPION, gone.version)
    client.delete_run(gone.run_id)
    subprocess.run([str(BIN / "mlflow"), "gc", "--backend-store-uri", client.tracking_uri], check=True,
                   env=venv_env(), capture_output=True)  # fmt: skip
    assert registry.champion(client, NAME) == Candidate(gone.version, gone.run_id, None)
    assert registry.best_evaluated(client, NAME) == kept
    monkeypatch.chdir(tmp_path)
    rows = runs.training_runs(client, "anime-avatar", NAME)
    assert [row.run_id for row in rows] == [kept.run_id]  # the collected run is gone from the table, no traceback


def test_a_run_is_found_by_the_first_characters_of_its_id_as_the_runs_table_shows_them(store):
    client, trained = store
    first, second = trained(80.0), trained(60.0)
    assert runs.resolve_run_id(client, "anime-avatar", first.run_id[:12]) == first.run_id
    assert runs.resolve_run_id(client, "anime-avatar", second.run_id) == second.run_id
    assert runs.resolve_run_id(client, "anime-avatar", "nothing-like-it") == "nothing-like-it"  # lineage says so
    with pytest.raises(UserError, match=r"run id '' begins 2 training runs' ids \(.*\): give more of it"):
        runs.resolve_run_id(client, "anime-avatar", "")


def test_a_run_without_a_registered_version_is_a_clear_error(store):
    client, _ = store
    with mlflow.start_run() as run:
        pass
    with pytest.raises(UserError, match="registered no version"):
        registry.version_of_run(client, NAME, run.info.run_id)


def test_a_store_that_does_not_answer_is_not_taken_for_no_champion(store):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    client, _ = store
    assert registry.champion(client, "no-such-model") is None
    client.create_registered_model("no-alias")
    assert registry.champion(client, "no-alias") is None

    class Store:
        def __init__(self, code: int) -> None:
            self.code = code

        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("API request to http://127.0.0.1:9 failed: Connection refused", error_code=self.code)

    assert registry.champion(Store(codes.RESOURCE_DOES_NOT_EXIST), NAME) is None  # no such model
    # Any other answer is not "no champion": retrain must not go on as if there were none. (Until 2026-12-07 every
    # INVALID_PARAMETER_VALUE was taken for a missing alias; the model loaders asked for the alias's own message.)
    for code in (codes.INVALID_PARAMETER_VALUE, codes.INTERNAL_ERROR):
        with pytest.raises(UserError, match=rf"^cannot look up the champion of {NAME}: API request to http://127"):
            registry.champion(Store(code), NAME)


def test_evaluate_warns_and_goes_on_when_the_champion_lookup_fails(monkeypatch, caplog):
    """The alias is a convenience: a store that fails the lookup leaves the evaluation standing, with a warning."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    import anime_avatar.artifacts.run as run_files

    class Store:
        def __init__(self, uri: str) -> None:
            pass

        def search_model_versions(self, query):
            return [type("Version", (), {"version": "1", "name": NAME})()]

        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("API request failed: Connection refused", error_code=codes.INTERNAL_ERROR)

    record = type("Record", (), {"tracking_uri": "http://127.0.0.1:9", "run_id": "r1"})()
    monkeypatch.setattr(run_files, "read_run_file", lambda name, stage: record)
    monkeypatch.setattr(mlflow, "MlflowClient", Store)
    registry.name_champion_of_recorded_run(Path("models/run.json"), "evaluate", 50.0)
    assert "no champion named: the tracking store did not answer (cannot look up the champion of " in caplog.text


def test_runs_table_sorts_by_fid_marks_the_champion_and_plots(store, tmp_path):
    client, trained = store
    a, b, c = trained(80.0, steps=100), trained(None, steps=5, arch="dcgan"), trained(60.0, steps=200)
    registry.apply(client, NAME, decide(a, None))
    rows = runs.sort_rows(runs.training_runs(client, "anime-avatar", NAME), "fid")
    assert [r.run_id for r in rows] == [c.run_id, a.run_id, b.run_id]  # unevaluated last
    assert [r.champion for r in rows] == [False, True, False]
    assert [r.steps for r in rows] == [200, 100, 5] and rows[2].arch == "dcgan"
    parsed = list(csv.DictReader(io.StringIO(runs.to_csv(rows))))
    assert [p["fid"] for p in parsed] == ["60.0", "80.0", ""]
    table = runs.format_table(rows).splitlines()
    assert table[2].endswith("*") and not table[1].endswith("*")
    assert table[3].split()[-2:] == ["-", "-"]  # no FID, no KID, not the champion
    # FID over training: runs of one data version at several step counts (before, a run's own FID history, which
    # the pipeline never makes longer than one point: the panel could not show a curve).
    same_data = [replace(r, data_version="md5:d1.dir") for r in rows]
    same_data.append(replace(same_data[0], steps=100, fid=70.0))
    histories = runs.fid_by_steps(same_data)
    assert histories == {"md5:d1.dir": [(100, 70.0), (200, 60.0)]}  # the best at each step count; b has no FID
    assert runs.fid_by_steps(rows) == {}  # every run on data of its own
    runs.plot(rows, histories, tmp_path / "runs.png")
    assert (tmp_path / "runs.png").stat().st_size > 10_000
    with pytest.raises(UserError, match="no MLflow experiment"):
        runs.training_runs(client, "nope", NAME)


def test_runs_ranks_each_fid_among_those_measured_alike_and_says_so(store):
    """A low FID measured on other faces or fewer samples ranked first (`runs --sort fid`), beside FIDs it does not
    compare with (until 2026-12-07)."""
    client, trained = store
    elsewhere, a, b = trained(40.0), trained(80.0), trained(60.0)
    for version, faces, samples in ((elsewhere, "md5:aaaa1111ffff.dir", "500"), (a, "md5:bbbb2222ffff.dir", "2000"),
                                    (b, "md5:bbbb2222ffff.dir", "2000")):  # fmt: skip
        client.set_tag(version.run_id, "fid.faces", faces)
        client.set_tag(version.run_id, "fid.n_samples", samples)
    rows = runs.sort_rows(runs.training_runs(client, "anime-avatar", NAME), "fid")
    assert [r.run_id for r in rows] == [b.run_id, a.run_id, elsewhere.run_id]  # the newest run's measure first
    assert [r.fid_on for r in rows] == ["md5:bbbb2222ffff.dir/2000"] * 2 + ["md5:aaaa1111ffff.dir/500"]
    table = runs.format_table(rows).splitlines()
    assert table[0].split()[6:8] == ["fid_on", "fid"] and table[1].split()[7:9] == ["bbbb2222/2000", "60.00"]
    assert table[-1].startswith("FIDs measured against other faces or on other sample counts (fid_on: ")
    assert "do not compare" not in runs.format_table(rows[:2])  # measured alike: no note
    assert list(csv.DictReader(io.StringIO(runs.to_csv(rows))))[2]["fid_on"] == "md5:aaaa1111ffff.dir/500"


def test_first_promotion_takes_the_best_evaluated_version_not_the_newest(store):
    client, trained = store
    older_better, unevaluated, newest = trained(60.0), trained(None), trained(75.0)
    best = registry.best_evaluated(client, NAME)
    assert best == older_better
    decision = decide(newest, registry.champion(client, NAME), best)
    assert decision.promote and decision.winner == older_better
    assert decision.reason == (
        f"no champion yet: version {older_better.version} (FID 60.00) is the best evaluated version; "
        f"the new version {newest.version} has FID 75.00"
    )
    registry.apply(client, NAME, decision)
    assert registry.champion(client, NAME) == older_better
    tags = client.get_run(newest.run_id).data.tags
    # Before: "kept", in the tags and the log, while the alias went to the older version.
    assert tags["champion.decision"] == "named" and tags["champion.version"] == older_better.version
    # Once there is a champion, only a strictly lower FID moves it.
    assert not decide(newest, registry.champion(client, NAME), best).promote
    assert unevaluated.fid is None and decide(unevaluated, None, best).winner == older_better
    # When the new version is the best, it takes the alias itself.
    assert decide(trained(50.0), None, registry.best_evaluated(client, NAME)).winner.fid == 50.0
    # The faces each FID was measured against come from the run's data version tag; with no champion, the best
    # version is looked for among those scored on the new version's faces (the best overall may be on others).
    client.set_tag(newest.run_id, "data_version.faces", "md5:ffff.dir")
    assert registry.candidate(client, newest.version, newest.run_id).faces == "md5:ffff.dir"
    on_other_faces = registry.candidate(client, newest.version, newest.run_id)
    best_overall = registry.best_evaluated(client, NAME)
    client.set_tag(best_overall.run_id, "data_version.faces", "md5:eeee.dir")
    same_faces = registry.best_evaluated(client, NAME, like=on_other_faces)
    assert same_faces is not None and same_faces.version != best_overall.version
    assert same_faces.faces in (None, "md5:ffff.dir")


def test_the_first_evaluation_names_a_champion_and_later_ones_leave_it(store):
    client, trained = store
    first = trained(None)  # registered; the evaluate stage has scored it, the store not yet
    decision = registry.name_first_champion(client, first.run_id, 80.0)
    assert decision is not None and decision.promote
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == first.version
    better = trained(40.0)
    assert registry.name_first_champion(client, better.run_id, 40.0) is None  # only retrain moves it
    assert registry.champion(client, NAME).version == first.version
    with mlflow.start_run() as unregistered:  # tracking.register_model: false
        pass
    assert registry.name_first_champion(client, unregistered.info.run_id, 10.0) is None


def test_with_no_champion_the_first_evaluation_gives_the_alias_to_the_best_evaluated_version(store):
    client, trained = store
    older_better, newest = trained(30.0), trained(None)
    decision = registry.name_first_champion(client, newest.run_id, 90.0)
    assert decision.winner == older_better
    assert registry.champion(client, NAME) == older_better


def test_a_retrain_on_new_faces_gives_the_alias_to_the_best_version_scored_on_them(store):
    """v1 (champion) scored on faces A; v2 (a plain `dvc repro`) and the retrain's v3 on faces B. The retrain
    promoted v3 (FID 150) because v1's FID did not compare, though v2 (100) was better on the same faces. The
    evaluate stage's tags decide what compares: the faces it scored against and its sample count."""
    from pipelines.flows import champion_decision

    client, trained = store
    uri = os.environ["MLFLOW_TRACKING_URI"]
    champion, plain, retrained = trained(50.0), trained(100.0), trained(150.0)
    for version, faces in ((champion, "md5:aaaa.dir"), (plain, "md5:bbbb.dir"), (retrained, "md5:bbbb.dir")):
        client.set_tag(version.run_id, "fid.faces", faces)
        client.set_tag(version.run_id, "fid.n_samples", "1000")
    client.set_registered_model_alias(NAME, "champion", champion.version)
    current = registry.champion(client, NAME)
    assert current.faces == "md5:aaaa.dir" and current.n_samples == "1000"
    decision = champion_decision(uri, NAME, retrained.run_id, current)
    assert decision.outcome == "named" and registry.champion(client, NAME).version == plain.version
    # On as many samples and the same faces as the champion, only a lower FID moves it.
    assert champion_decision(uri, NAME, retrained.run_id, registry.champion(client, NAME)).outcome == "kept"
