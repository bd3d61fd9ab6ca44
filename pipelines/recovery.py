"""How the flows make a failing stage lose nothing.

``dvc repro`` removes a stage's outputs before it runs the stage's command, so whatever makes the
stage fail (a wrong sha256, a tracking server that went away, a bad value no schema can catch)
leaves the workspace without the previous ``data/raw`` or ``models/generator.pt``. The flows:

- check first what can be checked before DVC removes anything: the params, the tracking store,
  and, when the download stage will run for an archive URL, the archive itself (fetched into the
  download cache and sha256-checked);
- keep copies of the stage's outputs that DVC does not cache (run records, metrics, plots: small,
  and only ever in the workspace) while the stage runs;
- after a failure, put the previous outputs back: ``dvc checkout`` of the cached ones (``dvc.lock``
  still records them), the kept copies for the others; what the failed run wrote in their place
  (a failed validation's report, the sample grids of a diverged training) is moved aside to
  ``.dvc/tmp/anime-avatar-failed/<stage>/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from anime_avatar.core.dvcfiles import locked_params, removed_outputs, restorable_paths
from anime_avatar.core.errors import UserError
from anime_avatar.core.params import Params
from anime_avatar.data.sources import url_archive
from anime_avatar.ops.tracking import tracking_uri
from anime_avatar.ops.tracking_store import check_tracking_store

KEPT_DIR = Path(".dvc/tmp/anime-avatar-kept")  # DVC's own scratch folder: git-ignored, same file system
FAILED_DIR = Path(".dvc/tmp/anime-avatar-failed")  # what a failed run wrote, set aside for a look


def download_will_fetch(root: Path, params: Params, force: bool) -> bool:
    """Whether the download stage is about to fetch ``data.url``: forced, or its url/sha256 changed since dvc.lock."""
    if params.data.source != "url":
        return False
    locked = locked_params("download", root)
    return force or (locked.get("data.source"), locked.get("data.url"), locked.get("data.sha256")) != (
        "url", params.data.url, params.data.sha256,
    )  # fmt: skip


def preflight(root: Path, params: Params, force_download: bool) -> None:
    """Raise UserError before any stage runs if the tracking store, the download's archive or a local data
    folder is unusable (a missing local folder failed in the download task, which the flow retried three times,
    74 s, for a user's typo)."""
    check_tracking_store(tracking_uri(root))
    for source in (params.data, params.photos):
        local = Path(source.path).expanduser()
        if source.source == "local" and not (local if local.is_absolute() else root / local).exists():
            raise UserError(f"{source.section}.path: {source.path} does not exist")
    if download_will_fetch(root, params, force_download):
        url_archive(params.data)  # in the cache now: the download stage reuses it


def check_retrain_params(params: Params) -> None:
    """Retraining decides between registered versions: without registration it ran the whole pipeline (12 min
    with the defaults), then failed, and a schedule failed so every time."""
    if not params.tracking.register_model:
        raise UserError("retrain moves the champion between registered generator versions, and "
                        "tracking.register_model is false: set it to true, or run `anime-avatar pipeline`")  # fmt: skip


def _copy(source: Path, target: Path) -> None:
    """A copy, not a hard link: a process writing to the output in place must not change the kept one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)


Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(path: Path) -> Fingerprint:
    """(name, inode, size, mtime) of every file of an output: equal before and after means untouched."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    found = []
    for file in files:
        stat = file.stat()
        found.append((file.relative_to(path).as_posix() if path.is_dir() else "", stat.st_ino, stat.st_size,
                      stat.st_mtime_ns))  # fmt: skip
    return tuple(found)


@dataclass
class Restored:
    paths: list[str] = field(default_factory=list)  # back as they were before the failed run
    set_aside: list[str] = field(default_factory=list)  # what the failed run wrote, moved to ``failed_dir``
    failed_dir: Path | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class KeptOutputs:
    """The previous outputs of one stage, as they can be restored after it fails."""

    root: Path
    stage: str
    folder: Path
    uncached: list[str] = field(default_factory=list)  # kept as copies under ``folder``
    before: dict[str, Fingerprint] = field(default_factory=dict)

    def restore(self) -> Restored:
        """Put back the previous outputs; what the failed run wrote in their place is moved to FAILED_DIR.

        Nothing is lost either way: the workspace holds again what ``dvc.lock`` records, and the
        failed run's own outputs (e.g. the report of a failed validation) stay at hand.
        """
        done = Restored()
        failed_dir = self.root / FAILED_DIR / self.stage
        shutil.rmtree(failed_dir, ignore_errors=True)
        for out in removed_outputs(self.stage, self.root):
            target = self.root / out.path
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()  # made, then left empty: nothing to keep
            if not target.exists() or fingerprint(target) == self.before.get(out.path):
                continue  # removed (restored below), or never touched: DVC did not get to run the stage
            (failed_dir / out.path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, failed_dir / out.path)
            done.set_aside.append(out.path)
            done.failed_dir = failed_dir
        if cached := [p for p in restorable_paths(self.stage, self.root) if not (self.root / p).exists()]:
            proc = subprocess.run(
                [dvc_executable(), "checkout", "--force", *cached], cwd=self.root, capture_output=True, text=True
            )
            if proc.returncode == 0:
                done.paths += cached
            else:
                error = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                done.problems.append(f"dvc checkout {' '.join(cached)}: {error}")
        for path in self.uncached:
            if not (self.root / path).exists():
                (self.root / path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.folder / path, self.root / path)
                done.paths.append(path)
        return done


def dvc_executable() -> str:
    """The dvc of this environment (the flows' own venv first)."""
    return shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc") or "dvc"


@contextlib.contextmanager
def kept_outputs(root: Path, stage: str) -> Iterator[KeptOutputs]:
    """Keep copies of the stage's uncached outputs, and every output's fingerprint, while the block runs."""
    folder = root / KEPT_DIR / stage
    shutil.rmtree(folder, ignore_errors=True)
    kept = KeptOutputs(root, stage, folder)
    for out in removed_outputs(stage, root):
        if (root / out.path).exists():
            kept.before[out.path] = fingerprint(root / out.path)
            if not out.cached:
                _copy(root / out.path, folder / out.path)
                kept.uncached.append(out.path)
    try:
        yield kept
    finally:
        shutil.rmtree(folder, ignore_errors=True)
