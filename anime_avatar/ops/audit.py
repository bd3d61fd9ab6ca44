"""``anime-avatar audit``: which data made which model.

Data versions come from ``dvc.lock`` as committed in git (plus the workspace's, when it
differs), runs from MLflow (every training run is tagged with the DVC hashes of
``data/raw``, ``data/faces`` and ``data/train``), and the manifest of the raw sources from
the DVC cache, by the hash the run recorded.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from anime_avatar.artifacts.raw import MANIFEST
from anime_avatar.core.errors import UserError
from anime_avatar.ops.data_versions import DATA_DIRS, DataVersion, data_version_tag, lock_data
from anime_avatar.ops.runs import search_training_runs
from anime_avatar.ops.tracking import GIT_COMMIT_TAG, GIT_DIRTY_TAG

WORKSPACE = "workspace"


@dataclass
class LockVersion:
    commit: str  # a git commit, or "workspace" for an uncommitted dvc.lock
    date: str
    subject: str
    data: dict[str, DataVersion]


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    fid: float | None
    tags: dict[str, str]
    versions: tuple[str, ...] = ()  # registered model versions made from it, "3 (champion)"


@dataclass
class Lineage:
    run: RunRecord
    data: dict[str, str]  # folder -> version tag
    data_params: dict[str, str]
    commits: list[LockVersion] = field(default_factory=list)
    manifest: list[dict[str, str]] | None = None
    manifest_problem: str = ""


def _git(root: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except OSError as err:
        raise UserError(f"git is needed for the audit: {err}") from None
    if proc.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()}")
    return proc.stdout


def lock_history(root: Path) -> list[LockVersion]:
    """Every commit that changed dvc.lock (newest first), and the workspace's dvc.lock if it differs."""
    history: list[LockVersion] = []
    # A repository with no commit yet has no history to read (git log would fail); the workspace's lock still counts.
    has_commits = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True)
    if has_commits.returncode == 0:
        log = _git(root, "log", "--format=%H%x09%cs%x09%s", "--", "dvc.lock")
        for line in log.splitlines():
            commit, date, subject = line.split("\t", 2)
            history.append(LockVersion(commit, date, subject, _committed_lock(root, commit)))
    current = root / "dvc.lock"
    if current.is_file():
        data = lock_data(current.read_text())  # a merge conflict here is the user's to resolve: one line
        if data and (not history or data != history[0].data):
            history.insert(0, LockVersion(WORKSPACE, "", "dvc.lock not committed", data))
    return history


def _committed_lock(root: Path, commit: str) -> dict[str, DataVersion]:
    """The data versions of dvc.lock at ``commit`` (none where it was deleted, or committed with a merge conflict).

    ``./dvc.lock`` is the workspace's own (git reads ``commit:path`` from the repository's root, so a DVC project in
    a subfolder of its repository, ``dvc init --subdir``, would otherwise find no lock in any commit)."""
    spec = f"{commit}:./dvc.lock"
    if subprocess.run(["git", "cat-file", "-e", spec], cwd=root, capture_output=True).returncode != 0:
        return {}
    try:
        return lock_data(_git(root, "show", spec), f"dvc.lock of commit {commit[:10]}")
    except UserError:
        return {}


def run_records(client, experiment_id: str, model_name: str) -> list[RunRecord]:
    """Every training run of the experiment, with the model versions registered from it."""
    from mlflow.exceptions import MlflowException

    by_run: dict[str, list[str]] = {}
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
        aliases = client.get_registered_model(model_name).aliases if versions else {}
    except MlflowException:
        versions, aliases = [], {}
    for v in versions:
        marks = [a for a, number in aliases.items() if str(number) == str(v.version)]
        by_run.setdefault(v.run_id, []).append(str(v.version) + (f" ({', '.join(marks)})" if marks else ""))
    runs = search_training_runs(client, experiment_id)
    return [
        RunRecord(r.info.run_id, r.data.metrics.get("fid"), dict(r.data.tags), tuple(by_run.get(r.info.run_id, ())))
        for r in runs
    ]


def _short(version: DataVersion | None) -> str:
    if version is None:
        return "-"
    files = f" ({version.nfiles} files)" if version.nfiles is not None else ""
    return version.md5.removesuffix(".dir")[:10] + files


def _run_line(record: RunRecord) -> str:
    fid = f"FID {record.fid:.2f}" if record.fid is not None else "no FID"
    models = f", model version {', '.join(record.versions)}" if record.versions else ""
    return f"{record.run_id[:12]} ({fid}{models})"


def _by_data_version(history: list[LockVersion]) -> list[tuple[LockVersion, list[LockVersion]]]:
    """The history as one entry per data version: each newest commit, with the consecutive earlier commits whose
    dvc.lock changed only other stages' outputs (a retrained model, a new metric), which would repeat its block."""
    groups: list[tuple[LockVersion, list[LockVersion]]] = []
    for entry in history:
        data = {folder: entry.data.get(folder) for folder in DATA_DIRS}
        if groups and {folder: groups[-1][0].data.get(folder) for folder in DATA_DIRS} == data:
            groups[-1][1].append(entry)
        else:
            groups.append((entry, []))
    return groups


