"""MLflow tracking: where runs go, what every run records, and how stages share one run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from anime_avatar.fsutil import atomic_write_json, sha256_file
from anime_avatar.layout import RUN_FILE
from anime_avatar.params import Params

DVC_LOCK = Path("dvc.lock")
DATA_DIRS = ("data/raw", "data/faces", "data/train")
# Set by the Prefect flows for the stages they run: the training run nests under the flow's run.
PARENT_RUN_ENV = "ANIME_AVATAR_PARENT_RUN_ID"
FLOW_RUN_ENV = "ANIME_AVATAR_FLOW_RUN_ID"


def tracking_uri(root: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the project root (default: the cwd).

    Current MLflow refuses the plain ``./mlruns`` file store, and SQLite keeps runs,
    metrics and the model registry in one file next to the code.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root or Path.cwd()).resolve() / 'mlflow.db'}"


def mlflow_client():  # -> mlflow
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
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


def folder_digest(folder: Path) -> str:
    """A content hash of a folder (names and bytes), for when dvc.lock has none."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return "sha256:" + digest.hexdigest()


def data_versions(lock: Path = DVC_LOCK) -> dict[str, str]:
    """The DVC hashes (``md5:<hash>``) of the data folders, as recorded in dvc.lock."""
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    versions = {}
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") in DATA_DIRS and out.get("md5"):
                versions[out["path"]] = f"md5:{out['md5']}"
    return versions


def data_version(folder: str, lock: Path = DVC_LOCK) -> str:
    """The version of one data folder: its dvc.lock hash, else a content hash."""
    return data_versions(lock).get(folder) or folder_digest(Path(folder))


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def data_version_tag(folder: str) -> str:
    """The run tag holding a data folder's version: data/train -> data_version.train."""
    return f"data_version.{folder.split('/')[-1]}"


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


def write_run_file(run_id: str, experiment_id: str) -> None:
    atomic_write_json(RUN_FILE, {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": tracking_uri()})


def read_run_id(root: Path = Path()) -> str | None:
    """The MLflow run of the current generator (models/run.json), if any."""
    path = root / RUN_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("run_id")


def flow_context() -> tuple[str | None, dict[str, str]]:
    """The parent run id and tags for a stage run started by a Prefect flow (None, {} otherwise)."""
    parent = os.environ.get(PARENT_RUN_ENV) or None
    flow_run_id = os.environ.get(FLOW_RUN_ENV)
    return parent, ({"prefect.flow_run_id": flow_run_id} if flow_run_id else {})
