"""The one way a training or evaluation stage tracks its work in MLflow.

A training stage opens :func:`training_run`: the tracking store is checked in seconds (before anything is
trained), what earlier runs kept during an outage is sent and runs whose process vanished are marked KILLED,
and the run starts with the project's tags (stage, git commit, data versions, process, Prefect flow) and
params. Everything the stage logs then goes through a :class:`~anime_avatar.ops.run_journal.RunJournal`, so a
tracking store that goes away never stops the work, and the run ends FINISHED, KILLED (a signal, Ctrl-C) or
FAILED. The run's record (``models/*run.json``) is written when the run ends well.

An evaluation stage logs its scores to the run of the model it scored with :func:`log_to_recorded_run`.

A new method gets all of this by calling these two; no stage imports mlflow.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anime_avatar.artifacts.reports import prune_sample_grids
from anime_avatar.artifacts.run import RunRecord, read_run_file, write_run_file
from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.loops import TrainingInterrupted
from anime_avatar.ops.run_journal import RunJournal, journaled_run, recover
from anime_avatar.ops.tracking import flatten, flow_context, mlflow_client, stage_tags, tracking_uri
from anime_avatar.ops.tracking_store import artifacts_elsewhere, check_tracking_store, fail_fast_http, own_database

log = logging.getLogger(__name__)

# What ends a run as KILLED rather than FAILED: a signal turned into a checkpoint and a stop, or Ctrl-C.
KILLED = (TrainingInterrupted, KeyboardInterrupt)


# MLflow 3's UI opens an experiment of this kind on its Training runs table; without it, on the GenAI overview
# (traces, "Detect issues") or a dialog asking for the kind.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"


def tracking_ready(uri: str, experiment: str):  # -> mlflow
    """The tracking store checked in seconds, earlier runs' leftovers settled, the experiment set: the mlflow
    module, ready to start a run."""
    check_tracking_store(uri)
    fail_fast_http()  # a server that goes away later costs a refused connection, not minutes of retries
    mlflow = mlflow_client(uri)
    try:
        existed = mlflow.get_experiment_by_name(experiment) is not None
        found = mlflow.set_experiment(experiment)
    except Exception as err:  # e.g. an experiment of that name was deleted
        raise UserError(f"tracking.experiment {experiment!r}: {first_line(err)}") from None
    if existed and (problem := artifacts_elsewhere(uri, found.artifact_location)):
        # (a new experiment's folder is MLflow's choice, from the working folder: not judged)
        raise UserError(f"{problem}. Run the stages where the store was made, or move mlflow.db (and mlruns/) aside "
                        "to start a new store here")  # fmt: skip
    if EXPERIMENT_KIND not in found.tags:  # a kind the user chose in the UI stays
        mlflow.set_experiment_tag(EXPERIMENT_KIND, MODEL_DEVELOPMENT)
    recover(uri, [found.experiment_id])
    return mlflow


@dataclass
class TrainingRun:
    """A stage's open MLflow run: what it may log, all of it through the journal."""

    run_id: str
    experiment_id: str
    uri: str
    journal: RunJournal
    _mlflow: Any

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.journal.log_metrics(metrics, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.journal.set_tags(tags)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.journal.log_artifact(path, artifact_path=folder)

    def log_model(self, kind: str, path: Path, registered_name: str | None) -> None:
        """Log the model file ``path`` (a ``generator``, ``stylizer`` or ``translator``) as the run's MLflow
        model, registered as ``registered_name`` unless that is None."""
        self.journal.log_model(path, registered_name, kind)

    def log_input(self, images, folder: Path, version: str) -> None:
        """The training set as the run's dataset input (the run page's Datasets); never worth stopping for."""
        try:
            log_dataset(self._mlflow, images, folder, version)
        except Exception as err:
            log.warning("MLflow did not take the training-set input %s (%s): training goes on", folder, err)

    @property
    def record(self) -> RunRecord:
        return RunRecord(self.run_id, self.experiment_id, self.uri)


def keep_and_log_sample_sheets(run: TrainingRun, keep: list[int], folder: Path, artifact_folder: str,
                               logged: set[int]) -> None:  # fmt: skip
    """Prune ``folder`` to the sheets (sample grids) of the steps in ``keep``, and log to ``run`` the kept ones
    not in ``logged``: their folder persists, so a resumed run keeps and records those of the process it
    resumes."""
    for step, path in prune_sample_grids(keep, folder).items():
        if step not in logged:
            run.log_artifact(path, artifact_folder)


@contextlib.contextmanager
def training_run(
    stage: str,
    name: str,
    experiment: str,
    params: dict[str, Any],
    versions: dict[str, str],
    tags: dict[str, str] | None = None,
    run_file: Path | None = None,
) -> Iterator[TrainingRun]:
    """An MLflow run of ``stage`` named ``name``: tagged with the stage, source, data ``versions`` (folder ->
    version) and ``tags``, with ``params`` (a nested dict, flattened) logged; ``run_file`` gets its record when
    the stage's body ends well. A signal-stopped body leaves the run KILLED and tagged ``interrupted``."""
    uri = tracking_uri()
    mlflow = tracking_ready(uri, experiment)
    parent_run_id, flow_tags = flow_context()
    with journaled_run(mlflow, uri, KILLED, run_name=name, parent_run_id=parent_run_id) as (run, journal):
        tracked = TrainingRun(run.info.run_id, run.info.experiment_id, uri, journal, mlflow)
        journal.set_tags(stage_tags(stage, versions) | flow_tags | (tags or {}))
        journal.log_params(flatten(params))
        try:
            yield tracked
        except TrainingInterrupted:
            journal.set_tags({"interrupted": "true"})
            raise
        if run_file is not None:
            write_run_file(tracked.record, run_file)


def log_to_recorded_run(
    run_file: Path,
    stage: str,
    model: tuple[Path, str],
    metrics: dict[str, float],
    artifacts: tuple[Path, ...] = (),
    step: int = 0,
    tags: dict[str, str] | None = None,
) -> bool:
    """An evaluation's ``metrics`` and ``artifacts`` on the run recorded in ``run_file`` (written by ``stage``),
    on the tracking store that run was recorded on; kept for later if the store does not answer.
    ``model`` is the evaluated file and the run id it holds: the numbers and ``tags`` go to that run only. False
    (and a warning) when there is no record, or when the file was made by another run (copied in, or the shipped
    one)."""
    record = read_run_file(name=run_file, stage=stage)
    if record is None:
        log.warning("%s is missing: the evaluation was not logged to MLflow", run_file)
        return False
    path, made_by = model
    if made_by != record.run_id:
        log.warning("%s was made by %s, not by the run %s in %s: the evaluation was not logged to MLflow "
                    "(its reports are written)", path, f"MLflow run {made_by}" if made_by else "no tracked run",
                    record.run_id, run_file)  # fmt: skip
        return False
    fail_fast_http()
    if elsewhere := _run_files_elsewhere(record.tracking_uri, record.run_id):
        log.warning("the evaluation was not logged to MLflow (its reports are written): %s", elsewhere)
        return False
    journal = RunJournal(record.tracking_uri, record.run_id)
    journal.log_metrics(metrics, step=step)
    if tags:
        journal.set_tags(tags)
    for path in artifacts:
        journal.log_artifact(path)
    journal.finish()
    return True


def _run_files_elsewhere(uri: str, run_id: str) -> str | None:
    """:func:`artifacts_elsewhere` for the files of run ``run_id``; None too when the store cannot say now (the
    journal keeps the records for later)."""
    if own_database(uri) is None:
        return None
    from mlflow import MlflowClient

    try:
        location = MlflowClient(uri).get_run(run_id).info.artifact_uri
    except Exception:  # a store that does not answer, a run that is gone: the journal's business
        return None
    return artifacts_elsewhere(uri, location)


def log_dataset(mlflow, images, folder: Path, version: str) -> None:
    """A training set (an array, or anything with its ``shape`` and ``dtype``) as an MLflow dataset input: its
    folder, DVC version, schema. MLflow reads only the shape and type (the digest is DVC's), so it is handed a
    zero-sized-in-memory view of that shape, not the pixels."""
    import warnings

    import numpy as np

    images = np.broadcast_to(np.zeros((), images.dtype), images.shape)

    # md5:<hash>.dir for a folder, sha256:<hash> for a file; MLflow keeps at most 36 characters
    digest = version.split(":", 1)[-1].removesuffix(".dir")[:36]
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways" (all of them local)
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(images, source=str(folder.resolve()), name=folder.as_posix(), digest=digest)
    mlflow.log_input(dataset, context="training", tags={"dvc_version": version})
