"""Prefect flows over the DVC pipeline.

- ``anime-avatar-pipeline``: one task per DVC stage, each ``dvc repro --single-item <stage>``,
  so DVC still decides what is stale; the download task retries with backoff.
- ``anime-avatar-retrain``: refresh the data (the download stage forced), run the pipeline,
  and move the ``champion`` alias to the new generator only if its FID is lower.

Both hold the workspace lock, open one MLflow parent run per flow run (the training run is
nested under it and tagged with the Prefect flow run id), and stream each stage's output
into the task's log.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from anime_avatar.artifacts.reports import read_scores
from anime_avatar.artifacts.run import read_run_file
from anime_avatar.core.errors import UserError
from anime_avatar.core.params import Params, load_params
from anime_avatar.ops.lock import workspace_lock
from anime_avatar.ops.run_journal import recover
from anime_avatar.ops.stale_runs import process_tags
from anime_avatar.ops.tracking import FLOW_RUN_ENV, PARENT_RUN_ENV, tracking_uri
from anime_avatar.ops.tracking_store import fail_fast_http
from pipelines.recovery import dvc_executable, kept_outputs, preflight


class StageFailed(UserError):
    """``dvc repro`` of one stage exited non-zero."""


@dataclass
class StageOutcome:
    stage: str
    ran: bool  # False: DVC found it up to date
    seconds: float


@dataclass
class PipelineResult:
    stages: list[StageOutcome] = field(default_factory=list)
    run_id: str | None = None  # the training run behind models/generator.pt
    parent_run_id: str | None = None
    scores: dict[str, float] = field(default_factory=dict)


def dvc_command(stage: str, force: bool) -> list[str]:
    return [dvc_executable(), "repro", "--single-item", stage, *(["--force"] if force else [])]


@task(name="dvc-repro", cache_policy=NO_CACHE)
def repro_stage(stage: str, workspace: str, force: bool = False, env: dict[str, str] | None = None) -> StageOutcome:
    """Run one stage through DVC, its output line by line into this task's log."""
    logger = get_run_logger()
    cmd = dvc_command(stage, force)
    # Progress bars print a line at most every 30 s instead of redrawing in place.
    full_env = {**os.environ, "TQDM_MININTERVAL": "30", "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.perf_counter()
    logger.info("$ dvc %s", " ".join(cmd[1:]))
    proc = subprocess.Popen(
        cmd, cwd=workspace, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        for line in raw.replace("\r", "\n").splitlines():
            if line.strip():
                lines.append(line)
                logger.info("%s", line)
    code = proc.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        excerpt = "\n".join(failure_excerpt(lines))
        raise StageFailed(f"stage {stage} failed (dvc repro exit {code}) after {seconds:.0f} s:\n{excerpt}")
    ran = any(f"Running stage '{stage}'" in line for line in lines)
    logger.info("stage %s %s in %.1f s", stage, "ran" if ran else "was up to date", seconds)
    return StageOutcome(stage, ran, round(seconds, 1))


def failure_excerpt(lines: list[str], limit: int = 8) -> list[str]:
    """The stage's own error (our stages log one ERROR line with its details below), else the last lines
    (with DVC's own error, e.g. a declared output the stage did not write)."""
    start = next((i for i, line in enumerate(lines) if " ERROR " in line), None)
    if start is None:
        return lines[max(0, len(lines) - 5) :]
    return [line for line in lines[start : start + limit] if not line.startswith("ERROR: failed to reproduce")]


def stage_task(stage: str, params: Params):
    """The task of one stage: the download task retries, doubling its delay each time."""
    if stage != "download" or not params.pipeline.download_retries:
        return repro_stage.with_options(name=stage)
    p = params.pipeline
    delays = [p.retry_delay_s * 2**i for i in range(p.download_retries)]
    return repro_stage.with_options(name=stage, retries=p.download_retries, retry_delay_seconds=delays)


def pipeline_stages(root: Path) -> list[str]:
    """The stages of dvc.yaml, in its order (which is the order of the chain)."""
    path = root / "dvc.yaml"
    if not path.is_file():
        raise UserError(f"{root} holds no dvc.yaml: run the flows from the project's root")
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))


