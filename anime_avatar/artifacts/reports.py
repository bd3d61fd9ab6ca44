"""Metrics, plots and reports: the files DVC compares across experiments (``dvc metrics/plots``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from anime_avatar.core.fsutil import atomic_write_json, write_csv

VALIDATION_REPORT = Path("reports/validation.json")
DATA_DOCS_DIR = Path("reports/data_docs")
TRAIN_METRICS = Path("metrics/train.json")
LOSSES_CSV = Path("plots/losses.csv")
LOSS_FIELDS = ("step", "loss_d", "loss_g")
SAMPLES_DIR = Path("plots/samples")
EVAL_METRICS = Path("metrics/eval.json")
SAMPLES_PNG = Path("reports/samples.png")
SCORE_KEYS = ("fid", "kid_mean", "kid_std")
STYLIZE_TRAIN_METRICS = Path("metrics/stylize_train.json")
STYLIZE_LOSSES_CSV = Path("plots/stylize_losses.csv")
STYLIZE_METRICS = Path("metrics/stylize.json")  # the headline scores (STYLIZE_HEADLINE): what `dvc exp show` shows
STYLIZE_DETAILS = Path("reports/stylize.json")  # every number of the evaluation
STYLIZE_HEADLINE = tuple(
    f"{net}.{key}" for net in ("attention", "adain") for key in ("style_loss", "structure", "colour")
)  # the trained nets' style loss and the two scores nothing optimises
STYLIZE_TRADEOFF_CSV = Path("plots/stylize_tradeoff.csv")  # the nets' content/style loss at each style strength
TRADEOFF_FIELDS = ("method", "alpha", "content_loss", "style_loss")
STYLIZE_SHEET = Path("reports/stylize.png")  # content | style | each method, one row per pair
TRANSLATE_TRAIN_METRICS = Path("metrics/translate_train.json")
TRANSLATE_LOSSES_CSV = Path("plots/translate_losses.csv")
TRANSLATE_LOSS_FIELDS = ("step", "loss_g", "loss_d", "adv", "cycle", "identity", "cam", "mask")
TRANSLATE_SAMPLES_DIR = Path("plots/translate_samples")  # photo | anime | cycle | attention sheets by step
TRANSLATE_METRICS = Path("metrics/translate.json")  # the headline scores (TRANSLATE_HEADLINE)
TRANSLATE_DETAILS = Path("reports/translate.json")  # every number, the references' rows included
TRANSLATE_HEADLINE = ("translated.kid_x100", "translated.fid", "translated.face_rate", "translated.structure",
                      "seconds_per_avatar")  # fmt: skip
TRANSLATE_SHEET = Path("reports/translate.png")  # test photo | translation | attention, one column per photo


def sample_grid_path(step: int) -> Path:
    """The fixed-latent sample grid of one training step."""
    return SAMPLES_DIR / f"step-{step:07d}.png"


def sample_steps(steps: int, every: int) -> list[int]:
    """The steps a run of ``steps`` steps draws a sample grid at (every ``every`` steps, and the last)."""
    return sorted({*range(every, steps + 1, every), steps})


def prune_sample_grids(keep: list[int], folder: Path = SAMPLES_DIR) -> dict[int, Path]:
    """Delete the grids (or translation sheets) in ``folder`` of steps not in ``keep`` (left by another run);
    the remaining ones by step. Their folders persist between runs, so a resumed run keeps the ones made by
    the process it resumes."""
    kept = {}
    for path in sorted(folder.glob("step-*.png")) if folder.is_dir() else []:
        step = int(path.stem.removeprefix("step-")) if path.stem.removeprefix("step-").isdigit() else -1
        if step in keep:
            kept[step] = path
        else:
            path.unlink()
    return kept


def headline(metrics: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The entries of ``metrics`` named by dotted ``keys`` ("attention.structure"), nested as in ``metrics``;
    a key the run did not produce (a method not evaluated) is left out."""
    picked: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        source: Any = metrics
        for part in parents:
            source = source.get(part) if isinstance(source, Mapping) else None
        if isinstance(source, Mapping) and leaf in source:
            target = picked
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = source[leaf]
    return picked


def write_metrics_and_details(metrics: dict[str, Any], headline_keys: Iterable[str], metrics_path: Path,
                              details_path: Path) -> None:  # fmt: skip
    """Every number to ``details_path`` and the headline to ``metrics_path``, the DVC metric: `dvc exp show`
    has a column per metric of every experiment, and the details of a style or translation evaluation (a
    hundred numbers) would bury the scores people compare."""
    atomic_write_json(details_path, metrics)
    atomic_write_json(metrics_path, headline(metrics, headline_keys))


def write_losses(history: list[dict[str, float]]) -> None:
    write_csv(LOSSES_CSV, history, LOSS_FIELDS)


def write_eval_metrics(metrics: dict[str, Any]) -> None:
    atomic_write_json(EVAL_METRICS, metrics)


def read_eval_metrics(root: Path = Path()) -> dict[str, Any]:
    """metrics/eval.json as written (empty when the evaluate stage has not run)."""
    path = root / EVAL_METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


def read_scores(root: Path = Path()) -> dict[str, float]:
    """FID and KID of the current generator (empty when the evaluate stage has not run)."""
    path = root / EVAL_METRICS
    if not path.is_file():
        return {}
    scores = json.loads(path.read_text())
    return {k: float(scores[k]) for k in SCORE_KEYS if k in scores}
