"""All the stages on tiny params through the Prefect pipeline flow, against a real Prefect server: their
outputs, MLflow records and generated avatars; then what users do next:
retrain with promotion, compare runs, audit data versions, schedule, lock, DVC remote, MLflow server.

The tests share one workspace (built once by `anime-avatar pipeline`) and run in file order;
each says what it expects to find.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.core.params import merge
from anime_avatar.nn.precision import training_precision
from anime_avatar.ops.lock import workspace_lock
from anime_avatar.ops.runs import COLUMNS as RUNS_COLUMNS
from tests.conftest import (
    BIN,
    TINY_PIPELINE,
    commit,
    free_port,
    make_project,
    prefect_rest,
    run,
    stop,
    venv_env,
    wait_http,
)

pytestmark = pytest.mark.slow

TINY = merge(TINY_PIPELINE, {"train": {"steps": 4}, "pipeline": {"retry_delay_s": 0}})
STAGES = [
    "download",
    "detect",
    "augment",
    "validate",
    "train",
    "evaluate",
    "stylize_train",
    "stylize_eval",
    "download_photos",
    "translate_train",
    "translate_eval",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prefect_server) -> dict:
    work = make_project(tmp_path_factory.mktemp("orchestration") / "project", TINY, git=True)
    proc = run(["anime-avatar", "pipeline"], work, env=prefect_server)
    commit(work, "data v1")
    return {"path": work, "env": prefect_server, "first": proc.stdout + proc.stderr}


def client(work: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{work / 'mlflow.db'}")


def run_id_of(work: Path) -> str:
    return json.loads((work / "models/run.json").read_text())["run_id"]


def test_pipeline_flow_runs_each_stage_as_a_task_with_a_parent_mlflow_run(workspace):
    work, env = workspace["path"], workspace["env"]
    assert (
        "download ran, detect ran, augment ran, validate ran, train ran, evaluate ran, stylize_train ran, "
        "stylize_eval ran, download_photos ran, translate_train ran, translate_eval ran; FID"
    ) in workspace["first"]
    scores = json.loads((work / "metrics/eval.json").read_text())

    mlflow = client(work)
    train_run = mlflow.get_run(run_id_of(work))
    parent = mlflow.get_run(train_run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["stage"] == "pipeline" and parent.data.tags["flow"] == "anime-avatar-pipeline"
    assert {parent.data.tags[f"stage.{s}"] for s in STAGES} == {"ran"}
    assert parent.data.tags["train_run_id"] == train_run.info.run_id
    assert parent.data.metrics["fid"] == pytest.approx(scores["fid"])
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    assert train_run.data.tags["prefect.flow_run_id"] == flow_run_id
    # The stage records the project's store as `dvc repro` would, relative to the workspace: the absolute URI
    # the flow pointed MLflow at is not passed down to the stages as if the user had chosen it.
    assert json.loads((work / "models/run.json").read_text())["tracking_uri"] == "sqlite:///mlflow.db"

    # Prefect recorded the flow run, one task run per stage, and the stages' own output in the logs.
    flow_run = prefect_rest(env, "GET", f"/flow_runs/{flow_run_id}")
    assert flow_run["state_type"] == "COMPLETED"
    tasks = prefect_rest(env, "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    assert sorted(t["name"].rsplit("-", 1)[0] for t in tasks) == sorted(STAGES)
    assert all(t["state_type"] == "COMPLETED" for t in tasks)
    logs = prefect_rest(env, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    messages = "\n".join(entry["message"] for entry in logs)
    assert "Running stage 'train'" in messages and "FID" in messages
    assert "alembic" not in messages  # MLflow's database set-up said 9 lines per stage until 2026-12-07


def test_stage_outputs_mlflow_records_and_generated_avatars(workspace, tmp_path):
    work = workspace["path"]
    assert "FID" in workspace["first"]

    train_metrics = json.loads((work / "metrics/train.json").read_text())
    assert train_metrics["steps"] == 4 and train_metrics["params_g"] > 0 and train_metrics["params_d"] > 0
    scores = json.loads((work / "metrics/eval.json").read_text())
    assert set(scores) == {"fid", "kid_mean", "kid_std", "n_samples", "n_real"}
    assert scores["n_samples"] == 24 and scores["fid"] > 0
    assert Image.open(work / "reports/samples.png").size[0] > 32 * 4
    assert sorted(p.name for p in (work / "plots/samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    losses = (work / "plots/losses.csv").read_text().splitlines()
    assert losses[0] == "step,loss_d,loss_g" and len(losses) == 5

    # DVC sees the metrics.
    shown = run(["dvc", "metrics", "show", "--json"], work).stdout
    assert '"fid"' in shown and '"steps"' in shown

    # MLflow: one run with params, data versions, losses, FID, artifacts and a registered model.
    code = """
