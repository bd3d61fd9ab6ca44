"""What ``dvc.yaml`` and ``dvc.lock`` say about a stage's outputs, and how to get them back after a failure.

``dvc repro`` deletes every output of a stage (all but ``persist: true`` ones) before it runs the
stage's command, so a stage that fails leaves the workspace without its previous outputs, while
``dvc.lock`` still records them. Those DVC caches (the default, ``cache: true``) come back with
``dvc checkout <path>``; the others (``cache: false``: metrics, plots, run records) only ever lived
in the workspace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Set by DVC for the command of the stage it runs (DVC >= 3): the stage's name.
DVC_STAGE_ENV = "DVC_STAGE"


@dataclass(frozen=True)
class StageOutput:
    path: str
    cached: bool  # DVC keeps a copy in .dvc/cache: `dvc checkout` restores it
    persist: bool  # DVC leaves it in place when the stage runs again


def _yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file; {} when it is absent or unreadable (the message must not fail in turn)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def stage_outputs(stage: str, root: Path = Path()) -> list[StageOutput]:
    """The outs, metrics and plots ``dvc.yaml`` declares for ``stage`` (none when it has no such stage)."""
    entry = _yaml(root / "dvc.yaml").get("stages", {}).get(stage) or {}
    found = []
    for kind in ("outs", "metrics", "plots"):
        for item in entry.get(kind) or []:
            path, options = next(iter(item.items())) if isinstance(item, dict) else (item, {})
            options = options or {}
            found.append(StageOutput(str(path), bool(options.get("cache", True)), bool(options.get("persist", False))))
    return found


def locked_paths(stage: str, root: Path = Path()) -> set[str]:
    """The stage's outputs that ``dvc.lock`` records with a hash: those of its last successful run."""
    entry = _yaml(root / "dvc.lock").get("stages", {}).get(stage) or {}
    return {str(out["path"]) for out in entry.get("outs") or [] if out.get("md5") or out.get("hash")}


def locked_params(stage: str, root: Path = Path()) -> dict[str, Any]:
    """The params values (``"data.url": ...``) of the stage's last successful run, from ``dvc.lock``."""
    entry = _yaml(root / "dvc.lock").get("stages", {}).get(stage) or {}
    return dict((entry.get("params") or {}).get("params.yaml") or {})


def removed_outputs(stage: str, root: Path = Path()) -> list[StageOutput]:
    """The outputs DVC deletes before it runs ``stage``."""
    return [out for out in stage_outputs(stage, root) if not out.persist]


def restorable_paths(stage: str, root: Path = Path()) -> list[str]:
    """The removed outputs that ``dvc checkout`` can bring back: cached, and recorded in ``dvc.lock``."""
    locked = locked_paths(stage, root)
    return [out.path for out in removed_outputs(stage, root) if out.cached and out.path in locked]


def restore_hint(stage: str, root: Path = Path()) -> str:
    """How to get the stage's previous outputs back, as the end of its failure message ("" if it never ran)."""
    if not locked_paths(stage, root):
        return ""
    restorable = restorable_paths(stage, root)
    uncached = [out.path for out in removed_outputs(stage, root) if not out.cached]
    remade = f"{', '.join(uncached)}: not cached by DVC, the next successful `dvc repro {stage}` remakes them"
    if not restorable:
        return f"; DVC removed the stage's previous outputs before it ran ({remade})"
    return (
        "; DVC removed the stage's previous outputs before it ran, restore them with: "
        f"dvc checkout {' '.join(restorable)}" + (f" ({remade})" if uncached else "")
    )


def running_stage() -> str | None:
    """The name of the stage DVC is running in this process, or None outside ``dvc repro``."""
    return os.environ.get(DVC_STAGE_ENV) or None
