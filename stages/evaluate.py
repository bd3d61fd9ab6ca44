"""evaluate: FID/KID of the EMA generator against data/faces -> metrics/eval.json, reports/samples.png.

The generator file says its resolution and z_dim; the face set says its image size.
Real-image Inception features are cached by the faces' data version, so they are
computed once per dataset. The numbers are also logged to the training's MLflow run,
on the tracking server that run was recorded on (models/run.json).
"""

from __future__ import annotations

import logging

import torch

from anime_avatar.artifacts.faces import FACES_DIR, FaceFiles
from anime_avatar.artifacts.generator import GENERATOR
from anime_avatar.artifacts.reports import SAMPLES_PNG, write_eval_metrics
from anime_avatar.artifacts.run import RUN_FILE
from anime_avatar.core.device import resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_bytes
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.gan.evaluation import score_generator
from anime_avatar.gan.model_file import load_generator
from anime_avatar.metrics.feature_cache import eval_real_features
from anime_avatar.nn.images import grid_png
from anime_avatar.ops.data_versions import data_version
from anime_avatar.ops.registry import FID_FACES_TAG, FID_SAMPLES_TAG, name_champion_of_recorded_run
from anime_avatar.ops.stage_run import log_to_recorded_run

log = logging.getLogger(__name__)


def evaluate(params: Params) -> None:
    cfg = params.eval
    device = resolve_device(cfg.device, key="eval.device")
    generator = load_generator(GENERATOR, device)
    reals = FaceFiles(FACES_DIR)  # read batch by batch, and only when the features are not cached yet
    if reals.image_size != generator.resolution:
        raise UserError(
            f"{GENERATOR} makes {generator.resolution}px images but {FACES_DIR} holds {reals.image_size}px faces: "
            "run the pipeline again (dvc repro)"
        )
    if len(reals) < 2:  # before the generator samples and the features are computed: FID needs two of each
        raise UserError(f"{FACES_DIR} holds {len(reals)} face: FID and KID need at least 2 real faces "
                        "(find more: a larger data set, or a lower detect.min_face)")  # fmt: skip
    faces = data_version(FACES_DIR)
    features = eval_real_features(reals.batches(cfg.batch_size), faces, cfg, device, len(reals))
    scores, fakes = score_generator(generator.net, generator.z_dim, features, cfg, device)
    scored = {"fid": scores.fid, "kid_mean": scores.kid_mean, "kid_std": scores.kid_std}
    write_eval_metrics(scored | {"n_samples": scores.n_fake, "n_real": scores.n_real})
    atomic_write_bytes(SAMPLES_PNG, grid_png(torch.from_numpy(fakes[:64]).permute(0, 3, 1, 2)))
    made_by = (GENERATOR, generator.run_id)
    measured = {FID_FACES_TAG: faces, FID_SAMPLES_TAG: str(scores.n_fake)}  # what makes two FIDs comparable
    if log_to_recorded_run(RUN_FILE, "train", made_by, scored, (SAMPLES_PNG,), step=generator.step, tags=measured):
        name_champion_of_recorded_run(RUN_FILE, "train", scores.fid, faces, scores.n_fake)
    print(f"FID {scores.fid:.2f}  KID {scores.kid_mean:.4f} ± {scores.kid_std:.4f}  "
          f"({scores.n_fake} generated vs {scores.n_real} real)")  # fmt: skip


if __name__ == "__main__":
    run_stage("evaluate", evaluate)
