"""Logging to an MLflow run without ever stopping the work: what the tracking store cannot take is kept.

A stage logs through a :class:`RunJournal`. While the store answers, each record goes out at once.
When one fails (the server died, the network went away, the database is locked for good), the
journal warns once and keeps that record and every later one, in order; it tries again after 5 s,
then 10, 20, ... (at most every 60 s, after a cheap probe of an HTTP server), and sends all it kept
as soon as the store answers. What is still unsent when the run ends goes to
``mlflow-pending/<run_id>/`` (the records as JSON lines, copies of their files), and the next train
stage, flow or ``anime-avatar runs`` sends it (:func:`recover`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.fsutil import atomic_write_json, atomic_write_text
from anime_avatar.ops.stale_runs import mark_stale_runs, process_tags
from anime_avatar.ops.tracking_store import is_http, same_store, server_problem

log = logging.getLogger(__name__)

PENDING_DIR = Path("mlflow-pending")
RECORDS, META = "records.jsonl", "run.json"
FIRST_RETRY_S, MAX_RETRY_S, PROBE_TIMEOUT_S = 5.0, 60.0, 2.0


@dataclass
class Record:
    """One call on a run: ``metrics``, ``params``, ``tags``, ``artifact``, ``model`` or ``end``."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class RunJournal:
    """The records of one MLflow run, sent in order, kept while the tracking store does not answer."""

    def __init__(self, uri: str, run_id: str, client=None, clock: Callable[[], float] = time.monotonic) -> None:
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient(uri)
        self.uri, self.run_id, self.client = uri, run_id, client
        self.kept: list[Record] = []
        self.outages = 0
        self._clock = clock
        self._delay = FIRST_RETRY_S
        self._next_try = 0.0

    # --- what stages call -------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        values = {key: float(value) for key, value in metrics.items()}
        self.submit(Record("metrics", {"metrics": values, "step": int(step), "timestamp": int(time.time() * 1000)}))

    def log_params(self, params: dict[str, str]) -> None:
        self.submit(Record("params", {"params": {key: str(value) for key, value in params.items()}}))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.submit(Record("tags", {"tags": {key: str(value) for key, value in tags.items()}}))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.submit(Record("artifact", {"path": str(path), "artifact_path": artifact_path}))

    def log_model(self, model_file: Path, model_name: str | None, kind: str = "generator") -> None:
        """Log the model file (a ``kind`` of :data:`~anime_avatar.ops.model_logging.MODEL_KINDS`) as the run's
        MLflow model (registered as ``model_name`` unless None)."""
        self.submit(Record("model", {"path": str(model_file), "model_name": model_name, "kind": kind}))

    def finish(self, status: str | None = None, folder: Path = PENDING_DIR) -> bool:
        """End the run with ``status`` (None: leave it), send what is kept, else save it for later; True if all sent."""
        if status:
            self.submit(Record("end", {"status": status, "end_time": int(time.time() * 1000)}))
        if self.flush():
            return True
        saved = self.save(folder)
        log.warning(
            "MLflow at %s still does not answer: %d record(s) of run %s (%s) are kept in %s and will be sent "
            "by the next train stage, pipeline or `anime-avatar runs`",
            self.uri, len(self.kept), self.run_id, ", ".join(sorted({r.kind for r in self.kept})), saved,
        )  # fmt: skip
        return False

    # --- sending and keeping ----------------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Send ``record`` now, or keep it (after the ones already kept, so that order holds)."""
        if self.kept:
            self.kept.append(record)
            if self._clock() >= self._next_try:
                self.flush()
            return
        try:
            self._send(record)
        except Exception as err:  # whatever the store raises (HTTP, SQLAlchemy, MLflow), the work goes on
            self.kept.append(record)
            self.outages += 1
            log.warning(
                "MLflow at %s stopped answering (%s): the work goes on; records are kept and sent when it answers",
                self.uri, first_line(err, 200),
            )  # fmt: skip
            self._retry_later()

    def flush(self) -> bool:
        """Send the kept records in order; False (and a later retry) if the store still does not answer."""
        if not self.kept:
            return True
        if is_http(self.uri) and server_problem(self.uri, PROBE_TIMEOUT_S):
            self._retry_later()
            return False
        count = len(self.kept)
        while self.kept:
            try:
                self._send(self.kept[0])
            except Exception as err:
                log.debug("MLflow at %s still failing: %s", self.uri, first_line(err, 200))
                self._retry_later()
                return False
            self.kept.pop(0)
        log.info("MLflow at %s answers again: sent the %d record(s) kept during the outage", self.uri, count)
        self._delay = FIRST_RETRY_S
        return True

    def _retry_later(self) -> None:
        self._next_try = self._clock() + self._delay
        self._delay = min(self._delay * 2, MAX_RETRY_S)

    def _send(self, record: Record) -> None:
        from mlflow.entities import Metric, Param, RunTag

        data = record.data
        if record.kind == "metrics":
            metrics = [Metric(k, v, data["timestamp"], data["step"]) for k, v in data["metrics"].items()]
            self.client.log_batch(self.run_id, metrics=metrics)
        elif record.kind == "params":
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in data["params"].items()])
        elif record.kind == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in data["tags"].items()])
        elif record.kind == "artifact":
            self.client.log_artifact(self.run_id, data["path"], data["artifact_path"])
        elif record.kind == "model":
            self._send_model(data)
        elif record.kind == "end":
            self._end(data["status"], data["end_time"])
        else:
            raise ValueError(f"unknown record kind {record.kind!r}")

    def _send_model(self, data: dict[str, Any]) -> None:
        """Log the model, then register it: two steps, the first remembered in ``data`` (``logged``), so that a
        registration the store failed is tried again without a second copy of the model (each is megabytes).
        MLflow's model logging works on the active run: this run, made active here if it is not."""
        from anime_avatar.ops.model_logging import log_model_file
        from anime_avatar.ops.tracking import mlflow_client

        mlflow = mlflow_client(self.uri)
        retry = bool(data.get("logged"))
        if not retry:
            kind = data.get("kind", "generator")  # journals saved before models had kinds hold generators
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                data["logged"] = log_model_file(mlflow, kind, Path(data["path"]), None)
            else:
                mlflow.start_run(run_id=self.run_id)
                try:
                    data["logged"] = log_model_file(mlflow, kind, Path(data["path"]), None)
                finally:
                    with contextlib.suppress(Exception):  # the run's own end record sets its status
                        mlflow.end_run()
        if data["model_name"] and not (retry and self._registered(data["model_name"], data["logged"])):
            mlflow.register_model(data["logged"], data["model_name"])

    def _registered(self, model_name: str, logged: str) -> bool:
        """Whether a version of ``model_name`` from ``logged`` exists: a registration whose answer was lost (a
        timeout) may have been made."""
        versions = self.client.search_model_versions(f"name='{model_name}' and run_id='{self.run_id}'")
        return any(version.source == logged for version in versions)

    def _end(self, status: str, end_time: int) -> None:
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            # Ends MLflow's active run (it leaves the stack first, so nothing retries it at exit).
            mlflow.end_run(status)
        else:
            self.client.set_terminated(self.run_id, status, end_time=end_time)

    # --- saving for a later process ---------------------------------------------------------

    def save(self, folder: Path = PENDING_DIR) -> Path:
        """Write the kept records (and copies of their files) to ``folder/<run_id>``; that folder."""
        target = folder / self.run_id
        files = target / "files"
        lines = []
        for i, record in enumerate(self.kept):
            data = dict(record.data)
            if record.kind in ("artifact", "model"):
                source = Path(data["path"])
                if not source.is_relative_to(files):  # a file of a previous save is already here
                    copy = files / f"{i:05d}" / source.name  # the artifact keeps its name in MLflow
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, copy)
                    data["path"] = str(copy)
            lines.append(json.dumps({"kind": record.kind, "data": data}))
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target / META, {"run_id": self.run_id, "tracking_uri": self.uri,
                                          "saved": datetime.now(UTC).isoformat(timespec="seconds")})  # fmt: skip
        atomic_write_text(target / RECORDS, "\n".join(lines) + "\n")
        return target

    @classmethod
    def load(cls, target: Path, client=None) -> RunJournal:
        meta = json.loads((target / META).read_text())
        journal = cls(meta["tracking_uri"], meta["run_id"], client)
        for line in (target / RECORDS).read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                journal.kept.append(Record(entry["kind"], entry["data"]))
        return journal


