"""End to end: `dvc repro stylize_eval` (download, detect, stylize_train, stylize_eval) on tiny params."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from anime_avatar.artifacts.stylizer import stylizer_methods
from anime_avatar.core.fsutil import read_csv
from anime_avatar.core.params import merge
from anime_avatar.style.model_file import load_stylizer
from tests.conftest import TINY_METHODS, free_port, run

METHODS = ["gatys-inception", "gatys-inception-softmax", "gatys-vgg19", "adain", "attention"]  # the default set
TINY = merge(TINY_METHODS, {"data": {"synthetic": {"count": 8, "size": 256}}, "stylize_eval": {"methods": METHODS}})

pytestmark = pytest.mark.slow


def offline() -> dict[str, str]:
    """Downloads fail at once (a proxy on a closed port), with or without internet: VGG-19 is then skipped."""
    proxy = f"http://127.0.0.1:{free_port()}"
    return {"https_proxy": proxy, "HTTPS_PROXY": proxy, "TORCH_HOME": "torch-home"}


def test_dvc_repro_trains_evaluates_and_registers_the_stylizer(project):
    work = project(TINY)
    run(["dvc", "repro", "stylize_eval"], work, env=offline())

    assert stylizer_methods(work / "models/stylizer.pt") == ["attention", "adain"]
    trained = load_stylizer(work / "models/stylizer.pt", "attention")
    assert trained.step == 3 and trained.image_size == 48 and trained.data_version.startswith("data/faces=md5:")
    assert (work / "models/stylizer_checkpoints/last.pt").is_file()
    train_metrics = json.loads((work / "metrics/stylize_train.json").read_text())
    assert train_metrics["steps"] == 3 and set(train_metrics["attention"]) >= {"total", "content", "style", "params"}
    assert [int(r["step"]) for r in read_csv(work / "plots/stylize_losses.csv")] == [1, 2, 3]

    metrics = json.loads((work / "reports/stylize.json").read_text())
    assert json.loads((work / "metrics/stylize.json").read_text()) == {
        net: {key: metrics[net][key] for key in ("style_loss", "structure", "colour")} for net in ("attention", "adain")
    }  # the headline `dvc exp show` has columns for; every number is in the report
    for method in ("gatys-inception", "gatys-inception-softmax", "adain", "attention", "unchanged"):
        entry = metrics[method]
        assert entry["pairs"] == 2 and {"content_loss", "style_loss", "structure", "colour"} <= set(entry), method
        assert method == "unchanged" or entry["seconds"] > 0
    assert metrics["unchanged"]["content_loss"] == 0.0 and metrics["unchanged"]["structure"] == pytest.approx(1.0)
    assert "vgg19-dcbb9e9d.pth" in metrics["gatys-vgg19"]["skipped"]
    assert "matched_points" in metrics["attention_vs_adain"]
    assert metrics["attention"]["seconds_cached_style"] > 0 and metrics["adain"]["seconds_cached_style"] > 0
    assert metrics["speedup_attention_vs_gatys-inception-softmax"] > 0
    assert metrics["speedup_attention_cached_style_vs_gatys-inception"] > 0
    assert len(read_csv(work / "plots/stylize_tradeoff.csv")) == 4  # two nets at two strengths
    sheet = Image.open(work / "reports/stylize.png")
    assert sheet.size == ((2 + 4) * 192, 16 + 2 * 192)  # content | style | four methods, one row per pair

    record = json.loads((work / "models/stylizer_run.json").read_text())
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    (version,) = client.search_model_versions("name='anime-avatar-stylizer'")
    assert version.run_id == record["run_id"] == trained.run_id
    logged = client.get_run(record["run_id"])
    assert logged.data.tags["stage"] == "stylize_train" and "eval.attention.style_loss" in logged.data.metrics
    (faces,) = logged.inputs.dataset_inputs  # the content faces it trained on (until 2026-12-07: none)
    assert faces.dataset.name == "data/faces" and {t.key: t.value for t in faces.tags}["dvc_version"].startswith("md5:")
    assert "stylize.png" in {a.path for a in client.list_artifacts(record["run_id"])}

    assert "Data and pipelines are up to date" in run(["dvc", "repro", "stylize_eval"], work, env=offline()).stdout
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["stylize"]["threads"] = 2  # operational: nothing to redo
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "up to date" in run(["dvc", "status", "stylize_train"], work).stdout
    params["gatys"]["steps"] = 3  # only the evaluation depends on it
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(["dvc", "status", "stylize_eval"], work).stdout
    assert "stylize_eval:" in status and "gatys.steps" in status and "stylize_train:" not in status


def test_bad_stylize_params_stop_the_stage_with_one_message(project):
    work = project({"stylize": {"methods": ["attention", "cyclegan"]}})
    proc = run(["python", "-m", "stages.stylize_train"], work, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "stylize.methods.1: Input should be 'attention' or 'adain'" in proc.stderr


def test_a_missing_style_set_names_its_key(project):
    work = project({"stylize": {"style_path": "no/such/folder"}})
    (work / "data/faces").mkdir(parents=True)
    (work / "data/faces/faces.json").write_text(json.dumps({"count": 0, "detector": "none", "image_size": 32}))
    (work / "data/faces/faces.csv").write_text("face_id\n")
    proc = run(["python", "-m", "stages.stylize_train"], work, check=False)
    assert proc.returncode == 1 and "stylize.style_path: no/such/folder does not exist" in proc.stderr


def test_stylize_eval_without_a_trained_stylizer_says_which_stage_to_run(project):
    work = project({"stylize_eval": {"methods": ["attention"]}})
    proc = run(["python", "-m", "stages.stylize_eval"], work, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "models/stylizer.pt: no such stylizer file (run the stylize_train stage first" in proc.stderr


def stylize_project(project, steps: int):
    """A project with 6 tiny face crops in data/faces and 3 style images, the stylizer logging every step."""
    import numpy as np

    work = project(merge(TINY_METHODS, {"stylize": {"steps": steps, "style_path": "styles", "checkpoint_every": 1,
                                                    "image_size": 48}}))  # fmt: skip
    rng = np.random.default_rng(0)
    faces, styles = work / "data/faces", work / "styles"
    faces.mkdir(parents=True)
    styles.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(faces / f"f{i}.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(styles / f"s{i}.png")
    (faces / "faces.json").write_text(json.dumps({"count": 6, "detector": "none", "image_size": 32}))
    (faces / "faces.csv").write_text("face_id\n" + "".join(f"f{i}\n" for i in range(6)))
    return work


def test_a_stylizer_run_killed_outright_is_marked_killed_and_a_signalled_one_ends_killed(project):
    """The stylizer tracks through the same seam as the GAN: outage journal, process tags, KILLED marking."""
    import signal
    import subprocess
    import time

    from mlflow import MlflowClient

    from tests.conftest import venv_env

    work = stylize_project(project, steps=10_000)
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")

    def running_run_with_losses(proc: subprocess.Popen, other_than: str = "") -> str:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            experiment = client.get_experiment_by_name("anime-avatar")
            runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") if experiment else []
            for run_ in runs:
                if run_.info.run_id != other_than and client.get_metric_history(run_.info.run_id, "attention_total"):
                    return run_.info.run_id
            time.sleep(0.5)
        raise AssertionError("no stylizer run logged a loss within 300 s")

    cmd = ["python", "-m", "stages.stylize_train"]
    stage = subprocess.Popen(cmd, cwd=work, env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = running_run_with_losses(stage)
    stage.kill()  # SIGKILL: nothing gets to tell MLflow
    stage.wait()
    assert client.get_run(killed).info.status == "RUNNING"

    stage = subprocess.Popen(
        cmd, cwd=work, env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    # Once the second run logs, the first has been settled: a run starts after the store's leftovers are.
    signalled = running_run_with_losses(stage, other_than=killed)
    assert client.get_run(killed).info.status == "KILLED"
    assert "ended without closing the run" in client.get_run(killed).data.tags["killed.reason"]
    stage.send_signal(signal.SIGTERM)  # checkpoint after this step, then stop
    _, stderr = stage.communicate(timeout=120)
    assert stage.returncode == 1 and "stopped by signal" in stderr and "Traceback" not in stderr
    ended = client.get_run(signalled)
    assert ended.info.status == "KILLED" and ended.data.tags["interrupted"] == "true"
    assert ended.data.tags["stage"] == "stylize_train" and ended.data.tags["process.pid"] == str(stage.pid)
