"""anime_avatar: the library behind the anime-avatar pipeline (data, detection, training, evaluation)."""

import os

# The pipeline runs offline: keep libraries from phoning home on import (albumentations'
# update check, Great Expectations' analytics). Users can still override both.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

__version__ = "0.1.0"