def format_history(history: list[LockVersion], runs: list[RunRecord]) -> str:
    """One block per dvc.lock version: its data hashes and file counts, and the runs trained on it."""
    if not history:
        return "no dvc.lock yet (in git or in the workspace): run the pipeline and commit dvc.lock"
    lines = []
    matched: set[str] = set()
    for entry, earlier in _by_data_version(history):
        label = entry.commit if entry.commit == WORKSPACE else entry.commit[:10]
        lines.append(f"{label}  {entry.date}  {entry.subject}".rstrip())
        if earlier:
            oldest, commits = earlier[-1], f"{len(earlier)} earlier commit{'s' * (len(earlier) > 1)}"
            lines.append(f"    (and {commits} with the same data, back to {oldest.commit[:10]} {oldest.date})")
        for folder in DATA_DIRS:
            lines.append(f"    {folder:<11} {_short(entry.data.get(folder))}")
        train = entry.data.get("data/train")
        trained = [r for r in runs if train and r.tags.get(data_version_tag("data/train")) == train.tag]
        matched.update(r.run_id for r in trained)
        lines.append("    runs:       " + ("; ".join(_run_line(r) for r in trained) if trained else "none"))
    orphans = [r for r in runs if r.run_id not in matched]
    if orphans:
        lines.append("runs on data versions found in no dvc.lock above (commit dvc.lock after each data change):")
        train_tag = data_version_tag("data/train")
        lines.extend(f"    {_run_line(r)}  data/train {r.tags.get(train_tag, '?')}" for r in orphans)
    return "\n".join(lines)


def raw_manifest(root: Path, raw_version: str) -> list[dict[str, str]]:
    """The manifest.csv of ``data/raw`` at a version (``md5:<hash>.dir``), read from the DVC cache."""
    from dvc.repo import Repo

    if not raw_version.startswith("md5:") or not raw_version.endswith(".dir"):
        raise UserError(f"data version {raw_version!r} is not a DVC directory hash: it was never in dvc.lock")
    with Repo(str(root)) as repo:
        cache = repo.cache.local
        listing = Path(cache.oid_to_path(raw_version.removeprefix("md5:")))
        if not listing.is_file():
            raise UserError(
                f"data/raw {raw_version} is not in the local DVC cache: fetch it first (dvc fetch, or dvc pull)"
            )
        entries = {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())}
        if MANIFEST not in entries:
            raise UserError(f"data/raw {raw_version} holds no {MANIFEST}")
        manifest = Path(cache.oid_to_path(entries[MANIFEST]))
        if not manifest.is_file():
            raise UserError(f"{MANIFEST} of data/raw {raw_version} is not in the local DVC cache: dvc fetch first")
    return list(csv.DictReader(io.StringIO(manifest.read_text())))


def lineage(client, root: Path, run_id: str, model_name: str) -> Lineage:
    """Which data made this run's model: data hashes, the commits that recorded them, the raw manifest."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id!r} in {client.tracking_uri} (see anime-avatar runs)") from None
    records = {r.run_id: r for r in run_records(client, run.info.experiment_id, model_name)}
    record = records.get(run_id) or RunRecord(run_id, run.data.metrics.get("fid"), dict(run.data.tags))
    tags = {folder: data_version_tag(folder) for folder in DATA_DIRS}
    data = {folder: run.data.tags[tag] for folder, tag in tags.items() if tag in run.data.tags}
    result = Lineage(record, data, {k: v for k, v in run.data.params.items() if k.startswith("data.")})
    train = data.get("data/train")
    result.commits = [
        entry for entry in lock_history(root)
        if train and "data/train" in entry.data and entry.data["data/train"].tag == train
    ]  # fmt: skip
    if "data/raw" not in data:
        result.manifest_problem = "the run recorded no data/raw version (was dvc.lock missing when it trained?)"
    else:
        try:
            result.manifest = raw_manifest(root, data["data/raw"])
        except UserError as err:
            result.manifest_problem = str(err)
    return result


def git_source(tags: dict[str, str]) -> str:
    """The run's commit (MLflow's tag; ``git_commit`` in runs logged before it), marked when params/code were dirty."""
    commit = tags.get(GIT_COMMIT_TAG) or tags.get("git_commit", "unknown")
    return f"{commit} (with uncommitted changes)" if tags.get(GIT_DIRTY_TAG) == "true" else commit


def format_lineage(item: Lineage, show_files: int = 10) -> str:
    tags = item.run.tags
    fid = f"FID {item.run.fid:.2f}" if item.run.fid is not None else "no FID"
    lines = [
        f"run {item.run.run_id}  ({fid})",
        f"  model versions: {', '.join(item.run.versions) or 'none registered'}",
        f"  git commit:     {git_source(tags)}",
        f"  trained:        {tags.get('arch', '?')} on data/train {item.data.get('data/train', '?')}",
    ]
    for folder in DATA_DIRS:
        lines.append(f"  {folder:<15} {item.data.get(folder, 'not recorded')}")
    if item.data_params:
        lines.append("  data params:    " + ", ".join(f"{k}={v}" for k, v in sorted(item.data_params.items()) if v))
    commits = ", ".join(c.commit[:10] for c in item.commits)
    lines.append(f"  dvc.lock:       {commits or 'in no committed dvc.lock (commit dvc.lock after each data change)'}")
    if item.manifest is None:
        lines.append(f"  raw manifest:   unavailable: {item.manifest_problem}")
    else:
        sources = Counter(row.get("source", "?") for row in item.manifest)
        licenses = Counter(row.get("license", "") or "unspecified" for row in item.manifest)
        total = sum(int(row.get("bytes", 0) or 0) for row in item.manifest)
        lines.append(f"  raw manifest:   {len(item.manifest)} files, {total / 1e6:.1f} MB")
        lines.append("    sources:  " + ", ".join(f"{s} ({n})" for s, n in sources.most_common()))
        lines.append("    licences: " + ", ".join(f"{s} ({n})" for s, n in licenses.most_common()))
        for row in item.manifest[:show_files]:
            lines.append(f"    {row.get('sha256', '')[:12]}  {row.get('relpath', '')}")
        if len(item.manifest) > show_files:
            lines.append(f"    ... {len(item.manifest) - show_files} more (--manifest FILE writes them all)")
    return "\n".join(lines)