def pending_runs(uri: str, folder: Path = PENDING_DIR) -> list[Path]:
    """The saved journals of runs on the tracking store ``uri``."""
    if not folder.is_dir():
        return []
    found = []
    for target in sorted(p for p in folder.iterdir() if (p / META).is_file()):
        with contextlib.suppress(ValueError, OSError):
            if same_store(json.loads((target / META).read_text())["tracking_uri"], uri):
                found.append(target)
    return found


def send_pending(uri: str, folder: Path = PENDING_DIR, client=None) -> list[str]:
    """Send the records saved for ``uri`` by earlier runs; the ids of the runs now complete."""
    done = []
    for target in pending_runs(uri, folder):
        journal = RunJournal.load(target, client)
        count = len(journal.kept)
        if journal.flush():
            shutil.rmtree(target)
            done.append(journal.run_id)
            log.info("sent the %d record(s) of MLflow run %s kept since its tracking store went away",
                     count, journal.run_id)  # fmt: skip
        else:
            journal.save(folder)
    return done


def recover(uri: str, experiment_ids: list[str], folder: Path = PENDING_DIR, client=None, send: bool = True) -> None:
    """Before a new run: send what earlier runs kept (unless not ``send``), then mark runs whose process is gone
    KILLED (but not those whose records wait to be sent)."""
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
    if send:
        send_pending(uri, folder, client)
    waiting = [target.name for target in pending_runs(uri, folder)]
    mark_stale_runs(client, experiment_ids, keep=waiting)


@contextlib.contextmanager
def journaled_run(
    mlflow, uri: str, killed: tuple[type[BaseException], ...] = (KeyboardInterrupt,), **start_run: Any
) -> Iterator[tuple[Any, RunJournal]]:
    """``mlflow.start_run(**start_run)`` with the process tags, logged through a journal, ended by it.

    The run ends FINISHED, KILLED (one of ``killed`` raised) or FAILED, and the end is itself a
    record: a store that went away never turns the end of the work into a traceback.
    """
    tags = {**(start_run.pop("tags", None) or {}), **process_tags()}
    try:
        run = mlflow.start_run(tags=tags, **start_run)
    except Exception as err:  # the store answered the check a moment ago: say it in one line anyway
        raise UserError(f"cannot start an MLflow run at {uri}: {first_line(err, 200)}") from None
    journal = RunJournal(uri, run.info.run_id)
    try:
        yield run, journal
    except killed:
        journal.finish("KILLED")
        raise
    except BaseException:
        journal.finish("FAILED")
        raise
    journal.finish("FINISHED")
