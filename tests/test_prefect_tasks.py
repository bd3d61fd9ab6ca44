"""Prefect pieces run in this process against the test Prefect server: the Dask detect executor,
and the download task's retries."""

from __future__ import annotations

import sys

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

import pipelines.flows as flows
from anime_avatar.data.executors import detect_results
from tests.conftest import params_with, section, synthetic_jobs


@pytest.fixture
def prefect_api(prefect_server):
    # Logs stay local: the API log worker would otherwise flush after the server stopped.
    with temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"],
                             PREFECT_HOME: prefect_server["PREFECT_HOME"],
                             PREFECT_LOGGING_TO_API_ENABLED: False}):  # fmt: skip
        yield


def test_dask_executor_gives_the_same_crops_as_local_processes(tmp_path, prefect_api):
    jobs = synthetic_jobs(tmp_path, seed=2, count=8)
    params = section("detect", detector="animeface", image_size=32, workers=2, dask_chunk=3)
    local = list(detect_results(jobs, params))
    on_dask = list(detect_results(jobs, params.model_copy(update={"executor": "dask"})))
    assert on_dask == local
    assert sum(len(r.crops) for r in local) >= 5  # faces found, not an empty comparison


def test_an_unreachable_dask_scheduler_is_one_line_naming_the_key(tmp_path, prefect_api, monkeypatch):
    """detect.dask_address naming no scheduler ended in about 290 lines of Prefect and distributed tracebacks."""
    import dask

    from anime_avatar.core.errors import UserError

    jobs = synthetic_jobs(tmp_path, seed=2, count=2)
    params = section("detect", detector="animeface", image_size=32, executor="dask", dask_address="tcp://127.0.0.1:1")
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), pytest.raises(UserError) as err:
        list(detect_results(jobs, params))
    assert str(err.value).startswith("detect.executor dask: detect.dask_address tcp://127.0.0.1:1 did not answer (")
    assert "\n" not in str(err.value)


def test_download_task_retries_with_doubling_delays(tmp_path, monkeypatch, prefect_api):
    attempts = tmp_path / "attempts"
    # Fails twice (a flaky download), then succeeds printing what DVC prints for a stage that ran.
    script = (
        f"import pathlib, sys; p = pathlib.Path({str(attempts)!r}); n = len(p.read_text()) if p.exists() else 0; "
        "p.write_text('x' * (n + 1)); print(\"Running stage 'download':\"); sys.exit(1 if n < 2 else 0)"
    )
    monkeypatch.setattr(flows, "dvc_command", lambda stage, force: [sys.executable, "-c", script])
    params = params_with({"pipeline": {"download_retries": 3, "retry_delay_s": 0.1}})
    task = flows.stage_task("download", params)
    assert task.retries == 3 and task.retry_delay_seconds == [0.1, 0.2, 0.4]
    assert flows.stage_task("train", params).retries == 0

    @flow
    def one_stage() -> flows.StageOutcome:
        return task("download", str(tmp_path))

    outcome = one_stage()
    assert attempts.read_text() == "xxx" and outcome.stage == "download" and outcome.ran

    attempts.unlink()
    no_retry = params_with({"pipeline": {"download_retries": 1, "retry_delay_s": 0}})

    @flow
    def failing() -> flows.StageOutcome:
        return flows.stage_task("download", no_retry)("download", str(tmp_path))

    with pytest.raises(flows.StageFailed, match="stage download failed"):
        failing()
    assert attempts.read_text() == "xx"


def test_a_failed_stage_is_reported_by_its_own_error_lines():
    lines = ["Running stage 'validate':", "> python -m stages.validate", "inspect faces: 100%",
             "08:17:06 ERROR anime_avatar: stage validate failed: 1 expectation(s) failed",
             "  expect_table_row_count_to_be_between on faces: observed 17",
             "ERROR: failed to reproduce 'validate': failed to run: python -m stages.validate"]  # fmt: skip
    assert flows.failure_excerpt(lines) == lines[3:5]
    assert flows.failure_excerpt([f"line {i}" for i in range(20)]) == [f"line {i}" for i in range(15, 20)]
    dvc_only = ["stage validate done in 8.9 s", "ERROR: failed to reproduce 'validate': output 'x' does not exist"]
    assert flows.failure_excerpt(dvc_only) == dvc_only


def test_stage_output_logs_a_running_stage_without_dvc_chatter_or_git_hints():
    logged: list[str] = []
    up_to_date = flows.StageOutput("train", logged.append)
    for line in ["Stage 'train' didn't change, skipping", "Data and pipelines are up to date.", ""]:
        up_to_date.add(line)
    assert not up_to_date.ran and logged == []  # the task then logs one line: "stage train was up to date"

    ran = flows.StageOutput("train", logged.append)
    dvc_output = ["'data/train.dvc' didn't change, skipping", "Running stage 'train':", "> python -m stages.train",
                  "INFO anime_avatar: stage train done in 3.0 s", "Updating lock file 'dvc.lock'", "",
                  "To track the changes with git, run:", "", "\tgit add dvc.lock metrics/train.json", "",
                  "To enable auto staging, run:", "", "\tdvc config core.autostage true"]  # fmt: skip
    for line in dvc_output:
        ran.add(line)
    assert ran.ran and ran.git_files == {"dvc.lock", "metrics/train.json"}
    assert logged == dvc_output[1:5]
    # A failure's excerpt finds the stage's ERROR line with or without a timestamp before it.
    lines = ["Running stage 'validate':", "ERROR anime_avatar: stage validate failed: 1 expectation(s) failed",
             "  expect_table_row_count_to_be_between on faces: observed 17"]  # fmt: skip
    assert flows.failure_excerpt(lines) == lines[1:]


def test_results_markdown_has_the_scores_table_and_the_sample_grid():
    result = flows.PipelineResult(
        stages=[flows.StageOutcome("train", True, 3.0), flows.StageOutcome("evaluate", False, 1.0)], run_id="abc"
    )
    metrics = {"fid": 192.234, "kid_mean": 0.1234, "kid_std": 0.0056, "n_samples": 1000, "n_real": 840}
    text = flows.results_markdown("anime-avatar-pipeline", result, metrics, b"\x89PNG fake")
    assert "| FID | 192.23 |" in text and "| KID | 0.1234 ± 0.0056 |" in text
    assert "| images (generated / real) | 1000 / 840 |" in text and "| MLflow training run | `abc` |" in text
    assert "| stages | train ran, evaluate up to date |" in text
    assert "![sample grid](data:image/png;base64,iVBORyBmYWtl)" in text
    bare = flows.results_markdown("anime-avatar-pipeline", flows.PipelineResult(), {}, None)
    assert "| FID | not evaluated |" in bare and "data:image" not in bare


def test_a_ctrl_c_during_a_stage_is_noted_and_a_second_one_interrupts():
    """The first Ctrl-C is the stage's to handle (the flow notes it); a stage that does not stop can still be left
    with a second one, as it could before."""
    import os
    import signal

    import pytest

    from pipelines.flows import ctrl_c_left_to_the_stage

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), ctrl_c_left_to_the_stage() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted == [signal.SIGINT]
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
