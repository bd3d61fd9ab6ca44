"""stylize_train: data/faces (content) + stylize.style_path (styles) -> models/stylizer.pt (attention and
AdaIN nets), models/stylizer_checkpoints/, metrics/stylize_train.json, plots/stylize_losses.csv.

Resumes from its checkpoint when the params and data match; logged to MLflow and registered as the
stylizer model (tracking.stylizer_model_name).
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import numpy as np

from anime_avatar.artifacts.faces import FACES_DIR, FaceFiles
from anime_avatar.artifacts.reports import STYLIZE_LOSSES_CSV, STYLIZE_TRAIN_METRICS
from anime_avatar.artifacts.stylizer import STYLIZER, STYLIZER_CHECKPOINT, STYLIZER_RUN_FILE
from anime_avatar.core.fsutil import atomic_write_json, write_csv
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.data.image_sets import load_image_set, spread
from anime_avatar.ops.data_versions import data_version, path_version
from anime_avatar.ops.stage_run import training_run
from anime_avatar.style.data import StyleBatches
from anime_avatar.style.images import resize_short
from anime_avatar.style.model_file import save_stylizer
from anime_avatar.style.training import StyleTrainState, loss_parts, train_stylizers

log = logging.getLogger(__name__)


def stylize_train(params: Params) -> None:
    cfg = params.stylize
    files = FaceFiles(FACES_DIR)
    size = files.image_size  # only the faces it trains on are read (an empty set stays (0, S, S, 3))
    faces = np.array(spread(files, cfg.max_faces), dtype=np.uint8).reshape(-1, size, size, 3)
    # Each style image is cut to the size the batches use as it is read: a folder of large paintings never sits in
    # memory at full resolution.
    styles = load_image_set(Path(cfg.style_path), "stylize.style_path", cfg.max_styles,
                            prepare=lambda image: resize_short(image, 2 * cfg.image_size))  # fmt: skip
    styles = [image for _, image in styles]
    log.info("%d faces and %d style images at %d px", len(faces), len(styles), cfg.image_size)
    batches = StyleBatches(faces, styles, cfg.image_size)
    versions = {FACES_DIR.as_posix(): data_version(FACES_DIR), "styles": path_version(Path(cfg.style_path))}
    version = ";".join(f"{k}={v}" for k, v in versions.items())

    name = f"stylizer-{cfg.features}-{cfg.image_size}px-{cfg.steps}"
    logged = {"stylize": cfg.model_dump(mode="json")}
    with training_run("stylize_train", name, params.tracking.experiment, logged, versions,
                      {"features": cfg.features}, STYLIZER_RUN_FILE) as run:  # fmt: skip
        run.log_input(faces, FACES_DIR, versions[FACES_DIR.as_posix()])  # (the styles: their version tag)
        state = train_stylizers(cfg, batches, STYLIZER_CHECKPOINT, version,
                                on_log=lambda step, losses: run.log_metrics(losses, step))  # fmt: skip
        heads = {method: net.head for method, net in state.nets.items()}
        save_stylizer(STYLIZER, heads, state.step, cfg.image_size, run.run_id, version)
        parts = loss_parts(cfg)
        atomic_write_json(STYLIZE_TRAIN_METRICS, train_metrics(state, parts))
        fields = ["step", *(f"{m}_{part}" for m in state.nets for part in parts)]
        write_csv(STYLIZE_LOSSES_CSV, [{k: h.get(k) for k in fields} for h in state.history], fields)
        run.log_metrics({"train_seconds": state.seconds})
        tracking = params.tracking
        run.log_model("stylizer", STYLIZER, tracking.stylizer_model_name if tracking.register_model else None)
    log.info("stylizer saved to %s (MLflow run %s)", STYLIZER, run.run_id)


def train_metrics(state: StyleTrainState, parts_logged: tuple[str, ...]) -> dict:
    """Per net: its losses (``parts_logged``) averaged over the last ten logged steps, and its trainable
    parameters."""
    recent = state.history[-10:]
    metrics: dict = {"steps": state.step, "seconds": round(state.seconds, 1)}
    for method, net in state.nets.items():
        parts = {p: round(statistics.fmean(h[f"{method}_{p}"] for h in recent), 5) for p in parts_logged if recent}
        metrics[method] = {**parts, "params": sum(p.numel() for p in net.head.parameters())}
    return metrics


if __name__ == "__main__":
    run_stage("stylize_train", stylize_train)
