"""train: data/train -> models/generator.pt, models/checkpoints/, metrics/train.json, plots/.

Runs alone (``python -m stages.train``) or on several processes
(``torchrun --nproc_per_node N -m stages.train``); only rank 0 logs and writes.
The nets' resolution is the training images' side (data/train/index.json).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from anime_avatar.artifacts.checkpoint import CHECKPOINT
from anime_avatar.artifacts.generator import GENERATOR, save_generator
from anime_avatar.artifacts.reports import (
    SAMPLES_DIR,
    TRAIN_METRICS,
    prune_sample_grids,
    sample_grid_path,
    sample_steps,
    write_losses,
)
from anime_avatar.artifacts.run import RunRecord, write_run_file
from anime_avatar.artifacts.trainset import TRAIN_DIR, load_train_images
from anime_avatar.core.device import resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_bytes, atomic_write_json
from anime_avatar.core.loops import TrainingInterrupted
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.gan.distributed import DistInfo
from anime_avatar.gan.inference import grid_png
from anime_avatar.gan.nets import count_parameters
from anime_avatar.gan.training import Hooks, train, training_precision
from anime_avatar.ops.data_versions import data_versions, folder_digest
from anime_avatar.ops.run_journal import RunJournal, journaled_run, recover
from anime_avatar.ops.tracking import (
    flatten,
    flow_context,
    log_training_data,
    mlflow_client,
    params_dict,
    run_name,
    run_tags,
    tracking_uri,
)
from anime_avatar.ops.tracking_store import check_tracking_store, fail_fast_http

log = logging.getLogger(__name__)


def tracking_ready(uri: str, experiment: str):  # -> mlflow
    """The tracking store checked in seconds (before anything is trained), earlier runs' leftovers settled,
    and the experiment set: the mlflow module, ready to start the run."""
    check_tracking_store(uri)
    fail_fast_http()  # a server that goes away later costs a refused connection, not minutes of retries
    mlflow = mlflow_client(uri)
    try:
        experiment_id = mlflow.set_experiment(experiment).experiment_id
    except Exception as err:  # e.g. an experiment of that name was deleted
        raise UserError(f"tracking.experiment {experiment!r}: {str(err).strip().splitlines()[0]}") from None
    recover(uri, [experiment_id])
    return mlflow


def train_stage(params: Params) -> None:
    info = DistInfo.from_env()
    uri = tracking_uri()
    mlflow = tracking_ready(uri, params.tracking.experiment) if info.is_main else None
    images = np.asarray(load_train_images(TRAIN_DIR, mmap=False))
    versions = data_versions()
    data_version = versions.get(TRAIN_DIR.as_posix()) or folder_digest(TRAIN_DIR)
    if not info.is_main:
        train(params.model, params.train, images, CHECKPOINT, data_version, info)
        return

    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    parent_run_id, flow_tags = flow_context()
    killed = (TrainingInterrupted, KeyboardInterrupt)
    name = run_name(params.model.arch, images.shape[1], params.train.steps)
    with journaled_run(mlflow, uri, killed, run_name=name, parent_run_id=parent_run_id) as (run, journal):
        # bf16 and float32 runs of the same params differ (README Speed): the run says which one it was.
        precision = training_precision(resolve_device(params.train.device, key="train.device"), params.train.amp)
        tags = run_tags(params, "train", versions | {TRAIN_DIR.as_posix(): data_version})
        journal.set_tags(tags | flow_tags | {"precision": precision})
        journal.log_params(flatten(params_dict(params)))
        try:
            log_training_data(mlflow, images, TRAIN_DIR, data_version)
        except Exception as err:  # the run page's Datasets entry only: never worth stopping the training for
            log.warning("MLflow did not take the training-set input (%s): training goes on", err)
        logged_grids: set[int] = set()

        def on_log(step: int, losses: dict[str, float]) -> None:
            journal.log_metrics(losses, step=step)

        def on_sample(step: int, grid: torch.Tensor) -> None:
            path = sample_grid_path(step)
            atomic_write_bytes(path, grid_png(grid))
            journal.log_artifact(path, artifact_path="samples")
            logged_grids.add(step)

        started = time.perf_counter()
        try:
            state = train(params.model, params.train, images, CHECKPOINT, data_version, info, Hooks(on_log, on_sample))
        except TrainingInterrupted:
            journal.set_tags({"interrupted": "true"})
            raise
        seconds = time.perf_counter() - started
        save_generator(
            GENERATOR, state.config, state.ema.model.state_dict(), state.generator.state_dict(), state.step,
            run_id=run.info.run_id, data_version=data_version,
        )  # fmt: skip
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
        write_losses(state.history)
        write_run_file(RunRecord(run.info.run_id, run.info.experiment_id, uri))
        journal.log_metrics({"train_seconds": seconds})
        log_earlier_grids(journal, params.train.steps, params.train.sample_every, logged_grids)
        tracking = params.tracking
        journal.log_model(GENERATOR, tracking.model_name if tracking.register_model else None)
    log.info("generator saved to %s (MLflow run %s)", GENERATOR, run.info.run_id)


def log_earlier_grids(journal: RunJournal, steps: int, every: int, logged: set[int]) -> None:
    """Keep the grids of this run only (plots/samples persists, so a resumed run keeps the grids of the
    process it resumes), and log to this MLflow run the ones an earlier process made."""
    for step, path in prune_sample_grids(sample_steps(steps, every)).items():
        if step not in logged:
            journal.log_artifact(path, artifact_path="samples")


if __name__ == "__main__":
    run_stage("train", train_stage)
