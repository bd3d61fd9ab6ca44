"""How the flows make a failing stage lose nothing.

``dvc repro`` removes a stage's outputs before it runs the stage's command, so whatever makes the
stage fail (a wrong sha256, a tracking server that went away, a bad value no schema can catch)
leaves the workspace without the previous ``data/raw`` or ``models/generator.pt``. The flows:

- check first what can be checked before DVC removes anything: the params, the tracking store,
  and, when the download stage will run for an archive URL, the archive itself (fetched into the
  download cache and sha256-checked);
- keep hard links to the stage's outputs that DVC does not cache (run records, metrics, plots:
  only ever in the workspace) while the stage runs;
- after a failure, put back the previous outputs it left missing: ``dvc checkout`` of the cached
  ones (``dvc.lock`` still records them), the kept links for the others.
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
from anime_avatar.core.params import Params
from anime_avatar.data.sources import url_archive
from anime_avatar.ops.tracking import tracking_uri
from anime_avatar.ops.tracking_store import check_tracking_store

KEPT_DIR = Path(".dvc/tmp/anime-avatar-kept")  # DVC's own scratch folder: git-ignored, same file system


def download_will_fetch(root: Path, params: Params, force: bool) -> bool:
    """Whether the download stage is about to fetch ``data.url``: forced, or its url/sha256 changed since dvc.lock."""
    if params.data.source != "url":
        return False
    locked = locked_params("download", root)
    return force or (locked.get("data.source"), locked.get("data.url"), locked.get("data.sha256")) != (
        "url", params.data.url, params.data.sha256,
    )  # fmt: skip


def preflight(root: Path, params: Params, force_download: bool) -> None:
    """Raise UserError before any stage runs if the tracking store or the download's archive is unusable."""
    check_tracking_store(tracking_uri(root))
    if download_will_fetch(root, params, force_download):
        url_archive(params.data)  # in the cache now: the download stage reuses it


def _hard_copy(source: Path, target: Path) -> None:
    """Hard links where the file system allows them (no bytes copied), else copies."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=link, symlinks=True)
    else:
        link(str(source), str(target))


@dataclass
class KeptOutputs:
    """The previous outputs of one stage, as they can be restored after it fails."""

    root: Path
    stage: str
    folder: Path
    uncached: list[str] = field(default_factory=list)  # kept as hard links under ``folder``

    def restore(self) -> tuple[list[str], list[str]]:
        """Put back the previous outputs the failed run left missing; (restored paths, problems).

        An output the failed run did write stays (the stages write atomically, so it is whole and
        meant, e.g. the report of a failed validation).
        """
        restored, problems = [], []
        if cached := [p for p in restorable_paths(self.stage, self.root) if not (self.root / p).exists()]:
            proc = subprocess.run(
                [dvc_executable(), "checkout", "--force", *cached], cwd=self.root, capture_output=True, text=True
            )
            if proc.returncode == 0:
                restored += cached
            else:
                error = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                problems.append(f"dvc checkout {' '.join(cached)}: {error}")
        for path in self.uncached:
            if not (self.root / path).exists():
                (self.root / path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.folder / path, self.root / path)
                restored.append(path)
        return restored, problems


def dvc_executable() -> str:
    """The dvc of this environment (the flows' own venv first)."""
    return shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc") or "dvc"


@contextlib.contextmanager
def kept_outputs(root: Path, stage: str) -> Iterator[KeptOutputs]:
    """Keep the stage's uncached outputs (hard links) for as long as the block runs."""
    folder = root / KEPT_DIR / stage
    shutil.rmtree(folder, ignore_errors=True)
    kept = KeptOutputs(root, stage, folder)
    for out in removed_outputs(stage, root):
        if not out.cached and (root / out.path).exists():
            _hard_copy(root / out.path, folder / out.path)
            kept.uncached.append(out.path)
    try:
        yield kept
    finally:
        shutil.rmtree(folder, ignore_errors=True)
