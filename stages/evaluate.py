"""evaluate: FID/KID of the EMA generator against data/faces -> metrics/eval.json, reports/samples.png.

The generator file says its resolution and z_dim; the face set says its image size.
Real-image Inception features are cached by the faces' data version, so they are
computed once per dataset. The numbers are also logged to the training's MLflow run,
on the tracking server that run was recorded on (models/run.json).
"""

from __future__ import annotations

import logging

import torch

from anime_avatar.artifacts.faces import FACES_DIR, load_faces
from anime_avatar.artifacts.generator import GENERATOR, load_generator
from anime_avatar.artifacts.reports import SAMPLES_PNG, write_eval_metrics
from anime_avatar.artifacts.run import read_run_file
from anime_avatar.core.device import resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_bytes
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.gan.inference import grid_png
from anime_avatar.metrics.fid import FidKid, eval_real_features, score_generator
from anime_avatar.ops.data_versions import data_version
from anime_avatar.ops.run_journal import RunJournal
from anime_avatar.ops.tracking_store import fail_fast_http

log = logging.getLogger(__name__)


def evaluate(params: Params) -> None:
    cfg = params.eval
    device = resolve_device(cfg.device, key="eval.device")
    generator = load_generator(GENERATOR, device)
    reals, _ = load_faces(FACES_DIR)
    if reals.shape[1] != generator.resolution:
        raise UserError(
            f"{GENERATOR} makes {generator.resolution}px images but {FACES_DIR} holds {reals.shape[1]}px faces: "
            "run the pipeline again (dvc repro)"
        )
    features = eval_real_features(reals, data_version(FACES_DIR), cfg, device)
    scores, fakes = score_generator(generator.net, generator.z_dim, features, cfg, device)
    write_eval_metrics({"fid": scores.fid, "kid_mean": scores.kid_mean, "kid_std": scores.kid_std,
                        "n_samples": scores.n_fake, "n_real": scores.n_real})  # fmt: skip
    atomic_write_bytes(SAMPLES_PNG, grid_png(torch.from_numpy(fakes[:64]).permute(0, 3, 1, 2)))
    log_scores(scores, generator.step)
    print(f"FID {scores.fid:.2f}  KID {scores.kid_mean:.4f} ± {scores.kid_std:.4f}  "
          f"({scores.n_fake} generated vs {scores.n_real} real)")  # fmt: skip


def log_scores(scores: FidKid, step: int) -> None:
    """The scores and samples, on the training's run; kept for later if its tracking store does not answer."""
    record = read_run_file()
    if not record:
        log.warning("models/run.json is missing: the scores were not logged to MLflow")
        return
    fail_fast_http()
    journal = RunJournal(record.tracking_uri, record.run_id)
    journal.log_metrics({"fid": scores.fid, "kid_mean": scores.kid_mean, "kid_std": scores.kid_std}, step=step)
    journal.log_artifact(SAMPLES_PNG)
    journal.finish()


if __name__ == "__main__":
    run_stage("evaluate", evaluate)
