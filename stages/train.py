"""train: data/train -> models/generator.pt, models/checkpoints/, metrics/train.json, plots/.

Runs alone (``python -m stages.train``) or on several processes
(``torchrun --nproc_per_node N -m stages.train``); only rank 0 logs and writes.
The nets' resolution is the training images' side (data/train/index.json).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from anime_avatar.artifacts.checkpoint import CHECKPOINT
from anime_avatar.artifacts.generator import GENERATOR, save_generator
from anime_avatar.artifacts.reports import (
    SAMPLES_DIR,
    TRAIN_METRICS,
    sample_grid_path,
    sample_steps,
    write_losses,
)
from anime_avatar.artifacts.run import RUN_FILE
from anime_avatar.artifacts.trainset import TRAIN_DIR, open_train_images
from anime_avatar.core.device import resolve_device
from anime_avatar.core.fsutil import atomic_write_bytes, atomic_write_json
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.gan.training import Hooks, train
from anime_avatar.nn.distributed import DistInfo
from anime_avatar.nn.images import grid_png
from anime_avatar.nn.layers import count_parameters
from anime_avatar.nn.precision import training_precision
from anime_avatar.ops.data_versions import data_version, data_versions
from anime_avatar.ops.stage_run import keep_and_log_sample_sheets, training_run
from anime_avatar.ops.tracking import gan_tags, params_dict

log = logging.getLogger(__name__)


def train_stage(params: Params) -> None:
    info = DistInfo.from_env()
    images = open_train_images(TRAIN_DIR)  # read in place: batches are gathered from the memory-mapped shards
    versions = data_versions()
    train_version = data_version(TRAIN_DIR)  # from the shards themselves: dvc.lock may be older than the folder
    if not info.is_main:
        train(params.model, params.train, images, CHECKPOINT, train_version, info)
        return

    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    # bf16 and float32 runs of the same params differ (README Speed): the run says which one it was.
    precision = training_precision(resolve_device(params.train.device, key="train.device"), params.train.amp)
    name = f"{params.model.arch}-{images.shape[1]}px-{params.train.steps}"
    tags = gan_tags(params) | {"precision": precision}
    run_versions = versions | {TRAIN_DIR.as_posix(): train_version}
    with training_run("train", name, params.tracking.experiment, params_dict(params), run_versions, tags,
                      RUN_FILE) as run:  # fmt: skip
        run.log_input(images, TRAIN_DIR, train_version)
        logged_grids: set[int] = set()

        def on_sample(step: int, grid: torch.Tensor) -> None:
            path = sample_grid_path(step)
            atomic_write_bytes(path, grid_png(grid))
            run.log_artifact(path, "samples")
            logged_grids.add(step)

        state = train(params.model, params.train, images, CHECKPOINT, train_version, info,
                      Hooks(lambda step, losses: run.log_metrics(losses, step), on_sample))  # fmt: skip
        save_generator(
            GENERATOR, state.config.to_dict(), state.ema.model.state_dict(), state.generator.state_dict(), state.step,
            run_id=run.run_id, data_version=train_version,
        )  # fmt: skip
        recent = state.history[-10:]
        metrics = {
            "steps": state.step,
            "loss_d": float(np.mean([h["loss_d"] for h in recent])) if recent else None,
            "loss_g": float(np.mean([h["loss_g"] for h in recent])) if recent else None,
            "seconds": round(state.seconds, 1),
            "params_g": count_parameters(state.generator),
            "params_d": count_parameters(state.discriminator),
        }
        atomic_write_json(TRAIN_METRICS, metrics)
        write_losses(state.history)
        run.log_metrics({"train_seconds": state.seconds})
        keep_and_log_sample_sheets(run, sample_steps(params.train.steps, params.train.sample_every), SAMPLES_DIR,
                                   "samples", logged_grids)  # fmt: skip
        tracking = params.tracking
        run.log_model("generator", GENERATOR, tracking.model_name if tracking.register_model else None)
    log.info("generator saved to %s (MLflow run %s)", GENERATOR, run.run_id)


if __name__ == "__main__":
    run_stage("train", train_stage)
