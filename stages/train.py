"""train: data/train -> models/generator.pt, models/checkpoints/, metrics/train.json, plots/.

Runs alone (``python -m stages.train``) or on several processes
(``torchrun --nproc_per_node N -m stages.train``); only rank 0 logs and writes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from anime_avatar import layout
from anime_avatar.augment import load_train_images
from anime_avatar.errors import UserError
from anime_avatar.fsutil import atomic_write_bytes, atomic_write_json, write_csv
from anime_avatar.layout import CHECKPOINT, GENERATOR
from anime_avatar.nets import count_parameters
from anime_avatar.params import Params
from anime_avatar.stage import run_stage
from anime_avatar.tracking import (
    data_versions,
    flatten,
    flow_context,
    folder_digest,
    mlflow_client,
    params_dict,
    run_tags,
    write_run_file,
)
from anime_avatar.training import (
    DistInfo,
    Hooks,
    TrainingInterrupted,
    atomic_torch_save,
    generator_payload,
    grid_png,
    plain_generator,
    train,
)

log = logging.getLogger(__name__)

TRAIN_METRICS = Path("metrics/train.json")
LOSSES = Path("plots/losses.csv")
SAMPLES = Path("plots/samples")


def load_images(params: Params) -> np.ndarray:
    if not (layout.TRAIN_DIR / layout.TRAIN_INDEX).is_file():
        raise UserError(f"{layout.TRAIN_DIR} is missing: run the augment stage first (dvc repro augment)")
    images = np.asarray(load_train_images(layout.TRAIN_DIR, mmap=False))
    size = params.detect.image_size
    if images.shape[1:] != (size, size, 3):
        raise UserError(f"{layout.TRAIN_DIR} holds {images.shape[1:]} images, not {size}x{size}x3: re-run augment")
    return images


def train_stage(params: Params) -> None:
    info = DistInfo.from_env()
    images = load_images(params)
    versions = data_versions()
    data_version = versions.get("data/train") or folder_digest(layout.TRAIN_DIR)
    if not info.is_main:
        train(params, images, CHECKPOINT, data_version, info)
        return

    mlflow = mlflow_client()
    mlflow.set_experiment(params.tracking.experiment)
    SAMPLES.mkdir(parents=True, exist_ok=True)
    parent_run_id, flow_tags = flow_context()
    with mlflow.start_run(parent_run_id=parent_run_id) as run:
        mlflow.set_tags(run_tags(params, "train", versions | {"data/train": data_version}) | flow_tags)
        mlflow.log_params(flatten(params_dict(params)))

        def on_log(step: int, losses: dict[str, float]) -> None:
            mlflow.log_metrics(losses, step=step)

        def on_sample(step: int, grid: torch.Tensor) -> None:
            path = SAMPLES / f"step-{step:07d}.png"
            atomic_write_bytes(path, grid_png(grid))
            mlflow.log_artifact(str(path), artifact_path="samples")

        started = time.perf_counter()
        try:
            state = train(params, images, CHECKPOINT, data_version, info, Hooks(on_log, on_sample))
        except TrainingInterrupted:
            mlflow.set_tag("interrupted", "true")
            raise
        seconds = time.perf_counter() - started
        cfg = params.net_config()
        payload = generator_payload(state, cfg, {"run_id": run.info.run_id, "data_version": data_version})
        atomic_torch_save(GENERATOR, payload)
        recent = state.history[-10:]
        metrics = {
            "steps": state.step,
            "loss_d": float(np.mean([h["loss_d"] for h in recent])) if recent else None,
            "loss_g": float(np.mean([h["loss_g"] for h in recent])) if recent else None,
            "seconds": round(seconds, 1),
            "params_g": count_parameters(state.generator),
            "params_d": count_parameters(state.discriminator),
        }
        atomic_write_json(TRAIN_METRICS, metrics)
        write_csv(LOSSES, state.history, ("step", "loss_d", "loss_g"))
        mlflow.log_metrics({"train_seconds": seconds})
        mlflow.log_artifact(str(GENERATOR))
        log_generator_model(mlflow, plain_generator(state.ema.model), params)
        write_run_file(run.info.run_id, run.info.experiment_id)
    log.info("generator saved to %s (MLflow run %s)", GENERATOR, run.info.run_id)


def log_generator_model(mlflow, generator: torch.nn.Module, params: Params) -> None:
    """Log the EMA generator as an MLflow model and register it (when tracking.register_model)."""
    import mlflow.pytorch

    mlflow.pytorch.log_model(
        generator,
        name="generator",
        registered_model_name=params.tracking.model_name if params.tracking.register_model else None,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        code_paths=[str(Path(__file__).resolve().parents[1] / "anime_avatar")],
        # A pickled module keeps z_dim/resolution and loads as the same class; pt2 would need tracing.
        serialization_format="pickle",
    )


if __name__ == "__main__":
    run_stage("train", train_stage)
