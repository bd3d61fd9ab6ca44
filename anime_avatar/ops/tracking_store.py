"""Is the MLflow tracking store usable? Answered in seconds, before a stage removes or trains anything.

Left alone, MLflow's HTTP client retries a refused connection 7 times with doubling back-off
(about 4 minutes) and then raises a traceback; a damaged or read-only ``mlflow.db`` surfaces as
an SQLAlchemy traceback. These checks say the same in one line.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit

from anime_avatar.core.errors import UserError, first_line

CHECK_TIMEOUT_S = 5.0
# MLflow reads these for every HTTP request it makes.
RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
SERVER_FIX = "start it, or point MLFLOW_TRACKING_URI at one that runs (unset it to record in mlflow.db here)"
STORE_FIX = "set MLFLOW_TRACKING_URI to another tracking store"


def fail_fast_http() -> None:
    """This process's MLflow HTTP requests: no retries inside MLflow, 10 s each, unless the user set their own.

    Whoever logs (the run journal) keeps what failed and tries again later, so a dead server costs
    a refused connection, not minutes of back-off.
    """
    os.environ.setdefault(RETRIES_ENV, "0")
    os.environ.setdefault(TIMEOUT_ENV, "10")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URI (None for other stores)."""
    if not uri.startswith("sqlite://"):
        return None
    path = uri.removeprefix("sqlite://").split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///x -> x; sqlite:////x -> /x
    return Path(path) if path and path != ":memory:" else None


def same_store(a: str, b: str) -> bool:
    """Whether two tracking URIs name one store: ``sqlite:///mlflow.db`` (a stage, from the project folder) and
    ``sqlite:////abs/project/mlflow.db`` (a flow) do."""
    if a == b:
        return True
    path_a, path_b = sqlite_path(a), sqlite_path(b)
    return path_a is not None and path_b is not None and path_a.resolve() == path_b.resolve()


def own_database(uri: str) -> Path | None:
    """The database file of ``uri`` when it is the project's own store: a SQLite file the user did not name with
    ``$MLFLOW_TRACKING_URI`` (a store the user names is theirs to arrange). None otherwise."""
    return None if os.environ.get("MLFLOW_TRACKING_URI") else sqlite_path(uri)


def artifacts_elsewhere(uri: str, artifact_location: str) -> str | None:
    """What is wrong when the project's own store (:func:`own_database`) keeps the files of a run or experiment
    (``artifact_location``) outside its folder: another project's store, copied here with the folder. MLflow records
    that location as an absolute path, so what is logged would land in the other project, out of sight from here.
    None when the files are beside the store (``mlruns/``), or the store is not the project's own."""
    if (database := own_database(uri)) is None:
        return None
    parts = urlsplit(artifact_location)
    if parts.scheme not in ("", "file"):
        return None
    folder, project = Path(unquote(parts.path)).resolve(), database.resolve().parent
    if folder.is_relative_to(project):
        return None
    return (f"{database} keeps its runs' files in {folder}, outside this project ({project}): a store copied or "
            "moved here from another project, whose runs would write their files there")  # fmt: skip


def is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def server_problem(uri: str, timeout: float = CHECK_TIMEOUT_S) -> str | None:
    """Why the HTTP tracking server at ``uri`` does not answer, or None when it answers (any HTTP status)."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.Timeout:
        return f"no answer within {timeout:.0f} s"
    except requests.RequestException as err:
        reason = getattr(err, "args", [err])[0]
        return str(getattr(reason, "reason", reason)).split(": ", 1)[-1]
    return None


def check_sqlite(path: Path, write: bool = True) -> None:
    """The SQLite file MLflow would use opens as a database (and takes a write): or one line saying why not."""
    if not path.exists():
        folder = path.parent if str(path.parent) else Path()
        try:  # MLflow will create the file: the folder must take one
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise UserError(f"cannot create the MLflow database {path} ({err.strerror}): {STORE_FIX}") from None
        return
    if not path.is_file():
        raise UserError(f"the MLflow database {path} is not a file: {STORE_FIX}")
    try:
        con = sqlite3.connect(str(path), timeout=CHECK_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as err:
        raise UserError(f"cannot open the MLflow database {path} ({err}): {STORE_FIX}") from None
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if not write:
            return
        # A table created and rolled back: the cheapest real write (BEGIN alone succeeds on read-only files).
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TABLE anime_avatar_write_probe (x)")
        con.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        if "locked" in str(err):  # another process is writing: MLflow waits for it too
            return
        if "readonly" in str(err).replace("-", "").replace(" ", ""):
            raise UserError(
                f"the MLflow database {path} is read-only ({err}): make it writable, or {STORE_FIX}"
            ) from None
        raise UserError(f"the MLflow database {path} cannot be used ({err}): {STORE_FIX}") from None
    except sqlite3.DatabaseError as err:
        raise UserError(
            f"{path} is not a usable MLflow database ({err}): move it aside (mv {path} {path}.broken) "
            f"to start a new one, or {STORE_FIX}"
        ) from None
    finally:
        con.close()


def check_tracking_store(uri: str, timeout: float = CHECK_TIMEOUT_S, write: bool = True) -> None:
    """Raise UserError in one line unless MLflow can read (and ``write``) runs at ``uri``; takes seconds."""
    if (path := sqlite_path(uri)) is not None:
        check_sqlite(path, write)
    elif is_http(uri) and (problem := server_problem(uri, timeout)):
        raise UserError(f"the MLflow tracking server {uri} does not answer ({problem}): {SERVER_FIX}")
    from mlflow import MlflowClient

    # One real request (authentication, schema), with no retries and a short timeout.
    with _environment({RETRIES_ENV: "0", TIMEOUT_ENV: str(int(timeout))}):
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        except Exception as err:  # MLflow raises many types (HTTP, SQLAlchemy, its own): all mean the same here
            raise UserError(f"the MLflow tracking store {uri} cannot be used ({first_line(err, 300)})") from None