import json, mlflow
from mlflow import MlflowClient
from PIL import Image
mlflow.set_tracking_uri("sqlite:///mlflow.db")
run_id = json.load(open("models/run.json"))["run_id"]
c = MlflowClient()
r = c.get_run(run_id)
hist = c.get_metric_history(run_id, "loss_d")
versions = c.search_model_versions("name='anime-avatar-generator'")
arts = [a.path for a in c.list_artifacts(run_id, "samples")]
print(json.dumps({"params": r.data.params, "tags": r.data.tags, "metrics": r.data.metrics,
                  "steps": [m.step for m in hist], "versions": [v.run_id for v in versions], "arts": arts,
                  "name": r.info.run_name, "datasets": [d.dataset.name for d in r.inputs.dataset_inputs],
                  "root_arts": [a.path for a in c.list_artifacts(run_id)]}))
"""
    record = json.loads(run(["python", "-c", code], work).stdout.strip().splitlines()[-1])
    assert record["params"]["train.steps"] == "4" and record["params"]["model.arch"] == "sagan"
    assert record["tags"]["data_version.train"].startswith("md5:")
    assert record["tags"]["stage"] == "train" and len(record["tags"]["mlflow.source.git.commit"]) == 40
    assert record["tags"]["git.dirty"] == "false" and record["name"] == "sagan-32px-4"
    assert record["datasets"] == ["data/train"]
    amp = yaml.safe_load((work / "params.yaml").read_text())["train"]["amp"]
    assert record["tags"]["precision"] == training_precision(torch.device("cpu"), amp)
    assert "generator.pt" not in record["root_arts"]  # logged once, inside the model
    assert record["steps"] == [1, 2, 3, 4]
    assert {"fid", "kid_mean", "kid_std"} <= set(record["metrics"])
    assert record["metrics"]["fid"] == pytest.approx(scores["fid"])
    assert record["versions"] == [json.loads((work / "models/run.json").read_text())["run_id"]]
    assert record["arts"] == ["samples/step-0000002.png", "samples/step-0000004.png"]

    # The product: the same seed gives the same avatars, from the file or from the registry.
    for out in ("a", "b"):
        run(["anime-avatar", "generate", "--n", "3", "--seed", "5", "--out", str(tmp_path / out)], work)
    run(["anime-avatar", "generate", "--n", "1", "--seed", "6", "--out", str(tmp_path / "c"),
         "--model", "models:/anime-avatar-generator/1"], work)  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["avatar-000005.png", "avatar-000006.png", "avatar-000007.png"]
    for name in names:
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "a" / name)), np.asarray(Image.open(tmp_path / "b" / name))
        )
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "a" / "avatar-000006.png")),
        np.asarray(Image.open(tmp_path / "c" / "avatar-000006.png")),
    )
    run(["anime-avatar", "generate", "--interpolate", "1", "2", "--steps", "4", "--grid", str(tmp_path / "w.png"),
         "--truncation", "0.7"], work)  # fmt: skip
    assert Image.open(tmp_path / "w.png").size == (4 * 34 + 2, 36)

    bad = run(["anime-avatar", "generate", "--model", "nowhere.pt"], work, check=False)
    assert bad.returncode == 1 and "neither a file nor an MLflow model URI" in bad.stderr


def test_first_run_log_is_readable(workspace):
    lines = workspace["first"].splitlines()
    assert not [line for line in lines if "Traceback" in line or "database is locked" in line]
    # Progress bars print a few lines per stage, not one per step; one timestamp per line.
    assert sum("train:" in line for line in lines) <= 4
    assert not [line for line in lines if re.search(r"\d\d:\d\d:\d\d.*\b\d\d:\d\d:\d\d\b", line)]
    # DVC's advice to `git add dvc.lock` comes once, at the end, not after every stage.
    assert sum("git add" in line for line in lines) == 1 and "dvc config core.autostage" not in workspace["first"]


def test_noop_pipeline_is_quiet_adds_no_mlflow_run_and_publishes_its_results(workspace):
    work, env = workspace["path"], workspace["env"]
    mlflow = client(work)
    before = {r.info.run_id for r in mlflow.search_runs(["1"])}
    proc = run(["anime-avatar", "pipeline"], work, env=env)
    output = (proc.stdout + proc.stderr).splitlines()
    assert len(output) <= 40 and "Traceback" not in proc.stdout + proc.stderr, "\n".join(output)
    assert "download up to date, detect up to date" in proc.stdout and "evaluate up to date" in proc.stdout
    assert sum("was up to date in" in line for line in output) == len(STAGES)  # one line per stage
    assert {r.info.run_id for r in mlflow.search_runs(["1"])} == before  # no parent run for a no-op

    # Each flow run (the first one and this one) has the results artifact: the FID/KID table and the grid. (The
    # Prefect server is the session's: other modules' flows have theirs too.)
    scores = json.loads((work / "metrics/eval.json").read_text())
    query = {"artifacts": {"key": {"any_": ["anime-avatar-results"]}}, "sort": "CREATED_DESC"}
    found = prefect_rest(env, "POST", "/artifacts/filter", query)
    train_run = mlflow.get_run(run_id_of(work))
    first = mlflow.get_run(train_run.data.tags["mlflow.parentRunId"]).data.tags["prefect.flow_run_id"]
    noop = found[0]["flow_run_id"]  # the newest
    assert noop != first and prefect_rest(env, "GET", f"/flow_runs/{noop}")["state_type"] == "COMPLETED"
    mine = [found[0], *(a for a in found if a["flow_run_id"] == first)]
    assert len(mine) == 2  # one for each run (the key keeps one version per flow run)
    for artifact in mine:
        assert artifact["type"] == "markdown"
        assert f"| FID | {scores['fid']:.2f} |" in artifact["data"] and "| KID | " in artifact["data"]
        assert "![sample grid](data:image/png;base64," in artifact["data"]


def test_a_flow_on_a_temporary_server_sends_its_last_log_lines_before_the_server_stops(workspace, tmp_path):
    """Without PREFECT_API_URL the flow runs a temporary server; it was stopped while Prefect's log and event workers
    still held records: every such command ended with `--- Error logging to API ---` and lost its last lines."""
    proc = run(["anime-avatar", "pipeline"], workspace["path"], env={"PREFECT_HOME": str(tmp_path / "prefect")})
    assert "temporary Prefect server on http://127.0.0.1:" in proc.stderr
    assert "Error logging to API" not in proc.stderr and "EventsWorker" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_second_run_is_refused_while_the_workspace_is_locked(workspace):
    work, env = workspace["path"], workspace["env"]
    before = (work / "dvc.lock").read_text()
    with workspace_lock(work, "a test holding the lock"):
        proc = run(["anime-avatar", "pipeline"], work, check=False, env=env)
    assert proc.returncode == 1
    assert "is locked by a test holding the lock" in proc.stderr and "one pipeline run at a time" in proc.stderr
    assert (work / "dvc.lock").read_text() == before
    # A user's error, not a crash: Prefect's traceback of it (17 lines before) is left out of the flow run's log.
    assert "Traceback" not in proc.stderr and "WorkspaceBusy" in proc.stderr


def test_retrain_keeps_the_first_champion_then_promotes_only_a_lower_fid(workspace):
    work, env = workspace["path"], workspace["env"]
    mlflow = client(work)
    first_run = run_id_of(work)

    # The first pipeline run's evaluate stage named its model the champion (there was none).
    assert mlflow.get_model_version_by_alias("anime-avatar-generator", "champion").run_id == first_run
    assert mlflow.get_run(first_run).data.tags["champion.decision"] == "promoted"
    # Retrain on the same data: the forced download changes nothing downstream, so the champion stays.
    proc = run(["anime-avatar", "retrain"], work, env=env)
    assert "download ran, detect up to date" in proc.stdout and "evaluate up to date" in proc.stdout
    assert "champion kept: version 1 already is the champion (no new model)" in proc.stdout
    assert mlflow.get_model_version_by_alias("anime-avatar-generator", "champion").run_id == first_run

    # New data: a new model, promoted only if its FID is lower than the champion's.
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["synthetic"]["seed"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["anime-avatar", "retrain"], work, env=env)
    commit(work, "data v2")
    assert "download ran, detect ran" in proc.stdout and "train ran, evaluate ran" in proc.stdout
    second_run = run_id_of(work)
    assert second_run != first_run
    fid_first = mlflow.get_run(first_run).data.metrics["fid"]
    fid_second = mlflow.get_run(second_run).data.metrics["fid"]
    holder = mlflow.get_model_version_by_alias("anime-avatar-generator", "champion")
    promoted = fid_second < fid_first
    assert holder.run_id == (second_run if promoted else first_run)
    tags = mlflow.get_run(second_run).data.tags
    assert tags["champion.decision"] == ("promoted" if promoted else "kept")
    assert tags["champion.previous_version"] == "1" and float(tags["champion.previous_fid"]) == fid_first
    assert f"champion {'promoted' if promoted else 'kept'}: FID {fid_second:.2f}" in proc.stdout


def test_runs_lists_training_runs_by_fid_with_the_champion(workspace, tmp_path):
    work = workspace["path"]
    mlflow = client(work)
    proc = run(["anime-avatar", "runs", "--csv", "--plot", str(tmp_path / "runs.png")], work)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 2
    fids = [float(r["fid"]) for r in rows]
    assert fids == sorted(fids)
    champion = mlflow.get_model_version_by_alias("anime-avatar-generator", "champion").run_id
    assert [r["run_id"] for r in rows if r["champion"] == "True"] == [champion]
    for row in rows:
        recorded = mlflow.get_run(row["run_id"])
        assert row["data_version"] == recorded.data.tags["data_version.train"]
        assert row["arch"] == "sagan" and row["steps"] == "4" and row["status"] == "FINISHED"
        assert float(row["fid"]) == pytest.approx(recorded.data.metrics["fid"])
    assert (tmp_path / "runs.png").stat().st_size > 10_000
    table = run(["anime-avatar", "runs", "--sort", "start"], work).stdout.splitlines()
    assert table[0].split() == list(RUNS_COLUMNS)
    assert RUNS_COLUMNS == ("run_id", "start", "status", "data_version", "arch", "steps", "fid_on", "fid", "kid",
                            "champion")  # fmt: skip
    assert table[1].startswith(run_id_of(work)[:12])  # newest first


def test_audit_links_each_dvc_lock_commit_to_its_runs_and_a_run_to_its_raw_manifest(workspace, tmp_path):
    work = workspace["path"]
    log = run(["git", "log", "--format=%H %s", "--", "dvc.lock"], work).stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in log] == ["data v2", "data v1"]
    out = run(["anime-avatar", "audit"], work).stdout
    blocks = out.split("\n\n")[0].split("\n")
    mlflow = client(work)
    runs = {r.info.run_id: r for r in mlflow.search_runs(["1"], "tags.stage = 'train'")}
    for line in log:
        commit_id = line.split()[0]
        locked = yaml.safe_load(run(["git", "show", f"{commit_id}:dvc.lock"], work).stdout)
        train_md5 = locked["stages"]["augment"]["outs"][0]["md5"]
        start = next(i for i, text in enumerate(blocks) if text.startswith(commit_id[:10]))
        block = "\n".join(blocks[start : start + 5])
        assert train_md5.removesuffix(".dir")[:10] in block
        nfiles = locked["stages"]["download"]["outs"][0]["nfiles"]
        assert f"({nfiles} files)" in block
        trained = [r for r, rec in runs.items() if rec.data.tags["data_version.train"] == f"md5:{train_md5}"]
        assert len(trained) == 1 and trained[0][:12] in block

    latest = run_id_of(work)
    lineage = run(["anime-avatar", "audit", "--run", latest, "--manifest", str(tmp_path / "m.csv")], work).stdout
    assert "raw manifest:   10 files" in lineage and "synthetic:seed=3 (10)" in lineage
    assert "data.synthetic.seed=3" in lineage and log[0].split()[0][:10] in lineage
    assert (tmp_path / "m.csv").read_text() == (work / "data/raw/manifest.csv").read_text()
    missing = run(["anime-avatar", "audit", "--run", "0" * 32], work, check=False)
    assert missing.returncode == 1 and "no MLflow run" in missing.stderr


def test_mlflow_server_serves_the_logged_runs(workspace):
    work = workspace["path"]
    port = free_port()
    server = subprocess.Popen([str(BIN / "anime-avatar"), "ui", "--port", str(port)], cwd=work, env=venv_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, timeout=90)
        experiment = httpx.get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name",
                               params={"experiment_name": "anime-avatar"}, timeout=30).json()  # fmt: skip
        found = httpx.post(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            json={"experiment_ids": [experiment["experiment"]["experiment_id"]],
                  "filter": "tags.stage = 'train'"},
            timeout=30,
        ).json()  # fmt: skip
    finally:
        stop(server)
    served = {r["info"]["run_id"]: {m["key"]: m["value"] for m in r["data"]["metrics"]} for r in found["runs"]}
    local = {r.info.run_id: r.data.metrics for r in client(work).search_runs(["1"], "tags.stage = 'train'")}
    assert set(served) == set(local) and len(served) == 2
    for run_id, metrics in local.items():
        assert served[run_id]["fid"] == pytest.approx(metrics["fid"])


def test_dvc_remote_push_then_pull_restores_the_data(workspace, tmp_path):
    work = workspace["path"]
    manifest = (work / "data/raw/manifest.csv").read_bytes()
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], work)
    run(["dvc", "push"], work)
    for gone in (".dvc/cache", "data/raw", "data/faces", "data/train", "models/generator.pt"):
        shutil.rmtree(work / gone) if (work / gone).is_dir() else (work / gone).unlink()
    assert "deleted" in run(["dvc", "status"], work).stdout
    run(["dvc", "pull"], work)
    assert (work / "data/raw/manifest.csv").read_bytes() == manifest
    assert "Data and pipelines are up to date" in run(["dvc", "status"], work).stdout


def test_schedule_serves_retrain_as_a_cron_deployment_and_runs_it(workspace):
    work, env = workspace["path"], workspace["env"]
    serving = subprocess.Popen(
        [str(BIN / "anime-avatar"), "schedule", "--cron", "0 3 * * 1", "--name", "weekly"],
        cwd=work, env=venv_env({**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deployment = None
        deadline = time.monotonic() + 90
        while deployment is None and time.monotonic() < deadline:
            assert serving.poll() is None, "anime-avatar schedule exited"
            try:
                deployment = prefect_rest(env, "GET", "/deployments/name/anime-avatar-retrain/weekly")
            except httpx.HTTPStatusError:
                time.sleep(1)
        assert deployment is not None, "the deployment was not registered within 90 s"
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * 1"]
        assert deployment["parameters"] == {"workspace": str(work.resolve())}
        # The server's scheduler makes the cron's runs (its loop for new deployments runs every 5 s). With
        # SQLAlchemy 2.1 it failed on every loop (`Can't evaluate bulk DML statement`) and no run was ever made.
        query = {
            "flow_runs": {"deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}
        }
        deadline, scheduled = time.monotonic() + 60, []
        while not scheduled and time.monotonic() < deadline:
            time.sleep(2)
            scheduled = prefect_rest(env, "POST", "/flow_runs/filter", query)
        assert scheduled, "the server's scheduler made no run of the cron deployment within 60 s"
        starts = [datetime.fromisoformat(run["expected_start_time"]) for run in scheduled]
        assert all((start.weekday(), start.hour, start.minute) == (0, 3, 0) for start in starts)

        flow_run = prefect_rest(env, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})
        deadline = time.monotonic() + 240
        while flow_run["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert time.monotonic() < deadline, f"flow run still {flow_run['state_type']} after 240 s"
            time.sleep(2)
            flow_run = prefect_rest(env, "GET", f"/flow_runs/{flow_run['id']}")
    finally:
        stop(serving)
    assert flow_run["state_type"] == "COMPLETED"
    parent = client(work).search_runs(["1"], f"tags.`prefect.flow_run_id` = '{flow_run['id']}'")
    assert [r.data.tags["flow"] for r in parent] == ["anime-avatar-retrain"]
    assert parent[0].data.tags["champion.decision"] == "kept"  # nothing changed: same model, alias unmoved


def test_schedule_says_when_no_server_is_reachable(workspace):
    work = workspace["path"]
    port = free_port()
    env = {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    proc = run(["anime-avatar", "schedule", "--cron", "0 3 * * 1"], work, check=False, env=env)
    assert proc.returncode == 1 and "no Prefect server answers" in proc.stderr and "make prefect-server" in proc.stderr
    proc = run(["anime-avatar", "schedule", "--cron", "every monday"], work, check=False, env=env)
    assert proc.returncode == 1 and "--cron 'every monday': Invalid cron string" in proc.stderr


def test_the_flows_say_when_prefect_api_url_points_at_no_server(workspace):
    """README has users `export PREFECT_API_URL` for `schedule`; a later `pipeline` once that server is stopped
    ended in a 113-line Prefect traceback (`RuntimeError: Failed to reach API`)."""
    env = {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    for command in (["pipeline"], ["retrain", "--no-refresh"]):
        proc = run(["anime-avatar", *command], workspace["path"], check=False, env=env)
        assert proc.returncode == 1, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:" in lines[0]
        assert lines[0].endswith("start it, or `unset PREFECT_API_URL` to let Prefect run a temporary one")


def test_a_prefect_api_url_without_api_is_named_as_such(tmp_path):
    import http.server
    import threading

    from pipelines.schedule import check_server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(UserError) as err:
            check_server(url)  # a server answers, but /health is not there: before, "no Prefect server answers"
    finally:
        server.shutdown()
    assert str(err.value) == (f"PREFECT_API_URL={url} answers {url}/health with HTTP 404: not a Prefect server's API "
                              f"(a Prefect API URL ends in /api: {url}/api)")  # fmt: skip


@pytest.mark.parametrize(("cron", "timezone", "message"), [
    ("bad", None, "--cron 'bad': Invalid cron string: \"bad\""),
    ("0 3 * * 1", "Mars/Olympus", "--timezone 'Mars/Olympus': Invalid timezone: \"Mars/Olympus\" (specify in IANA"),
])  # fmt: skip
def test_a_bad_cron_or_timezone_is_named_with_its_reason(cron, timezone, message):
    from pipelines.schedule import cron_schedule

    with pytest.raises(UserError) as err:
        cron_schedule(cron, timezone)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("name", "reason"), [
    ("weekly/1", "'weekly/1' holds /: Prefect refuses / % & < > in names"),
    ("50%<off>", "'50%<off>' holds % < >: Prefect refuses / % & < > in names"),
    (" ", "the name is empty"),
])  # fmt: skip
def test_a_deployment_name_prefect_would_refuse_is_a_usage_error(name, reason, capsys):
    from pipelines.cli import main

    with pytest.raises(SystemExit) as usage:
        main(["schedule", "--cron", "0 3 * * 1", "--name", name])
    assert usage.value.code == 2 and f"argument --name: {reason}" in capsys.readouterr().err
