"""anime_avatar: the library behind the anime-avatar pipeline (data, detection, training, evaluation)."""

import os

# The pipeline runs offline: keep libraries from phoning home on import (albumentations'
# update check, Great Expectations' analytics, MLflow's telemetry). Users can still override them.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
