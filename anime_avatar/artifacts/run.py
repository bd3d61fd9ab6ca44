"""``models/run.json``: which MLflow run (and tracking server) produced the current generator."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_json

RUN_FILE = Path("models/run.json")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    tracking_uri: str


def write_run_file(record: RunRecord, path: Path = RUN_FILE) -> None:
    atomic_write_json(path, asdict(record))


def read_run_file(root: Path = Path(), name: Path = RUN_FILE, stage: str = "train") -> RunRecord | None:
    """The record of the run behind ``models/generator.pt`` (or the file ``name`` that ``stage`` writes),
    or None when there is none."""
    path = root / name
    if not path.is_file():
        return None
    try:
        return RunRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise UserError(f"{path} is damaged ({err}): run the {stage} stage again (dvc repro -f {stage})") from None
