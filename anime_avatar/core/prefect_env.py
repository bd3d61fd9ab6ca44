"""Prefect settings the project needs wherever it starts Prefect (the flows, the detect stage's Dask executor),
set before Prefect is imported; a user's own settings win."""

from __future__ import annotations

import os

PREFECT_DEFAULTS = {
    # Its server's telemetry writes to the same SQLite file as the flow and logs a `database is locked`
    # traceback on every run; the project never phones home.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The temporary server Prefect starts when PREFECT_API_URL is unset needs more than its default 20 s on a
    # loaded 2-core machine (its first start migrates a new database).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def apply_prefect_defaults() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