def run_keeping_outputs(task, stage: str, root: Path, force: bool, env: dict[str, str]) -> StageOutcome:
    """Run the stage's task; if it fails, put back the previous outputs DVC removed, and say so."""
    with kept_outputs(root, stage) as kept:
        try:
            return task(stage, str(root), force=force, env=env)
        except StageFailed as err:
            done = kept.restore()
            logger = get_run_logger()
            note = ""
            if done.paths:
                logger.warning("restored the previous outputs of stage %s: %s", stage, ", ".join(done.paths))
                note = f"\nthe previous outputs of stage {stage} were restored: {', '.join(done.paths)}"
            if done.set_aside:
                where = done.failed_dir.relative_to(root) if done.failed_dir else ""
                logger.warning("what the failed run wrote is in %s: %s", where, ", ".join(done.set_aside))
                note += f"\nwhat the failed run wrote is in {where}: {', '.join(done.set_aside)}"
            for problem in done.problems:
                logger.error("could not restore an output of stage %s: %s", stage, problem)
                note += f"\ncould not restore: {problem}"
            raise StageFailed(f"{err}{note}") from None


def _flow_run_id() -> str:
    return str(flow_run.get_id() or "")


def run_pipeline(root: Path, flow_name: str, force_download: bool) -> PipelineResult:
    """The body of both flows: the stages under one MLflow parent run. The caller holds the lock."""
    import mlflow

    params = load_params(root / "params.yaml")
    preflight(root, params, force_download)  # before DVC removes any output
    fail_fast_http()
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment = mlflow.set_experiment(params.tracking.experiment)
    recover(tracking_uri(root), [experiment.experiment_id])
    flow_run_id = _flow_run_id()
    result = PipelineResult()
    tags = {"stage": "pipeline", "flow": flow_name, "prefect.flow_run_id": flow_run_id, **process_tags()}
    with mlflow.start_run(run_name=f"{flow_name} {flow_run.get_name() or ''}".strip(), tags=tags) as parent:
        result.parent_run_id = parent.info.run_id
        env = {PARENT_RUN_ENV: parent.info.run_id, FLOW_RUN_ENV: flow_run_id}
        try:
            for stage in pipeline_stages(root):
                task = stage_task(stage, params)
                force = force_download and stage == "download"
                result.stages.append(run_keeping_outputs(task, stage, root, force, env))
        finally:
            mlflow.set_tags({f"stage.{s.stage}": "ran" if s.ran else "up to date" for s in result.stages})
        record = read_run_file(root)
        result.run_id = record.run_id if record else None
        result.scores = read_scores(root)
        if result.scores:
            mlflow.log_metrics(result.scores)
        if result.run_id:
            mlflow.set_tag("train_run_id", result.run_id)
    return result


@flow(name="anime-avatar-pipeline", log_prints=True)
def pipeline_flow(workspace: str = ".") -> dict:
    """Every DVC stage in order (DVC skips what is up to date), under the workspace lock."""
    root = Path(workspace).resolve()
    with workspace_lock(root, f"flow anime-avatar-pipeline {_flow_run_id()}"):
        result = run_pipeline(root, "anime-avatar-pipeline", force_download=False)
    get_run_logger().info("pipeline done: %s", summary(result))
    return {**asdict(result), "summary": summary(result)}


@flow(name="anime-avatar-retrain", log_prints=True)
def retrain_flow(workspace: str = ".", refresh: bool = True) -> dict:
    """Refresh the data, run the pipeline, and promote the new generator if its FID beats the champion's."""
    from mlflow import MlflowClient

    from anime_avatar.ops import registry

    root = Path(workspace).resolve()
    logger = get_run_logger()
    with workspace_lock(root, f"flow anime-avatar-retrain {_flow_run_id()}"):
        result = run_pipeline(root, "anime-avatar-retrain", force_download=refresh)
        if not result.run_id:
            raise UserError("the pipeline left no models/run.json: nothing to compare")
        params = load_params(root / "params.yaml")
        client = MlflowClient(tracking_uri(root))
        name = params.tracking.model_name
        decision = registry.decide(
            registry.version_of_run(client, name, result.run_id), registry.champion(client, name)
        )
        registry.apply(client, name, decision)
        for key, value in decision.tags().items():
            client.set_tag(result.parent_run_id, key, value)
    logger.info(
        "champion %s: %s", "moved to version " + decision.new.version if decision.promote else "kept", decision.reason
    )
    return {**asdict(result), "summary": summary(result), "decision": decision.tags()}


def summary(result: PipelineResult) -> str:
    stages = ", ".join(f"{s.stage} {'ran' if s.ran else 'up to date'}" for s in result.stages)
    fid = f"; FID {result.scores['fid']:.2f}" if "fid" in result.scores else ""
    return f"{stages}{fid}"
