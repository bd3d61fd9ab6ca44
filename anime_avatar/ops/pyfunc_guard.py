"""What every served model (``pyfunc_generator``, ``pyfunc_stylizer``, ``pyfunc_translator``) does around its work.

- A bad request is refused before any work: the checks of :mod:`anime_avatar.core.limits` (and the column and
  image checks here) raise :class:`BadRequest`, an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which
  MLflow's scoring server answers with HTTP 400 and a JSON body ``{"error_code": ..., "message": ...}``: no stack
  trace (the server adds one only to exceptions that are not ``MlflowException``).
- Input images are checked from their header (size, aspect) before they are decoded (``pyfunc_images``).
- One request computes at a time per server process (a lock): concurrent requests wait in line instead of
  adding up their memory.
- Work stops at the request's deadline: the scoring server answers 504 after ``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``
  seconds but cannot stop the thread that runs ``predict``; so ``predict`` checks the same deadline while it waits
  for the lock and between rows, and gives up once it has passed. A row already started runs to its end (one
  forward pass, bounded by the limits). Whether the client is still connected cannot be seen from ``predict``:
  MLflow hands it only the parsed data.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED, INVALID_PARAMETER_VALUE

from anime_avatar.core.limits import LimitError

TIMEOUT_ENV = "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"  # `mlflow models serve` always sets it (default 60 s)

_WORK = threading.Lock()  # one request computes at a time in this process


class BadRequest(MlflowException):
    """A request refused before work: HTTP 400, the message names the problem."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class DeadlinePassed(MlflowException):
    """The request's deadline passed (its client was already answered 504): the work stops."""

    def __init__(self, message: str):
        super().__init__(message, error_code=DEADLINE_EXCEEDED)


def refuse(err: LimitError) -> BadRequest:
    return BadRequest(str(err))


def frame_of(model_input: Any, columns: Iterable[str], hint: str) -> pd.DataFrame:
    """``model_input`` as a DataFrame holding ``columns``, or BadRequest naming the missing ones."""
    try:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"the input is not a table of rows ({err})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BadRequest(f"the input needs the column(s) {', '.join(map(repr, missing))} ({hint}); it has "
                         f"{', '.join(map(repr, map(str, frame.columns))) or 'none'}")  # fmt: skip
    return frame


def request_seconds() -> float | None:
    """The scoring server's request timeout, when this runs under one (``mlflow models serve`` sets it)."""
    value = os.environ.get(TIMEOUT_ENV)
    try:
        return float(value) if value else None
    except ValueError:
        return None


class Deadline:
    """The moment the scoring server gives up on the request (None: no server, no deadline)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def check(self, done: int, total: int) -> None:
        left = self.left()
        if left is not None and left <= 0:
            raise DeadlinePassed(f"stopped after {done} of {total} rows: the request's {self.seconds:g} s deadline "
                                 f"({TIMEOUT_ENV}) passed")  # fmt: skip


@contextmanager
def turn(deadline: Deadline | None = None) -> Iterator[Deadline]:
    """This request's turn to compute: waits for the requests before it until the deadline (then DeadlinePassed)
    and hands back the deadline to check between rows; the next request's turn starts when the block is left."""
    deadline = deadline or Deadline(request_seconds())
    left = deadline.left()
    if not _WORK.acquire(timeout=-1 if left is None else max(left, 0.0)):
        raise DeadlinePassed(f"gave up waiting for the requests before it: the request's {deadline.seconds:g} s "
                             f"deadline ({TIMEOUT_ENV}) passed")  # fmt: skip
    try:
        yield deadline
    finally:
        _WORK.release()
        _give_back_freed_memory()


def _give_back_freed_memory() -> None:
    """Return the heap memory a request freed to the system: glibc keeps it in per-thread arenas otherwise, and the
    scoring server runs each request on a pool thread (before the row cap, three timed-out requests of 14 rows at
    768 px left the server's RSS 2.3 GiB above the idle server's). No-op where glibc's malloc_trim is missing."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
