"""``anime-avatar runs``: the training runs in MLflow, side by side (table, CSV, plot)."""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.fsutil import atomic_write_bytes
from anime_avatar.ops.data_versions import data_version_tag
from anime_avatar.ops.registry import champion, fid_measure

log = logging.getLogger(__name__)

COLUMNS = ("run_id", "start", "status", "data_version", "arch", "steps", "fid_on", "fid", "kid", "champion")


@dataclass(frozen=True)
class RunRow:
    run_id: str
    start: str  # UTC, minutes
    status: str  # MLflow's: RUNNING, FINISHED, FAILED (an error), KILLED (interrupted, or its process vanished)
    data_version: str  # the DVC hash of data/train
    arch: str
    steps: int | None
    fid_on: str  # how its FID was measured: faces version/number of samples ("" when not recorded)
    fid: float | None
    kid: float | None
    champion: bool


def experiment_id(client, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise UserError(f"no MLflow experiment {experiment!r} at {client.tracking_uri}: run the pipeline first")
    return found.experiment_id


def search_training_runs(client, experiment: str) -> list:  # -> list[mlflow.entities.Run]
    """Every run of the train stage in an experiment (by id), newest first."""
    return client.search_runs([experiment], "tags.stage = 'train'", max_results=50_000)


def resolve_run_id(client, experiment: str, given: str) -> str:
    """The full id of the training run whose id starts with ``given`` (the tables show the first 12 characters);
    ``given`` itself when it is a whole id or matches none (the lookup then says there is no such run)."""
    if len(given) >= 32:
        return given
    matches = [run.info.run_id for run in search_training_runs(client, experiment_id(client, experiment))
               if run.info.run_id.startswith(given)]  # fmt: skip
    if len(matches) > 1:
        listed = ", ".join(match[:16] for match in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UserError(f"run id {given!r} begins {len(matches)} training runs' ids ({listed}): give more of it")
    return matches[0] if matches else given


def training_runs(client, experiment: str, model_name: str) -> list[RunRow]:
    """Every run of the train stage in the experiment, with its scores and whether it holds the champion."""
    runs = search_training_runs(client, experiment_id(client, experiment))
    holder = champion(client, model_name)
    rows = []
    for run in runs:
        steps = run.data.params.get("train.steps")
        scored = "fid" in run.data.metrics
        measured = "/".join(part or "?" for part in fid_measure(run.data.tags)) if scored else ""
        rows.append(
            RunRow(
                run_id=run.info.run_id,
                start=datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
                status=run.info.status,
                data_version=run.data.tags.get(data_version_tag("data/train"), ""),
                arch=run.data.params.get("model.arch", ""),
                steps=int(steps) if steps and steps.isdigit() else None,
                fid_on=measured,
                fid=run.data.metrics.get("fid"),
                kid=run.data.metrics.get("kid_mean"),
                champion=holder is not None and holder.run_id == run.info.run_id,
            )
        )
    return rows


def settle_runs(client, experiment: str) -> None:
    """Send what earlier runs kept while the tracking store was away, and mark runs whose process is gone
    KILLED, so that the table shows every run complete and in its true state (a warning if the store
    takes no writes: the table is shown all the same)."""
    from anime_avatar.ops.run_journal import pending_runs, recover
    from anime_avatar.ops.tracking_store import artifacts_elsewhere

    ids, uri = [experiment_id(client, experiment)], client.tracking_uri
    # Kept records of a copied store's runs would send their files into the other project (the stages refuse
    # such a store): they stay.
    location = client.get_experiment(ids[0]).artifact_location
    problem = artifacts_elsewhere(uri, location) if pending_runs(uri) else None
    if problem:
        log.warning("the records earlier runs kept were not sent: %s", problem)
    try:
        recover(uri, ids, client=client, send=not problem)
    except Exception as err:  # e.g. a read-only mlflow.db
        log.warning("could not settle earlier runs (%s)", first_line(err))


def sort_rows(rows: list[RunRow], by: str) -> list[RunRow]:
    """By FID or KID (lowest first, unevaluated runs last) or by start time (newest first). Scores are ranked
    within each way they were measured (``fid_on``: other faces or sample counts do not compare), the way of the
    newest evaluated run first."""
    newest_first = sorted(rows, key=lambda r: r.start, reverse=True)
    if by == "start":
        return newest_first
    measures = list(dict.fromkeys(r.fid_on for r in newest_first if r.fid is not None))
    return sorted(rows, key=lambda r: (getattr(r, by) is None, _rank(measures, r.fid_on), getattr(r, by) or 0.0))


def _rank(measures: list[str], measure: str) -> int:
    return measures.index(measure) if measure in measures else len(measures)


def _cell(row: RunRow, column: str) -> str:
    value = getattr(row, column)
    if column == "run_id":
        return value[:12]
    if column == "data_version":
        return value.split(":", 1)[-1][:10]  # md5:… (DVC) or sha256:… (a folder digest)
    if column == "fid_on":  # md5:<faces>.dir/<samples>
        faces, _, samples = value.rpartition("/")
        return f"{faces.split(':', 1)[-1][:8]}/{samples}" if value else "-"
    if column == "champion":
        return "*" if value else ""
    if value is None:
        return "-"
    if column == "fid":
        return f"{value:.2f}"
    if column == "kid":
        return f"{value:.4f}"
    return str(value)


def format_table(rows: list[RunRow]) -> str:
    if not rows:
        return "no training runs yet: run the pipeline (dvc repro, or anime-avatar pipeline)"
    cells = [list(COLUMNS)] + [[_cell(r, c) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    table = "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)
    if len({r.fid_on for r in rows if r.fid is not None}) > 1:
        table += ("\nFIDs measured against other faces or on other sample counts (fid_on: faces version/samples) do "
                  "not compare: `--sort fid` ranks each group apart, the newest run's first")  # fmt: skip
    return table


def to_csv(rows: list[RunRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return out.getvalue()


def fid_by_steps(rows: list[RunRow]) -> dict[str, list[tuple[int, float]]]:
    """Per data version trained for two or more step counts: (steps, FID), the best FID at each count, in step
    order. That is FID over training: each training (a resumed one, `dvc exp run -S train.steps=4000`, included)
    is a run of its own, evaluated once at the step it reached, so one run's FID history is a single point."""
    by_data: dict[str, dict[int, float]] = {}
    for row in rows:
        if row.fid is not None and math.isfinite(row.fid) and row.steps is not None:
            points = by_data.setdefault(row.data_version, {})
            points[row.steps] = min(row.fid, points.get(row.steps, math.inf))
    return {version: sorted(points.items()) for version, points in by_data.items() if len(points) > 1}


def plot(rows: list[RunRow], histories: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """FID per run (the champion in orange) and, where a data version was trained for several step counts, FID
    against steps (``histories``: :func:`fid_by_steps`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.fid is not None and math.isfinite(r.fid)]
    if not scored:
        raise UserError("no run has a FID yet: run the evaluate stage (dvc repro evaluate)")
    fig, axes = plt.subplots(1, 2 if histories else 1, figsize=(11 if histories else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.bar(
        range(len(scored)), [r.fid for r in scored], color=["tab:orange" if r.champion else "tab:blue" for r in scored]
    )
    ax.set_xticks(range(len(scored)), [r.run_id[:8] for r in scored], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("FID (lower is better)")
    ax.set_title("FID per training run (orange: champion)")
    if histories:
        ax = axes[0][1]
        for version, points in histories.items():
            label = f"data {version.removeprefix('md5:')[:10]}"
            ax.plot([s for s, _ in points], [f for _, f in points], marker="o", label=label)
        ax.set_xlabel("training step")
        ax.set_ylabel("FID")
        ax.set_title("FID over training")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    try:
        atomic_write_bytes(path, png.getvalue())
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
