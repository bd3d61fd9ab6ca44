"""MLflow tracking: where runs go, what every run records, and how stages share one run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from anime_avatar.core.params import Params
from anime_avatar.ops.data_versions import data_version_tag

# Set by the Prefect flows for the stages they run: the training run nests under the flow's run.
PARENT_RUN_ENV = "ANIME_AVATAR_PARENT_RUN_ID"
FLOW_RUN_ENV = "ANIME_AVATAR_FLOW_RUN_ID"


def tracking_uri(root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the project ``root`` (default: the working folder,
    as a relative path, so that models/run.json stays valid when the workspace moves; the logged models do not
    move with it: MLflow stores each experiment's artifact folder as an absolute path, see the README).

    Current MLflow refuses the plain ``./mlruns`` file store, and SQLite keeps runs,
    metrics and the model registry in one file next to the code.
    """
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    return f"sqlite:///{root.resolve() / 'mlflow.db'}" if root else "sqlite:///mlflow.db"


def missing_tracking_db(uri: str) -> Path | None:
    """The SQLite file ``uri`` names when it does not exist (MLflow would create it on first use), else None."""
    from anime_avatar.ops.tracking_store import sqlite_path

    path = sqlite_path(uri)
    return None if path is None or path.is_file() else path


def runs_table_url(server: str, experiment_id: str | None) -> str:
    """The MLflow UI page of the experiment's training runs. MLflow 3.17's UI opens every experiment on its
    GenAI overview (traces, "Detect issues") unless the browser has picked "Model training" once: its
    experiment kind tag is not enough there (checked in chromium); the workflowType parameter chooses."""
    server = server.rstrip("/")
    if experiment_id is None:
        return f"{server}/#/experiments?workflowType=machine_learning"
    return f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def mlflow_client(uri: str | None = None):  # -> mlflow
    """The mlflow module, pointed at ``uri`` (default: :func:`tracking_uri`).

    MLflow also exports the URI it is pointed at as ``$MLFLOW_TRACKING_URI``, for child processes. That is
    undone: a stage that a flow starts would take the flow's choice for the user's (an absolute path in its
    run record, the copied-store check skipped). Children see the store the user chose, or none."""
    import mlflow

    with _POINTING:  # (the studio loads models on several threads: none may take another's export for the user's)
        chosen = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri or tracking_uri())
        if chosen is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = chosen
    return mlflow


_POINTING = threading.Lock()


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


# What decides a run's outputs besides data: a run made with uncommitted changes here is marked dirty.
SOURCE_PATHS = ("params.yaml", "dvc.yaml", "pyproject.toml", "anime_avatar", "stages", "pipelines")
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own: the UI links the run to its commit
GIT_DIRTY_TAG = "git.dirty"


def git_dirty(cwd: Path | None = None) -> bool | None:
    """Whether params or code differ from the commit (untracked files included); None outside a git repo."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *SOURCE_PATHS], cwd=cwd, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def source_tags(cwd: Path | None = None) -> dict[str, str]:
    """MLflow's git tag, and whether the workspace had uncommitted params or code (``dvc exp run -S`` does)."""
    dirty = git_dirty(cwd)
    return {GIT_COMMIT_TAG: git_commit(cwd), GIT_DIRTY_TAG: "unknown" if dirty is None else str(dirty).lower()}


def stage_tags(stage: str, versions: dict[str, str]) -> dict[str, str]:
    """The tags every run of the project carries: its stage, its source (git), its data versions (folder -> version)."""
    return {"stage": stage, **source_tags(), **{data_version_tag(folder): v for folder, v in versions.items()}}


def gan_tags(params: Params) -> dict[str, str]:
    """What a GAN training run adds: the architecture and the data source, for filtering runs."""
    return {"arch": params.model.arch, "data_source": params.data.source}


def flow_context() -> tuple[str | None, dict[str, str]]:
    """The parent run id and tags for a stage run started by a Prefect flow (None, {} otherwise)."""
    parent = os.environ.get(PARENT_RUN_ENV) or None
    flow_run_id = os.environ.get(FLOW_RUN_ENV)
    return parent, ({"prefect.flow_run_id": flow_run_id} if flow_run_id else {})


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # anime_avatar/, shipped with the model as code


def log_code_model(
    mlflow: Any,
    name: str,
    model_code: ModuleType,
    artifact: tuple[str, Path],
    signature: Any,
    input_example: Any,
    distributions: tuple[str, ...],
    registered_name: str | None,
) -> str:
    """Log a pyfunc model from code (``model_code``'s file runs on load; no pickle) with its one tensors file
    (``artifact``: key and path), the package as its code, a signature, an input example and pinned requirements;
    registered as ``registered_name`` unless that is None. Returns the logged model's URI (``models:/m-…``), by
    which a registration that failed is tried again without logging the model twice.

    The package goes as a copy without its ``.pt`` files (the shipped translator's weights: 11.5 MB, which every
    logged model carried, 19 copies in one store) and caches."""
    with tempfile.TemporaryDirectory(prefix="anime-avatar-code-") as tmp:
        code = Path(tmp) / PACKAGE_DIR.name
        shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
        logged = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(str(model_code.__file__))),
            artifacts={artifact[0]: str(artifact[1])},
            code_paths=[str(code)],
            signature=signature,
            input_example=input_example,
            pip_requirements=model_requirements(distributions),
        )
    if registered_name is not None:
        mlflow.register_model(logged.model_uri, registered_name)
    return logged.model_uri


def model_requirements(distributions: tuple[str, ...]) -> list[str]:
    """Pinned requirements of a logged model: the versions installed here (local builds' +tags dropped)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in distributions:
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins
