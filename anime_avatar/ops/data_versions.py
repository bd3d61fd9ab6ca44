"""Data versions: the DVC hashes of the data folders, as recorded in ``dvc.lock``.

Every training run is tagged with them (``data_version.raw``, ``.faces``, ``.train``, ``.photos``), and
the audit matches runs to the commits whose ``dvc.lock`` holds the same hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from anime_avatar.artifacts.faces import FACES_DIR
from anime_avatar.artifacts.raw import PHOTOS_DIR, RAW_DIR
from anime_avatar.artifacts.trainset import TRAIN_DIR
from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.fsutil import sha256_file

log = logging.getLogger(__name__)

DVC_LOCK = Path("dvc.lock")
DATA_DIRS = (RAW_DIR.as_posix(), FACES_DIR.as_posix(), TRAIN_DIR.as_posix())  # the GAN's chain (what the audit shows)
VERSIONED_DIRS = (*DATA_DIRS, PHOTOS_DIR.as_posix())  # every pipeline data folder dvc.lock records


@dataclass(frozen=True)
class DataVersion:
    md5: str  # as in dvc.lock: "<hash>.dir"
    nfiles: int | None
    size: int | None

    @property
    def tag(self) -> str:
        """The form the training runs carry in their data_version.* tags."""
        return f"md5:{self.md5}"

    def describes(self, folder: Path) -> bool:
        """Whether ``folder`` on disk has the file count and total size recorded with this hash (True where the
        lock records neither). A stat of each file, no read: it catches a folder changed by hand since the stage
        that wrote it, not a file rewritten with other bytes of the same length."""
        if self.nfiles is None or self.size is None:
            return True
        sizes = [path.stat().st_size for path in folder.rglob("*") if path.is_file()]
        return (len(sizes), sum(sizes)) == (self.nfiles, self.size)


def lock_data(text: str, source: str = "dvc.lock") -> dict[str, DataVersion]:
    """The data folders' hashes and file counts recorded in the text of one dvc.lock (``source``, for the error
    when it is not one: after a merge of two branches that both ran the pipeline, it holds conflict markers)."""
    try:
        lock = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UserError(
            f"{source} is not valid YAML ({first_line(err)}): resolve the merge conflict in it, or take one side "
            "(git checkout --ours dvc.lock) and run dvc repro"
        ) from None
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    found = {}
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") in VERSIONED_DIRS and out.get("md5"):
                found[out["path"]] = DataVersion(out["md5"], out.get("nfiles"), out.get("size"))
    return found


def data_versions(lock: Path = DVC_LOCK) -> dict[str, str]:
    """The version tags (``md5:<hash>``) of the data folders in a dvc.lock (empty when it does not exist), for the
    folders whose file count and size on disk are still the ones it records (:meth:`DataVersion.describes`): the
    runs' tags of the folders a stage does not read (it reads no file of them to check)."""
    if not lock.is_file():
        return {}
    versions = {}
    for folder, version in lock_data(lock.read_text()).items():
        if version.describes(Path(folder)):
            versions[folder] = version.tag
        elif Path(folder).is_dir():  # (a folder not there has no version to give)
            log.info("%s has changed since %s recorded it: its version there is not used", folder, lock)
    return versions


def data_version(folder: Path) -> str:
    """The version of a data folder a stage reads, computed from what is on disk: its DVC hash,
    ``md5:<hash>.dir``, the md5 of the JSON list of its files' md5s and paths (in path order), as ``dvc add`` and
    dvc.lock record it (a test checks it against DVC). A checkpoint, a feature cache or a run is so never keyed by
    a stale dvc.lock's hash, as it was when the folder had been changed by hand since."""
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file())
    listing = []
    for relpath, path in files:  # in DVC's order: by the path as text ("a-b" before "a/b")
        with open(path, "rb") as f:
            md5 = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
        listing.append({"md5": md5, "relpath": relpath})
    digest = hashlib.md5(json.dumps(listing, sort_keys=True).encode(), usedforsecurity=False)
    return f"md5:{digest.hexdigest()}.dir"


def data_version_tag(folder: str) -> str:
    """The run tag holding a data folder's version: data/train -> data_version.train."""
    return f"data_version.{folder.split('/')[-1]}"


def path_version(path: Path) -> str:
    """The version of a folder or file given by a setting (a style set): the folder's DVC hash, or the file's
    sha256."""
    path = path.expanduser()
    if path.is_dir():
        return data_version(path)
    return "sha256:" + sha256_file(path)
