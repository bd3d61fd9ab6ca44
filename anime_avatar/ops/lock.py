"""One DVC run per workspace: the flows hold an exclusive lock while they run stages.

DVC has its own lock, but it only covers one ``dvc repro``; a flow runs several in a row
and then moves the champion alias, and none of that may interleave with another flow.
The lock is an OS file lock (released if the holder dies); a side file says who holds it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from anime_avatar.core.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".anime-avatar.lock"
HOLDER_FILE = ".anime-avatar.lock.json"


class WorkspaceBusy(UserError):
    """Another flow holds this workspace."""


@contextmanager
def workspace_lock(root: Path, holder: str) -> Iterator[None]:
    """Hold ``root``'s lock for the duration, or fail at once naming the current holder."""
    lock = FileLock(str(root / LOCK_FILE))
    info_path = root / HOLDER_FILE
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            info = json.loads(info_path.read_text())
            who = f"{info['holder']} (pid {info['pid']}, since {info['since']})"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise WorkspaceBusy(
            f"the workspace {root} is locked by {who}: one pipeline run at a time; wait for it to finish"
        ) from None
    try:
        info_path.write_text(
            json.dumps({"holder": holder, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        )
        log.info("holding the workspace lock of %s (%s)", root, holder)
        yield
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()
