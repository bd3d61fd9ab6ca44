"""Runs left RUNNING by a process that was killed: found by their process tags and marked KILLED.

A process killed outright (SIGKILL, out of memory, a power cut) never tells MLflow that its run
ended, so the run shows RUNNING forever. Every run this project starts carries the host, process
id and process start time of its process; the next train stage or flow (or ``anime-avatar runs``)
marks those RUNNING runs whose process is gone as KILLED. Runs of other hosts are left alone:
from here nobody can tell whether their process still runs.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable

import psutil

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, STARTED_TAG = "process.host", "process.pid", "process.started"
REASON_TAG = "killed.reason"


def process_tags() -> dict[str, str]:
    """The tags that let a later process tell whether this one still runs."""
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        STARTED_TAG: f"{psutil.Process().create_time():.0f}",
    }


def process_gone(tags: dict[str, str]) -> bool:
    """True when the tags name a process of this host that no longer runs (a reused pid counts as gone)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    try:
        started = psutil.Process(int(tags[PID_TAG])).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. access denied: it exists
        return False
    recorded = tags.get(STARTED_TAG, "")
    return recorded.isdigit() and abs(started - int(recorded)) > 2


def mark_stale_runs(client, experiment_ids: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Mark KILLED the RUNNING runs whose process is gone (except ``keep``); their ids, oldest first."""
    keep = set(keep)
    ids = list(experiment_ids)
    if not ids:
        return []
    running = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000, order_by=["start_time ASC"])
    marked = []
    for run in running:
        tags = run.data.tags
        if run.info.run_id in keep or not process_gone(tags):
            continue
        reason = f"process {tags[PID_TAG]} on {tags[HOST_TAG]} ended without closing the run (killed or crashed)"
        client.set_tag(run.info.run_id, REASON_TAG, reason)
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    if marked:
        log.warning("marked %d MLflow run(s) KILLED: their process is gone (%s)", len(marked), ", ".join(marked))
    return marked
