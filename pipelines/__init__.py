"""Prefect flows over the DVC pipeline: a full run, scheduled retraining with promotion, Dask detection."""

import os
from pathlib import Path

# What the flows need from Prefect, set before it is imported (users can still override them):
# its server's telemetry writes to the same SQLite file as the flow and logs a `database is locked`
# traceback on every run; the flows never phone home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary server Prefect starts when PREFECT_API_URL is unset needs more than its default 20 s on a
# loaded 2-core machine (its first start migrates a new database).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# One Prefect home for the flows' temporary server and `make prefect-server` (which sets the same folder): the
# runs and artifacts of `anime-avatar pipeline` show in the UI that `make prefect-server` opens.
PREFECT_HOME = Path(__file__).resolve().parents[1] / ".prefect"
os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
