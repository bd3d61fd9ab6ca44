"""evaluate: FID/KID of the EMA generator against data/faces -> metrics/eval.json, reports/samples.png.

Real-image Inception features are cached by the faces' data version, so they are
computed once per dataset. The numbers are also logged to the training's MLflow run.
"""

from __future__ import annotations

import logging

import torch

from anime_avatar import layout
from anime_avatar.augment import load_faces
from anime_avatar.fetch import cache_dir
from anime_avatar.fid import compute_fid_kid, real_features
from anime_avatar.fsutil import atomic_write_bytes, atomic_write_json
from anime_avatar.generate import generate_images
from anime_avatar.layout import EVAL_METRICS, GENERATOR
from anime_avatar.params import Params
from anime_avatar.stage import run_stage
from anime_avatar.tracking import data_version, mlflow_client, read_run_id
from anime_avatar.training import grid_png, load_generator, resolve_device

log = logging.getLogger(__name__)

SAMPLES_PNG = layout.REPORTS_DIR / "samples.png"


def evaluate(params: Params) -> None:
    cfg = params.eval
    device = resolve_device(cfg.device)
    generator = load_generator(GENERATOR, device)
    reals, _ = load_faces(layout.FACES_DIR, params.detect.image_size)
    version = data_version(str(layout.FACES_DIR)).replace(":", "-")
    features = real_features(reals, cache_dir() / "fid-stats", version, device, cfg.batch_size)
    fakes = generate_images(generator, cfg.n_samples, params.model.z_dim, cfg.seed, cfg.batch_size)
    scores = compute_fid_kid(
        features, fakes, device, kid_subset_size=min(cfg.kid_subset_size, len(reals), len(fakes)),
        batch_size=cfg.batch_size, seed=cfg.seed,
    )  # fmt: skip
    result = {"fid": scores.fid, "kid_mean": scores.kid_mean, "kid_std": scores.kid_std,
              "n_samples": scores.n_fake, "n_real": scores.n_real}  # fmt: skip
    atomic_write_json(EVAL_METRICS, result)
    atomic_write_bytes(SAMPLES_PNG, grid_png(torch.from_numpy(fakes[:64]).permute(0, 3, 1, 2)))
    run_id = read_run_id()
    if run_id:
        mlflow = mlflow_client()
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(
                {"fid": scores.fid, "kid_mean": scores.kid_mean, "kid_std": scores.kid_std},
                step=generator.trained_steps,
            )
            mlflow.log_artifact(str(SAMPLES_PNG))
    else:
        log.warning("models/run.json is missing: the scores were not logged to MLflow")
    print(f"FID {scores.fid:.2f}  KID {scores.kid_mean:.4f} ± {scores.kid_std:.4f}  "
          f"({scores.n_fake} generated vs {scores.n_real} real)")  # fmt: skip


if __name__ == "__main__":
    run_stage("evaluate", evaluate)
