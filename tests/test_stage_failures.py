"""A failing stage loses nothing: under `dvc repro` its message says how to restore what DVC removed;
the Prefect flows check what they can before DVC removes anything, and restore the rest themselves.

One tiny DVC workspace (built once, up to the train stage); each test breaks one thing, checks the
previous outputs, and puts params.yaml back.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from PIL import Image

from anime_avatar.core.params import merge
from tests.conftest import free_port, make_project, prefect_rest, run
from tests.test_orchestration import TINY

pytestmark = pytest.mark.slow

TRAIN_OUTPUTS = ("models/generator.pt", "models/run.json", "metrics/train.json", "plots/losses.csv",
                 "plots/samples/step-0000002.png", "plots/samples/step-0000004.png")  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    work = make_project(tmp_path_factory.mktemp("failures") / "project", TINY)
    run(["dvc", "repro", "train"], work)
    return work


def contents(work: Path, paths: tuple[str, ...]) -> dict[str, bytes | None]:
    return {p: (work / p).read_bytes() if (work / p).is_file() else None for p in paths}


@contextmanager
def params_changed(work: Path, changes: dict) -> Iterator[None]:
    original = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(yaml.safe_dump(merge(yaml.safe_load(original), changes), sort_keys=False))
    try:
        yield
    finally:
        (work / "params.yaml").write_text(original)


def stage_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR anime_avatar: stage " in line]


def test_a_failed_download_says_how_to_restore_data_raw_and_dvc_checkout_does(workspace, tmp_path):
    manifest = (workspace / "data/raw/manifest.csv").read_bytes()
    (tmp_path / "empty").mkdir()
    with params_changed(workspace, {"data": {"source": "local", "path": str(tmp_path / "empty")}}):
        proc = run(["dvc", "repro", "--single-item", "download"], workspace, check=False)
    assert proc.returncode != 0
    [error] = stage_errors(proc.stdout + proc.stderr)
    assert error.endswith("DVC removed the stage's previous outputs before it ran, restore them with: "
                          "dvc checkout data/raw")  # fmt: skip
    assert not (workspace / "data/raw").exists()

    run(["dvc", "checkout", "data/raw"], workspace)
    assert (workspace / "data/raw/manifest.csv").read_bytes() == manifest
    assert "download" not in run(["dvc", "status", "download"], workspace).stdout.replace("'download'", "")


def test_train_with_an_unreachable_tracking_server_stops_before_training_and_names_dvc_checkout(workspace):
    before = contents(workspace, (*TRAIN_OUTPUTS, "models/checkpoints/last.pt"))
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    proc = run(["dvc", "repro", "--single-item", "--force", "train"], workspace, check=False, env=env)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    [error] = stage_errors(output)
    assert f"stage train failed: the MLflow tracking server {env['MLFLOW_TRACKING_URI']} does not answer" in error
    assert "restore them with: dvc checkout models/generator.pt models/run.json (" in error
    assert "Traceback" not in output and "train:" not in output  # no progress bar: nothing trained
    assert (workspace / "models/checkpoints/last.pt").read_bytes() == before["models/checkpoints/last.pt"]
    assert not (workspace / "models/generator.pt").exists()  # DVC removed it before the stage ran

    run(["dvc", "checkout", "models/generator.pt", "models/run.json"], workspace)
    for path in ("models/generator.pt", "models/run.json"):
        assert (workspace / path).read_bytes() == before[path]
    for path in TRAIN_OUTPUTS[2:]:  # the uncached plots and metrics, as the next tests expect them
        (workspace / path).parent.mkdir(parents=True, exist_ok=True)
        (workspace / path).write_bytes(before[path])
    assert "train" not in run(["dvc", "status", "train"], workspace).stdout


def test_the_pipeline_flow_restores_the_outputs_of_a_failed_stage(workspace, prefect_server):
    before = contents(workspace, TRAIN_OUTPUTS)
    assert all(before.values())
    # Valid params that fail only once the stage runs, after DVC removed its outputs.
    with params_changed(workspace, {"train": {"batch_size": 1000}}):
        proc = run(["anime-avatar", "pipeline"], workspace, check=False, env=prefect_server)
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "is larger than the training set" in output
    restored = "the previous outputs of stage train were restored: " + ", ".join(
        ["models/generator.pt", "models/run.json", "plots/losses.csv", "metrics/train.json"]
    )  # dvc.yaml's order: outs (the loss CSV is an uncached out), then metrics
    assert restored in output
    # The stage's own message says the flow restores them: no `dvc checkout` for the user to run.
    assert "the flow puts back the previous outputs DVC removed before it ran" in output
    assert "dvc checkout" not in output
    assert contents(workspace, TRAIN_OUTPUTS) == before

    # The last flow run that failed. (Sorting all runs by start time puts first the runs a cron deployment on the
    # shared server has scheduled for next week: they are sorted by their expected start.)
    failed = {"flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}, "sort": "START_TIME_DESC", "limit": 1}
    flow_runs = prefect_rest(prefect_server, "POST", "/flow_runs/filter", failed)
    wanted = "restored the previous outputs of stage train: models/generator.pt"
    query = {"logs": {"flow_run_id": {"any_": [flow_runs[0]["id"]]}, "level": {"ge_": 30}}, "limit": 200}
    for _ in range(30):  # the server stores the flow's logs as Prefect's worker sends them, not at once
        logs = prefect_rest(prefect_server, "POST", "/logs/filter", query)
        if any(wanted in e["message"] for e in logs):
            break
        time.sleep(1)
    assert any(wanted in e["message"] for e in logs), [e["message"][:120] for e in logs]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """The files of ``folder`` over HTTP on 127.0.0.1; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


