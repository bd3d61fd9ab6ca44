"""MLflow tracking: where runs go, what every run records, and how stages share one run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from anime_avatar.core.params import Params
from anime_avatar.ops.data_versions import data_version_tag

# Set by the Prefect flows for the stages they run: the training run nests under the flow's run.
PARENT_RUN_ENV = "ANIME_AVATAR_PARENT_RUN_ID"
FLOW_RUN_ENV = "ANIME_AVATAR_FLOW_RUN_ID"


def tracking_uri(root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the project ``root`` (default: the working folder,
    as a relative path, so that models/run.json stays valid when the workspace moves).

    Current MLflow refuses the plain ``./mlruns`` file store, and SQLite keeps runs,
    metrics and the model registry in one file next to the code.
    """
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    return f"sqlite:///{root.resolve() / 'mlflow.db'}" if root else "sqlite:///mlflow.db"


def missing_tracking_db(uri: str) -> Path | None:
    """The SQLite file ``uri`` names when it does not exist (MLflow would create it on first use), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    return None if path.is_file() else path


def mlflow_client(uri: str | None = None):  # -> mlflow
    """The mlflow module, pointed at ``uri`` (default: :func:`tracking_uri`)."""
    import mlflow

    mlflow.set_tracking_uri(uri or tracking_uri())
    return mlflow


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr_g": 1e-4}} -> {"train.lr_g": "0.0001"}: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)
    return flat


def params_dict(params: Params) -> dict[str, Any]:
    return params.model_dump(mode="json", by_alias=True)


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def run_tags(params: Params, stage: str, versions: dict[str, str]) -> dict[str, str]:
    tags = {
        "stage": stage,
        "git_commit": git_commit(),
        "arch": params.model.arch,
        "data_source": params.data.source,
    }
    for folder, version in versions.items():
        tags[data_version_tag(folder)] = version
    return tags


def flow_context() -> tuple[str | None, dict[str, str]]:
    """The parent run id and tags for a stage run started by a Prefect flow (None, {} otherwise)."""
    parent = os.environ.get(PARENT_RUN_ENV) or None
    flow_run_id = os.environ.get(FLOW_RUN_ENV)
    return parent, ({"prefect.flow_run_id": flow_run_id} if flow_run_id else {})


def log_generator_model(mlflow, generator, model_name: str | None) -> None:
    """Log the EMA generator as an MLflow model, registered as ``model_name`` unless that is None."""
    import mlflow.pytorch
    import torch

    from anime_avatar.gan.inference import plain_generator

    mlflow.pytorch.log_model(
        plain_generator(generator),
        name="generator",
        registered_model_name=model_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        code_paths=[str(Path(__file__).resolve().parents[1])],
        # A pickled module keeps z_dim/resolution and loads as the same class; pt2 would need tracing.
        serialization_format="pickle",
    )
