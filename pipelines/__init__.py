"""Prefect flows over the DVC pipeline: a full run, scheduled retraining with promotion, Dask detection."""

import os
from pathlib import Path

from anime_avatar.core.prefect_env import apply_prefect_defaults

# What the flows need from Prefect, set before it is imported (users can still override them).
apply_prefect_defaults()
# One Prefect home for the flows' temporary server and `make prefect-server` (which sets the same folder): the
# runs and artifacts of `anime-avatar pipeline` show in the UI that `make prefect-server` opens.
PREFECT_HOME = Path(__file__).resolve().parents[1] / ".prefect"
os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
