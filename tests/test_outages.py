"""The train stage against tracking stores that fail: a real `mlflow server` on 127.0.0.1 killed
mid-training (and started again), a corrupt mlflow.db, a training process killed outright; and the
pipeline flow whose server dies between two stages.

The stage runs as the pipeline runs it (`python -m stages.train` in a project folder) on a tiny
training set; the test pauses it (SIGSTOP) while it kills or starts the server, so that each
event falls where the case needs it whatever the machine's load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from anime_avatar.artifacts.trainset import Variant, write_train_set
from tests.conftest import BIN, free_port, make_project, run, venv_env, wait_http

pytestmark = pytest.mark.slow

IMAGES = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
TRAIN = ["python", "-m", "stages.train"]


def train_project(work: Path, steps: int) -> Path:
    """A project whose data/train holds 32 random 32px images, with tiny nets and a loss logged every step."""
    make_project(work, {
        "model": {"arch": "sagan", "channels": 8, "attention": [16], "z_dim": 16},
        "train": {"steps": steps, "batch_size": 8, "device": "cpu", "threads": 1, "log_every": 1,
                  "sample_every": 4, "checkpoint_every": 1},
    })  # fmt: skip
    (work / "data/train").mkdir(parents=True)
    write_train_set(work / "data/train", IMAGES, [Variant(f"f{i}", 0) for i in range(len(IMAGES))], 4096, 1)
    return work


class Running:
    """A process whose output (stdout and stderr) is read line by line while it runs."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=venv_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                assert self._reader.is_alive(), f"exited without printing {text!r}:\n{self.output}"
                assert time.monotonic() < deadline, f"{text!r} not printed within {timeout:.0f} s:\n{self.output}"
                self._changed.wait(1)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def finish(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(30)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


class MlflowServer:
    """A real `mlflow server` (SQLite backend, served artifacts) that the test can kill and start again."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port = folder, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
               "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]  # fmt: skip
        with open(self.folder / "server.log", "a") as log:
            # Its own process group: the CLI starts the web server as a child, and both must go.
            self.proc = subprocess.Popen(cmd, env=venv_env(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        wait_http(f"{self.uri}/health", self.proc, timeout=300)

    def kill(self) -> None:
        """SIGKILL to the server and its web workers, as a crash or an out-of-memory kill would end it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def store(self) -> MlflowClient:
        """The server's own database, readable whether the server runs or not."""
        return MlflowClient(f"sqlite:///{self.folder / 'server.db'}")


def wait_for_losses(client: MlflowClient, steps: int, timeout: float = 300) -> str:
    """The id of the one training run once it has logged ``steps`` losses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("anime-avatar")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "loss_d")) >= steps:
            return runs[0].info.run_id
        time.sleep(0.5)
    raise AssertionError(f"no training run logged {steps} losses within {timeout:.0f} s")


def loss_steps(client: MlflowClient, run_id: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, "loss_d")]


def train_until_the_server_dies(work: Path, server: MlflowServer) -> tuple[Running, str]:
    """The train stage logging to ``server``, which is killed once two losses are in: (the stage, its run id)."""
    server.start()
    stage = Running(TRAIN, work, {"MLFLOW_TRACKING_URI": server.uri})
    try:
        run_id = wait_for_losses(server.store(), 2)
        stage.pause()  # so that the kill falls mid-training whatever the machine's load
        server.kill()
        stage.resume()
    except BaseException:
        stage.stop()
        server.kill()
        raise
    return stage, run_id


def test_training_goes_on_when_the_tracking_server_dies_and_logs_all_once_it_is_back(tmp_path):
    work = train_project(tmp_path / "project", steps=24)
    server = MlflowServer(tmp_path / "server")
    stage, run_id = train_until_the_server_dies(work, server)
    try:
        stage.wait_for("stopped answering")  # training went on past the outage
        stage.pause()
        server.start()
        stage.resume()
        assert stage.finish() == 0, stage.output
        samples = [a.path for a in MlflowClient(server.uri).list_artifacts(run_id, "samples")]
    finally:
        stage.stop()
        server.kill()

    out = stage.output
    assert out.count("stopped answering") == 1 and "Traceback" not in out
    assert "answers again: sent the" in out
    client = server.store()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert loss_steps(client, run_id) == list(range(1, 25))
    assert samples == [f"samples/step-{s:07d}.png" for s in (4, 8, 12, 16, 20, 24)]
    assert [v.run_id for v in client.search_model_versions("name='anime-avatar-generator'")] == [run_id]
    assert json.loads((work / "models/run.json").read_text())["run_id"] == run_id
    assert (work / "models/generator.pt").is_file() and (work / "models/checkpoints/last.pt").is_file()
    assert not (work / "mlflow-pending").exists()


def test_what_a_dead_tracking_server_missed_is_kept_and_sent_once_it_is_back(tmp_path):
    work = train_project(tmp_path / "project", steps=8)
    server = MlflowServer(tmp_path / "server")
    stage, run_id = train_until_the_server_dies(work, server)
    try:
        assert stage.finish() == 0, stage.output  # the model is saved: the stage succeeds
    finally:
        stage.stop()

    out = stage.output
    assert out.count("stopped answering") == 1 and "Traceback" not in out
    assert "still does not answer" in out and f"kept in mlflow-pending/{run_id}" in out
    assert (work / "models/generator.pt").is_file() and (work / "models/checkpoints/last.pt").is_file()
    assert json.loads((work / "models/run.json").read_text())["run_id"] == run_id
    records = (work / "mlflow-pending" / run_id / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in records][-3:] == ["metrics", "model", "end"]
    client = server.store()
    assert client.get_run(run_id).info.status == "RUNNING" and len(loss_steps(client, run_id)) < 8

    server.start()
    try:
        table = run(["anime-avatar", "runs"], work, env={"MLFLOW_TRACKING_URI": server.uri})
    finally:
        server.kill()
    row = next(line for line in table.stdout.splitlines() if line.startswith(run_id[:12]))
    assert row.split()[3] == "FINISHED"
    assert f"sent the {len(records)} record(s) of MLflow run {run_id}" in table.stderr
    assert client.get_run(run_id).info.status == "FINISHED"
    assert loss_steps(client, run_id) == list(range(1, 9))
    assert [v.run_id for v in client.search_model_versions("name='anime-avatar-generator'")] == [run_id]
    assert not (work / "mlflow-pending" / run_id).exists()


def test_a_training_killed_outright_is_marked_killed_by_the_next_run(tmp_path):
    work = train_project(tmp_path / "project", steps=12)
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    stage = Running(TRAIN, work)
    try:
        killed = wait_for_losses(client, 2)
        stage.proc.kill()  # SIGKILL: nothing gets to tell MLflow
        stage.finish()
    finally:
        stage.stop()
    assert client.get_run(killed).info.status == "RUNNING"

    second = run(TRAIN, work)  # resumes from the checkpoint and finishes
    assert f"marked 1 MLflow run(s) KILLED: their process is gone ({killed})" in second.stderr
    assert client.get_run(killed).info.status == "KILLED"
    assert "ended without closing the run" in client.get_run(killed).data.tags["killed.reason"]
    finished = json.loads((work / "models/run.json").read_text())["run_id"]
    assert client.get_run(finished).info.status == "FINISHED"

    table = run(["anime-avatar", "runs", "--sort", "start"], work).stdout.splitlines()
    assert table[0].split()[:3] == ["run_id", "start", "status"]
    assert [(line.split()[0], line.split()[3]) for line in table[1:]] == [
        (finished[:12], "FINISHED"), (killed[:12], "KILLED"),
    ]  # fmt: skip


def test_a_corrupt_mlflow_db_stops_the_train_stage_in_one_line_before_training(tmp_path):
    work = train_project(tmp_path / "project", steps=2)
    (work / "mlflow.db").write_bytes(b"not a database " * 1000)
    proc = run(TRAIN, work, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "mlflow.db is not a usable MLflow database (file is not a database)" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (work / "models/checkpoints").exists() and not (work / "models/generator.pt").exists()


def two_stage_project(work: Path, server: MlflowServer, second_fails: bool) -> Path:
    """A workspace whose dvc.yaml has two stages: the first kills ``server`` (as a crash would, between two
    stages of a flow), the second then succeeds or fails with a stage's ERROR line."""
    make_project(work, {})
    kill = f"import os; os.killpg({server.proc.pid}, 9); open('first.txt', 'w').write('1')"
    second = (
        "import sys; print('ERROR anime_avatar: stage second failed: broken on purpose'); sys.exit(1)"
        if second_fails
        else "open('second.txt', 'w').write('2')"
    )
    stages = {
        "first": {"cmd": f'python -c "{kill}"', "outs": ["first.txt"]},
        "second": {"cmd": f'python -c "{second}"', "deps": ["first.txt"], "outs": ["second.txt"]},
    }
    (work / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return work


@pytest.mark.parametrize("second_fails", [True, False], ids=["failed-stage", "finished-flow"])
def test_a_tracking_server_that_dies_mid_flow_neither_hides_a_failed_stage_nor_fails_the_flow(
    tmp_path, prefect_server, second_fails
):
    server = MlflowServer(tmp_path / "server")
    server.start()
    try:
        work = two_stage_project(tmp_path / "project", server, second_fails)
        flow = run(["anime-avatar", "pipeline"], work, check=False,
                   env={**prefect_server, "MLFLOW_TRACKING_URI": server.uri})  # fmt: skip
    finally:
        server.kill()

    out = flow.stdout + flow.stderr
    assert flow.returncode == (1 if second_fails else 0), out
    assert "MlflowException" not in out
    if second_fails:  # the flow's last word is the stage's failure (Prefect logs the task's traceback before it)
        assert "ERROR anime_avatar: stage second failed (dvc repro exit" in out.splitlines()[-2]
        assert out.splitlines()[-1] == "ERROR anime_avatar: stage second failed: broken on purpose"
    else:
        assert "Traceback" not in out and "first ran, second ran" in flow.stdout
    [kept] = list((work / "mlflow-pending").iterdir())  # the parent run's records, for when the server is back
    assert f"kept in mlflow-pending/{kept.name}" in out
    client = server.store()
    assert client.get_run(kept.name).info.status == "RUNNING"

    server.start()
    try:
        table = run(["anime-avatar", "runs"], work, env={"MLFLOW_TRACKING_URI": server.uri})
    finally:
        server.kill()
    assert f"of MLflow run {kept.name} kept since its tracking store went away" in table.stderr
    parent = client.get_run(kept.name)
    assert parent.data.tags["flow"] == "anime-avatar-pipeline"
    assert parent.info.status == ("FAILED" if second_fails else "FINISHED")
    ran = {key: value for key, value in parent.data.tags.items() if key.startswith("stage.")}
    assert ran == ({"stage.first": "ran"} if second_fails else {"stage.first": "ran", "stage.second": "ran"})
    assert not (work / "mlflow-pending").exists() or not any((work / "mlflow-pending").iterdir())