def test_the_flows_check_the_tracking_server_and_the_archive_before_any_stage(workspace, prefect_server, tmp_path):
    lock = (workspace / "dvc.lock").read_text()
    data = contents(workspace, ("data/raw/manifest.csv", *TRAIN_OUTPUTS[:2]))

    env = {**prefect_server, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    proc = run(["anime-avatar", "retrain"], workspace, check=False, env=env)
    assert proc.returncode == 1
    assert "does not answer" in proc.stderr and "Running stage" not in proc.stdout + proc.stderr

    # An archive whose sha256 is not the one in params.yaml: refused while data/raw is still there.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            png = io.BytesIO()
            Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(png, "PNG")
            archive.writestr(f"img{i}.png", png.getvalue())
    (tmp_path / "site").mkdir()
    (tmp_path / "site/faces.zip").write_bytes(buffer.getvalue())
    wrong = hashlib.sha256(b"another archive").hexdigest()
    env = {**prefect_server, "ANIME_AVATAR_CACHE": str(tmp_path / "cache")}
    nowhere = f"http://127.0.0.1:{free_port()}/faces.zip"
    with params_changed(workspace, {"data": {"source": "url", "url": nowhere}}):
        proc = run(["anime-avatar", "pipeline"], workspace, check=False, env=env)
    assert proc.returncode == 1 and nowhere in proc.stderr  # the download's own one-line reason
    assert "Running stage" not in proc.stdout + proc.stderr
    with serving(tmp_path / "site") as base:
        changes = {"data": {"source": "url", "url": f"{base}/faces.zip", "sha256": wrong}}
        with params_changed(workspace, changes):
            proc = run(["anime-avatar", "pipeline"], workspace, check=False, env=env)
    assert proc.returncode == 1
    assert f"sha256 mismatch for {base}/faces.zip: expected {wrong}" in proc.stderr
    assert "Running stage" not in proc.stdout + proc.stderr
    assert (workspace / "dvc.lock").read_text() == lock
    assert contents(workspace, ("data/raw/manifest.csv", *TRAIN_OUTPUTS[:2])) == data


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_during_the_pipeline_ends_it_in_one_line_with_the_outputs_back(workspace, stop):
    """A terminal's Ctrl-C reaches every process of its group: Prefect's temporary server died with the stage, and
    the flow printed about 100 lines of connection errors, then hung for minutes. The flows' temporary server now
    runs in a session of its own. A SIGTERM to the flow alone (`kill`, or a cancellation from Prefect's UI) left
    the stage running without it and the stage's outputs deleted, the uncached ones for good."""
    import os
    import signal
    import subprocess
    import time

    import psutil

    from tests.conftest import BIN, venv_env

    before = contents(workspace, TRAIN_OUTPUTS[:4])
    env = venv_env()
    env.pop("PREFECT_API_URL", None)  # the temporary server
    with params_changed(workspace, {"train": {"steps": 100_000, "log_every": 1}}):
        proc = subprocess.Popen([str(BIN / "anime-avatar"), "pipeline"], cwd=workspace, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:  # until the training has taken a step
            lines.append(line)
            if "train:" in line and "step" in line or "loss_d" in line:
                break
        time.sleep(2)
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        else:
            os.kill(proc.pid, signal.SIGTERM)  # the flow's process alone
        try:
            rest, _ = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    output = "".join(lines) + rest
    assert proc.returncode != 0
    stages = [p for p in psutil.process_iter(["cmdline"]) if "stages.train" in " ".join(p.info["cmdline"] or [])]
    assert not [p for p in stages if p.cwd() == str(workspace)], "the stage went on without its flow"
    assert contents(workspace, TRAIN_OUTPUTS[:4]) == before, output[-3000:]
    assert "ConnectError" not in output and "Connection refused" not in output, output[-3000:]
    if stop == "ctrl-c":
        assert "the previous outputs of stage train were restored" in output, output[-3000:]
        assert "stage train interrupted (Ctrl-C)" in output and "Traceback" not in output, output[-3000:]


def test_the_temporary_prefect_server_ends_with_the_command_however_it_ends(tmp_path):
    """It runs in a session of its own (a Ctrl-C is the flow's): a closed terminal (SIGHUP) or a SIGKILL of the
    command left it running on its port with its database open."""
    import subprocess

    import httpx

    from tests.conftest import BIN, venv_env

    script = """
import os, signal
from pipelines.cli import prefect_api
from prefect.settings import PREFECT_API_URL
with prefect_api():
    print(PREFECT_API_URL.value(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    env = venv_env({"PREFECT_HOME": str(tmp_path / "home")})
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([str(BIN / "python"), "-c", script], env=env, capture_output=True, text=True, timeout=240)
    url = proc.stdout.strip()
    assert proc.returncode == -9 and url.startswith("http://127.0.0.1:"), proc.stderr
    for _ in range(100):  # SIGTERM on the parent's death, then uvicorn's shutdown
        try:
            httpx.get(f"{url}/health", timeout=1)
        except httpx.ConnectError:
            return
        time.sleep(0.1)
    pytest.fail(f"the temporary server still answers at {url} after the command was killed")
