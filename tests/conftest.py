from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIME_AVATAR_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
CASCADE = SHARED / "models" / "lbpcascade_animeface.xml"
GRID = SHARED_DATA / "illustrations" / "Anime-Face-Dataset-grid" / "sample_grid_8x8.jpg"
GETCHU = SHARED_DATA / "faces" / "getchu-64"
BIN = Path(sys.executable).parent


def needs_shared(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"real-image test data {path} is absent (../shared/data)")


@pytest.fixture
def cascade() -> Path:
    if not CASCADE.is_file():
        pytest.skip(f"{CASCADE} is absent (../shared/models)")
    return CASCADE


def _deep_update(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def project(tmp_path: Path) -> Callable[[dict], Path]:
    """A copy of the project (code, dvc.yaml, params.yaml with changes) in a fresh DVC workspace."""

    def make(changes: dict) -> Path:
        work = tmp_path / "project"
        for name in ("anime_avatar", "stages", "pipelines"):
            if (ROOT / name).exists():
                shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
        params = _deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), changes)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["dvc", "init", "--no-scm", "-q"], work)
        run(["dvc", "config", "core.analytics", "false"], work)
        return work

    return make


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command of the venv (dvc, python) in ``cwd``; output captured for assertions."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
