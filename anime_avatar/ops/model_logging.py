"""Every kind of model file the project logs to MLflow, and the function that logs each one.

The run journal sends a ``model`` record through :func:`log_model_file`, so a stage logs any kind of
model the same way, and a model logged during a tracking outage is sent later (by whichever process
recovers it) like any other record.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# kind -> "module:function(mlflow, model file, registered name or None)". Named, not imported: each logger pulls
# its method's code, and a stage must not depend on the other methods' code (logging changes no DVC output).
MODEL_KINDS = {
    "generator": "anime_avatar.ops.generator_models:log_generator_model",
    "stylizer": "anime_avatar.ops.stylizer_models:log_stylizer_model",
    "translator": "anime_avatar.ops.translator_models:log_translator_model",
}


def log_model_file(mlflow, kind: str, path: Path, registered_name: str | None) -> str:
    """Log the ``kind`` model file at ``path`` on MLflow's active run (registered unless the name is None); the
    logged model's URI."""
    try:
        module, function = MODEL_KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}") from None
    return getattr(importlib.import_module(module), function)(mlflow, path, registered_name)
