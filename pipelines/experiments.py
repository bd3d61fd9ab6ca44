"""``anime-avatar experiments``: ``dvc exp show`` as a table that fits.

DVC gives every param (172), every dependency file (each stage's code closure: over 100) and every metric a
column, with no setting to hide any by default. This keeps the headline scores the stages write to
``metrics/`` (the generator's FID/KID, the stylizer nets' style loss, structure and colour, the translator's
KID, FID, face rate, structure and speed) and, of everything else, only the params and metrics that differ
between the rows shown; code dependencies are left out (``dvc exp show`` shows them).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from anime_avatar.artifacts.reports import SCORE_KEYS, STYLIZE_HEADLINE, TRANSLATE_HEADLINE
from anime_avatar.core.errors import UserError
from pipelines.recovery import dvc_executable

CODE_DEPENDENCIES = r"^(anime_avatar|stages|pipelines)/"


def headline_pattern() -> str:
    """The columns kept whatever the rows hold: the headline metrics, with or without the file prefix DVC adds
    when two metrics files share a key."""
    names = "|".join(re.escape(name) for name in (*SCORE_KEYS, *STYLIZE_HEADLINE, *TRANSLATE_HEADLINE))
    return rf"^(metrics/[^:]+:)?({names})$"


def exp_show_command(output: str = "table", all_commits: bool = False) -> list[str]:
    """``output``: table (DVC's own, paged in a terminal), csv or md."""
    formats = {"table": [], "csv": ["--csv"], "md": ["--md"]}
    if output not in formats:
        raise ValueError(f"output must be one of {', '.join(formats)}, got {output!r}")
    return [dvc_executable(), "exp", "show", "--only-changed", "--drop", CODE_DEPENDENCIES,
            "--keep", headline_pattern(), *formats[output], *(["--all-commits"] if all_commits else [])]  # fmt: skip


def show_experiments(workspace: Path, output: str = "table", all_commits: bool = False) -> None:
    if not (workspace / "dvc.yaml").is_file():
        raise UserError(f"{workspace} has no dvc.yaml: run this in the project (or demo/), where `dvc repro` ran")
    head = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=workspace, capture_output=True)
    if head.returncode != 0 and (workspace / ".git").exists():  # (no git at all: DVC's own message says so)
        raise UserError(
            "this git repository has no commit yet, and DVC experiments are kept against one: commit "
            "the project first (git add -A && git commit -m 'pipeline'), then `dvc exp run -S key=value`"
        )
    done = subprocess.run(exp_show_command(output, all_commits), cwd=workspace)
    if done.returncode != 0:
        raise UserError(f"`dvc exp show` failed (exit {done.returncode}): see its message above")
