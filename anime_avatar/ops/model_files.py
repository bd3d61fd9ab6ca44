"""The weights file of a model logged to MLflow, fetched once and kept in the download cache."""

from __future__ import annotations

import tempfile
from pathlib import Path

from anime_avatar.core.fsutil import atomic_write_bytes, sha256_file
from anime_avatar.data.fetch import cache_dir


def model_file(uri: str, filename: str) -> Path | None:
    """The ``artifacts/<filename>`` of the logged MLflow model ``uri`` (e.g. ``runs:/ID/stylizer``), kept in the
    download cache under its sha256; None when the model holds no such file. MLflow downloads the whole model
    folder: into a temporary folder, removed once the file is kept (each use once left its copy in /tmp). MLflow's
    own errors (no such run, model or version; a store that does not answer) go to the caller."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="anime-avatar-model-") as scratch:
        weights = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch)) / "artifacts" / filename
        if not weights.is_file():
            return None
        kept = cache_dir() / "models" / f"{sha256_file(weights)}-{filename}"
        if not kept.is_file():
            atomic_write_bytes(kept, weights.read_bytes())
    return kept
