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


def run_name(arch: str, resolution: int, steps: int) -> str:
    """A training run's name in the MLflow UI: ``sagan-32px-3000``."""
    return f"{arch}-{resolution}px-{steps}"


def run_tags(params: Params, stage: str, versions: dict[str, str]) -> dict[str, str]:
    tags = {
        "stage": stage,
        **source_tags(),
        "arch": params.model.arch,
        "data_source": params.data.source,
    }
    for folder, version in versions.items():
        tags[data_version_tag(folder)] = version
    return tags


def log_training_data(mlflow, images, folder: Path, version: str) -> None:
    """The training set as an MLflow dataset input (the run page's Datasets): its folder, DVC version, schema."""
    import warnings

    digest = version.removeprefix("md5:").removesuffix(".dir")[:36]  # MLflow keeps at most 36 characters
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways" (all of them local)
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(images, source=str(folder.resolve()), name=folder.as_posix(), digest=digest)
    mlflow.log_input(dataset, context="training", tags={"dvc_version": version})


def flow_context() -> tuple[str | None, dict[str, str]]:
    """The parent run id and tags for a stage run started by a Prefect flow (None, {} otherwise)."""
    parent = os.environ.get(PARENT_RUN_ENV) or None
    flow_run_id = os.environ.get(FLOW_RUN_ENV)
    return parent, ({"prefect.flow_run_id": flow_run_id} if flow_run_id else {})


def log_generator_model(mlflow, generator_file: Path, resolution: int, model_name: str | None) -> None:
    """Log ``generator_file`` as an MLflow pyfunc model (code + tensors, no pickle) with a signature and an
    input example; registered as ``model_name`` unless that is None."""
    import pandas as pd

    from anime_avatar.ops import pyfunc_generator

    mlflow.pyfunc.log_model(
        name="generator",
        python_model=str(Path(pyfunc_generator.__file__)),  # models from code: the file runs on load
        artifacts={pyfunc_generator.ARTIFACT: str(generator_file)},
        code_paths=[str(PACKAGE_DIR)],
        signature=generator_signature(resolution),
        input_example=pd.DataFrame({"seed": [0, 1], "truncation": [0.0, 0.7]}),
        pip_requirements=model_requirements(),
        registered_model_name=model_name,
    )


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # anime_avatar/, shipped with the model as code
# What the logged model imports (pyfunc_generator.py and its closure in anime_avatar), by distribution;
# tests/test_mlflow_model.py checks that the closure imports nothing else.
MODEL_DISTRIBUTIONS = ("mlflow", "torch", "numpy", "pandas", "pillow", "torchvision")


def model_requirements(distributions: tuple[str, ...] = MODEL_DISTRIBUTIONS) -> list[str]:
    """Pinned requirements of a logged model: the versions installed here (local builds' +tags dropped)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in distributions:
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def generator_signature(resolution: int):  # -> mlflow.models.ModelSignature
    """Input: one row per avatar, ``seed`` (int) and optional ``truncation`` (float). Output: uint8 images."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs = Schema([ColSpec("long", "seed"), ColSpec("double", "truncation", required=False)])
    outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, resolution, resolution, 3))])
    return ModelSignature(inputs=inputs, outputs=outputs)
