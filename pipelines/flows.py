"""Prefect flows over the DVC pipeline.

- ``anime-avatar-pipeline``: one task per DVC stage, each ``dvc repro --single-item <stage>``,
  so DVC still decides what is stale; the download task retries with backoff.
- ``anime-avatar-retrain``: refresh the data (the download stage forced), run the pipeline,
  and move the ``champion`` alias to the new generator only if its FID is lower.

Both hold the workspace lock, open one MLflow parent run per flow run that has work to do (the
training run is nested under it and tagged with the Prefect flow run id; a no-op run opens none),
stream the output of each stage that runs into the task's log (an up-to-date stage is one line),
and publish a results artifact (FID/KID table and sample grid) on the flow run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from anime_avatar.artifacts.reports import SAMPLES_PNG, read_eval_metrics, read_scores
from anime_avatar.artifacts.run import read_run_file
from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.params import Params, load_params
from anime_avatar.core.stage import NO_LOG_TIME_ENV, OUTPUTS_RESTORED_ENV
from anime_avatar.ops.lock import workspace_lock
from anime_avatar.ops.run_journal import RunJournal, journaled_run
from anime_avatar.ops.stage_run import tracking_ready
from anime_avatar.ops.tracking import FLOW_RUN_ENV, PARENT_RUN_ENV, tracking_uri
from anime_avatar.ops.tracking_store import check_tracking_store, fail_fast_http
from pipelines.recovery import (
    KeptOutputs,
    Restored,
    check_retrain_params,
    dvc_executable,
    kept_outputs,
    preflight,
)

log = logging.getLogger(__name__)


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs the exception a flow or task run raised with its traceback: for a user's error (a locked
    workspace, a failed stage) that is 20-70 lines around the one that matters. The traceback is dropped; the
    message stays, and the command ends with it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_errors() -> None:
    """Install the filter on Prefect's flow- and task-run loggers (once; called as a flow starts, after Prefect
    has configured its logging)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _UserErrorsWithoutTraceback) for f in logger.filters):
            logger.addFilter(_UserErrorsWithoutTraceback())


class StageFailed(UserError):
    """``dvc repro`` of one stage exited non-zero; ``ran``: whether DVC got as far as running the stage (and so
    removing its outputs) or stopped before (another ``dvc repro`` holding the workspace, a bad dvc.yaml)."""

    ran: bool = True


class StageInterrupted(StageFailed):
    """A stage stopped by Ctrl-C: not retried, and the flow stops (after putting the stage's outputs back)."""


def _retry_unless_interrupted(task, task_run, state) -> bool:  # Prefect's retry_condition_fn
    return not isinstance(getattr(state, "data", None), StageInterrupted)


@contextmanager
def ctrl_c_left_to_the_stage() -> Iterator[list[int]]:
    """While a stage runs, a Ctrl-C (sent by the terminal to the whole process group, the stage too) is the
    stage's to handle: it saves its checkpoint and exits, and the flow notes the signal (the list it yields)
    instead of a KeyboardInterrupt tearing through Prefect's engine mid-task (a traceback, no outputs put back).
    A second Ctrl-C is a KeyboardInterrupt as before: a stage that does not stop can still be left."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # (signals can be handled in the main one only)
        yield got
        return

    def note(signum: int, frame: object) -> None:
        if got:
            raise KeyboardInterrupt
        got.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class StageOutcome:
    stage: str
    ran: bool  # False: DVC found it up to date
    seconds: float
    git_files: list[str] = field(default_factory=list)  # what DVC asked to `git add` after it


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
    """Run one stage through DVC, its output line by line into this task's log (one line when it is up to date)."""
    logger = get_run_logger()
    cmd = dvc_command(stage, force)
    # Progress bars print a line at most every 30 s instead of redrawing in place; Prefect stamps each line,
    # so the stage's own log lines carry no time.
    # MLflow's loggers then go through the stage's format instead of stamping their own date and time.
    quiet = {"TQDM_MININTERVAL": "30", "PYTHONUNBUFFERED": "1", NO_LOG_TIME_ENV: "1",
             "MLFLOW_CONFIGURE_LOGGING": "false"}  # fmt: skip
    full_env = {**os.environ, **quiet, **(env or {})}
    started = time.perf_counter()
    logger.debug("$ dvc %s", " ".join(cmd[1:]))
    proc = subprocess.Popen(
        cmd, cwd=workspace, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    stream = StageOutput(stage, logger.info)
    assert proc.stdout is not None
    try:
        with ctrl_c_left_to_the_stage() as interrupted:
            for raw in proc.stdout:
                for line in raw.replace("\r", "\n").splitlines():
                    stream.add(line)
            code = proc.wait()
    except KeyboardInterrupt:  # a second Ctrl-C: the user leaves, whatever the stage does (as before)
        raise
    except BaseException:  # the flow stopped under the stage: SIGTERM, a cancellation from the UI
        stop_stage(proc)
        raise
    seconds = time.perf_counter() - started
    if code != 0:  # (a stage that finished all the same after a Ctrl-C is done: its outputs are in dvc.lock)
        excerpt = "\n".join(failure_excerpt(stream.lines))
        error, what = (
            (StageInterrupted, "interrupted (Ctrl-C)")
            if interrupted
            else (StageFailed, f"failed (dvc repro exit {code})")
        )
        failure = error(f"stage {stage} {what} after {seconds:.0f} s:\n{excerpt}")
        failure.ran = stream.ran
        raise failure
    logger.info("stage %s %s in %.1f s", stage, "ran" if stream.ran else "was up to date", seconds)
    return StageOutcome(stage, stream.ran, round(seconds, 1), sorted(stream.git_files))


STOP_WAIT_S = 120  # how long a stage told to stop may take to save its checkpoint


def stop_stage(proc: subprocess.Popen) -> None:
    """Stop a stage whose flow is stopping, as a Ctrl-C would (it saves its checkpoint and exits), and wait for
    it: left running, it went on writing its outputs after the flow had gone (until its pipe broke), and the
    flow could not put the previous ones back. Killed if it has not stopped within STOP_WAIT_S."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.kill()
        proc.wait()


# DVC's advice after each stage that changed dvc.lock; the flow gives it once, at the end.
_GIT_HINT_LINES = ("To track the changes with git, run:", "To enable auto staging, run:",
                   "dvc config core.autostage true")  # fmt: skip


class StageOutput:
    """The output of one ``dvc repro``: kept whole (for a failure's excerpt), logged from the moment the stage
    starts running (DVC's "didn't change, skipping" chatter is not), without DVC's per-stage git hint."""

    def __init__(self, stage: str, emit: Callable[[str], object]) -> None:
        self.stage, self.emit = stage, emit
        self.lines: list[str] = []
        self.ran = False
        self.git_files: set[str] = set()

    def add(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        self.lines.append(line)
        if text.startswith("git add "):
            self.git_files.update(text.removeprefix("git add ").split())
            return
        if text in _GIT_HINT_LINES:
            return
        if not self.ran and f"Running stage '{self.stage}'" in line:
            self.ran = True
        if self.ran:
            self.emit(line)


def failure_excerpt(lines: list[str], limit: int = 8) -> list[str]:
    """The stage's own error (our stages log one ERROR line with its details below), else the last lines
    (with DVC's own error, e.g. a declared output the stage did not write)."""
    start = next((i for i, line in enumerate(lines) if " ERROR " in f" {line}"), None)
    if start is None:
        return lines[max(0, len(lines) - 5) :]
    return [line for line in lines[start : start + limit] if not line.startswith("ERROR: failed to reproduce")]


def stage_task(stage: str, params: Params):
    """The task of one stage: the download task retries, doubling its delay each time."""
    if stage != "download" or not params.pipeline.download_retries:
        return repro_stage.with_options(name=stage)
    p = params.pipeline
    delays = [p.retry_delay_s * 2**i for i in range(p.download_retries)]
    return repro_stage.with_options(name=stage, retries=p.download_retries, retry_delay_seconds=delays,
                                    retry_condition_fn=_retry_unless_interrupted)  # fmt: skip


def pipeline_stages(root: Path) -> list[str]:
    """The stages of dvc.yaml, in its order (which is the order of the chain)."""
    path = root / "dvc.yaml"
    if not path.is_file():
        raise UserError(f"{root} holds no dvc.yaml: run the flows from the project's root")
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))


def restore_after(failure: StageFailed, kept: KeptOutputs) -> Restored:
    """Put back the outputs of a failed stage, if DVC ran it: when it stopped before (another `dvc repro` holding
    the workspace), the outputs are that run's, which a restore would replace with the old ones mid-write."""
    return kept.restore() if failure.ran else Restored()


def run_keeping_outputs(task, stage: str, root: Path, force: bool, env: dict[str, str]) -> StageOutcome:
    """Run the stage's task; if it fails, put back the previous outputs DVC removed, and say so."""
    with kept_outputs(root, stage) as kept:
        try:
            return task(stage, str(root), force=force, env={**env, OUTPUTS_RESTORED_ENV: "1"})
        except StageFailed as err:
            done = restore_after(err, kept)
            logger = get_run_logger()
            note = ""
            if done.paths:
                logger.warning("restored the previous outputs of stage %s: %s", stage, ", ".join(done.paths))
                note = f"\nthe previous outputs of stage {stage} were restored: {', '.join(done.paths)}"
            if done.set_aside:
                where = done.failed_dir.relative_to(root) if done.failed_dir else ""
                logger.warning("what the failed run wrote is in %s: %s", where, ", ".join(done.set_aside))
                # (the stage's message above names them where they were: they are here now)
                note += f"\nwhat the failed run wrote is now in {where}: {', '.join(done.set_aside)}"
            for problem in done.problems:
                logger.error("could not restore an output of stage %s: %s", stage, problem)
                note += f"\ncould not restore: {problem}"
            raise type(err)(f"{err}{note}") from None  # an interrupted stage stays StageInterrupted
        except KeyboardInterrupt:
            raise
        except BaseException:  # the flow itself stopped (SIGTERM, cancelled): the stage has been stopped first
            done = kept.restore()
            if done.paths:
                log.warning("the flow stopped: restored the previous outputs of stage %s: %s", stage,
                            ", ".join(done.paths))  # fmt: skip
            raise


def _flow_run_id() -> str:
    return str(flow_run.get_id() or "")


def stale_stages(root: Path) -> list[str] | None:
    """The stages ``dvc status`` finds out of date (None when it cannot tell: then assume work to do)."""
    dvc = dvc_command("status", force=False)[0]
    proc = subprocess.run([dvc, "status", "--json"], cwd=root, capture_output=True, text=True)
    try:
        status = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        return None
    return sorted(status) if isinstance(status, dict) else None


@dataclass
class ParentRun:
    """The flow's MLflow run: its id, and the journal everything it logs goes through, so that a tracking store
    that dies mid-flow neither hides a stage's failure nor fails a flow whose stages succeeded."""

    run_id: str
    journal: RunJournal


@contextmanager
def parent_run(
    root: Path, params: Params, flow_name: str, flow_run_id: str, open_one: bool
) -> Iterator[ParentRun | None]:
    """The MLflow run the flow's stage runs nest under, in the training experiment; none when ``open_one`` is
    False (nothing to run), so that no-op flow runs leave the experiment's run list alone. It ends FINISHED,
    FAILED or KILLED (Ctrl-C) like a stage's run, through its journal."""
    if not open_one:
        yield None
        return
    uri = tracking_uri(root)
    tags = {"stage": "pipeline", "flow": flow_name, "prefect.flow_run_id": flow_run_id}
    name = f"{flow_name} {flow_run.get_name() or ''}".strip()
    killed = (KeyboardInterrupt, StageInterrupted)  # Ctrl-C, in the flow or in a stage
    # In the workspace, as its stages: MLflow puts a new experiment's files under the working folder, and the
    # records kept during an outage are in the working folder's mlflow-pending/ (a flow served for another
    # workspace made the experiment outside it, and its stages then refused the store as copied).
    with contextlib.chdir(root):
        mlflow = tracking_ready(uri, params.tracking.experiment)  # earlier runs' kept records sent, killed marked
        with journaled_run(mlflow, uri, killed, run_name=name, tags=tags) as (run, journal):
            yield ParentRun(run.info.run_id, journal)


TagsOfResult = Callable[[PipelineResult], dict[str, str]]


def run_pipeline(
    root: Path, flow_name: str, force_download: bool, decide: TagsOfResult | None = None
) -> PipelineResult:
    """The body of both flows: the stages under one MLflow parent run (when any has work to do), then
    ``decide`` (the retrain's champion decision: its tags go on the parent run), then the results artifact.
    The caller holds the lock."""
    params = load_params(root / "params.yaml")
    preflight(root, params, force_download)  # before DVC removes any output
    fail_fast_http()
    flow_run_id = _flow_run_id()
    result = PipelineResult()
    work_to_do = force_download or stale_stages(root) != []
    with parent_run(root, params, flow_name, flow_run_id, open_one=work_to_do) as parent:
        result.parent_run_id = parent.run_id if parent else None
        env = {PARENT_RUN_ENV: parent.run_id, FLOW_RUN_ENV: flow_run_id} if parent else {FLOW_RUN_ENV: flow_run_id}
        try:
            for stage in pipeline_stages(root):
                task = stage_task(stage, params)
                force = force_download and stage == "download"
                result.stages.append(run_keeping_outputs(task, stage, root, force, env))
        finally:
            if parent:
                parent.journal.set_tags({f"stage.{s.stage}": "ran" if s.ran else "up to date" for s in result.stages})
        record = read_run_file(root)
        result.run_id = record.run_id if record else None
        result.scores = read_scores(root)
        tags = {"train_run_id": result.run_id} if result.run_id else {}
        if decide:
            tags |= decide(result)
        if parent:
            if result.scores:
                parent.journal.log_metrics(result.scores)
            if tags:
                parent.journal.set_tags(tags)
    publish_results(root, flow_name, result)
    if git_files := sorted({f for s in result.stages for f in s.git_files}):
        get_run_logger().info("to record this version in git: git add %s", " ".join(git_files))
    return result


RESULTS_ARTIFACT = "anime-avatar-results"  # the key: the Artifacts page keeps one version per flow run


def results_markdown(flow_name: str, result: PipelineResult, metrics: dict, grid_png: bytes | None) -> str:
    """The flow run's report: the FID/KID table, what each stage did, and the sample grid (embedded)."""
    rows = [("FID", f"{metrics['fid']:.2f}" if "fid" in metrics else "not evaluated")]
    if "kid_mean" in metrics:
        rows.append(("KID", f"{metrics['kid_mean']:.4f} ± {metrics.get('kid_std', 0.0):.4f}"))
    if "n_samples" in metrics:
        rows.append(("images (generated / real)", f"{metrics['n_samples']} / {metrics.get('n_real', '?')}"))
    rows.append(("MLflow training run", f"`{result.run_id}`" if result.run_id else "none"))
    rows.append(("stages", ", ".join(f"{s.stage} {'ran' if s.ran else 'up to date'}" for s in result.stages)))
    lines = [f"## {flow_name}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    if grid_png:
        encoded = base64.b64encode(grid_png).decode("ascii")
        lines += ["", "### Samples (fixed seeds)", "", f"![sample grid](data:image/png;base64,{encoded})"]
    return "\n".join(lines) + "\n"


def publish_results(root: Path, flow_name: str, result: PipelineResult) -> None:
    """A Prefect markdown artifact on the flow run: where Prefect users look for a run's results."""
    from prefect.artifacts import create_markdown_artifact

    grid = root / SAMPLES_PNG
    png = grid.read_bytes() if grid.is_file() else None
    markdown = results_markdown(flow_name, result, read_eval_metrics(root), png)
    fid = f"FID {result.scores['fid']:.2f}" if "fid" in result.scores else "no FID yet"
    create_markdown_artifact(markdown, key=RESULTS_ARTIFACT, description=f"{flow_name}: {fid} and the sample grid")


@flow(name="anime-avatar-pipeline", log_prints=True)
def pipeline_flow(workspace: str = ".") -> dict:
    """Every DVC stage in order (DVC skips what is up to date), under the workspace lock."""
    quiet_user_errors()
    root = Path(workspace).resolve()
    with workspace_lock(root, f"flow anime-avatar-pipeline {_flow_run_id()}"):
        result = run_pipeline(root, "anime-avatar-pipeline", force_download=False)
    get_run_logger().info("pipeline done: %s", summary(result))
    return {**asdict(result), "summary": summary(result)}


@flow(name="anime-avatar-retrain", log_prints=True)
def retrain_flow(workspace: str = ".", refresh: bool = True) -> dict:
    """Refresh the data, run the pipeline, and promote the new generator if its FID beats the champion's
    (decided inside the flow's MLflow run, which then carries the decision's tags)."""
    quiet_user_errors()
    root = Path(workspace).resolve()
    logger = get_run_logger()
    with workspace_lock(root, f"flow anime-avatar-retrain {_flow_run_id()}"):
        params = load_params(root / "params.yaml")
        check_retrain_params(params)  # again: a scheduled run reads params.yaml as it is then
        name = params.tracking.model_name
        # The store first, in a second, not after MLflow's minutes of retries on the champion lookup below.
        check_tracking_store(tracking_uri(root))
        fail_fast_http()
        # The champion before this run: the evaluate stage names one when there is none yet, and the decision
        # below is against the model that held the alias before.
        current = champion_if_store(root, name)
        decisions = []  # the one decision, for the summary after the lock is released

        def decide(result: PipelineResult) -> dict[str, str]:
            if not result.run_id:
                raise UserError("the pipeline left no models/run.json: nothing to compare")
            decisions.append(champion_decision(tracking_uri(root), name, result.run_id, current))
            return decisions[-1].tags()

        result = run_pipeline(root, "anime-avatar-retrain", force_download=refresh, decide=decide)
        [decision] = decisions
    moved = f"moved to version {decision.winner.version}" if decision.promote else "kept"
    logger.info("champion %s: %s", moved, decision.reason)
    return {**asdict(result), "summary": summary(result), "decision": decision.tags()}


def champion_decision(uri: str, model_name: str, run_id: str, current):  # -> registry.Decision
    """Move the champion alias to ``run_id``'s model version if it beats ``current`` (with none, to the best
    evaluated version); a store that went away during the stages is one line saying how to decide later."""
    from mlflow import MlflowClient

    from anime_avatar.ops import registry

    client = MlflowClient(uri)
    try:
        new = registry.version_of_run(client, model_name, run_id)
        measured_alike = current is not None and new.comparable(current)
        best = None if measured_alike else registry.best_evaluated(client, model_name, like=new)
        decision = registry.decide(new, current, best)
        registry.apply(client, model_name, decision)
    except UserError:
        raise
    except Exception as err:  # MLflow raises many types (HTTP, SQLAlchemy, its own): all mean the same here
        raise UserError(
            f"the champion of {model_name} was not decided: MLflow at {uri} does not answer ({first_line(err)}); "
            "once it does, `anime-avatar retrain --no-refresh` decides it without retraining"
        ) from None
    return decision


def champion_if_store(root: Path, model_name: str):  # -> registry.Candidate | None
    """The champion of ``model_name`` in the workspace's tracking store; None when the store does not exist
    yet (the first run makes it) or has no champion."""
    from mlflow import MlflowClient

    from anime_avatar.ops import registry
    from anime_avatar.ops.tracking import missing_tracking_db

    uri = tracking_uri(root)
    return None if missing_tracking_db(uri) else registry.champion(MlflowClient(uri), model_name)


def summary(result: PipelineResult) -> str:
    stages = ", ".join(f"{s.stage} {'ran' if s.ran else 'up to date'}" for s in result.stages)
    fid = f"; FID {result.scores['fid']:.2f}" if "fid" in result.scores else ""
    return f"{stages}{fid}"
