"""translate_eval: the trained translator on test photos against test anime faces -> reports/translate.json,
its headline scores in metrics/translate.json, reports/translate.png (photo | translation | attention, one
column per photo).

KID x100 and FID at translate_eval.image_size (128: the selfie2anime protocol) of the translated photos, of
the photos untranslated, and of translate_eval.reference (other real anime faces: the floor); the anime
detector's face rate; the edge-SSIM structure score; seconds per avatar. The numbers and the sheet are also
logged to the translator's MLflow run.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch

from anime_avatar.artifacts.reports import (
    TRANSLATE_DETAILS,
    TRANSLATE_HEADLINE,
    TRANSLATE_METRICS,
    TRANSLATE_SHEET,
    write_metrics_and_details,
)
from anime_avatar.artifacts.translator import TRANSLATOR, TRANSLATOR_RUN_FILE
from anime_avatar.core.device import apply_threads, resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_bytes
from anime_avatar.core.params import Params, TranslateEvalParams
from anime_avatar.core.stage import run_stage
from anime_avatar.data.detection import AnimefaceDetector
from anime_avatar.metrics.fid import compute_fid_kid
from anime_avatar.nn.images import grid_png
from anime_avatar.ops.stage_run import log_to_recorded_run
from anime_avatar.translate.data import load_domain
from anime_avatar.translate.evaluation import evaluate_translator, net_translator
from anime_avatar.translate.inference import translation_sheet
from anime_avatar.translate.model_file import load_translator

log = logging.getLogger(__name__)


def kid_fid(real: np.ndarray, fake: np.ndarray, cfg: TranslateEvalParams, device: torch.device) -> tuple[float, float]:
    scores = compute_fid_kid(real, fake, device, kid_subset_size=cfg.kid_subset_size, batch_size=50, progress=False,
                             seed=cfg.seed, backend=cfg.inception_backend)  # fmt: skip
    return scores.kid_mean, scores.fid


def anime_and_reference(cfg: TranslateEvalParams) -> tuple[np.ndarray, np.ndarray]:
    """The test anime faces and the reference ones (the floor: real faces scored the same way). When both settings
    name one set (the offline default: data/faces), they are its two alternate halves of 2 x n_images evenly
    spread faces, never the same images: the floor was the test faces scored against themselves (FID 0)."""
    same = Path(cfg.anime).expanduser().resolve() == Path(cfg.reference).expanduser().resolve()
    if not same:
        anime = load_domain(cfg.anime, "translate_eval.anime", cfg.image_size, cfg.n_images)
        return anime, load_domain(cfg.reference, "translate_eval.reference", cfg.image_size, len(anime))
    both = load_domain(cfg.anime, "translate_eval.anime", cfg.image_size, 2 * cfg.n_images)
    log.info("translate_eval.reference is translate_eval.anime: the test faces and the reference are its alternate "
             "halves (%d each)", len(both) // 2)  # fmt: skip
    return both[0::2], both[1::2]


def translate_eval(params: Params) -> None:
    cfg = params.translate_eval
    apply_threads(cfg.threads, "translate_eval.threads")
    device = resolve_device(cfg.device, key="translate_eval.device")
    trained = load_translator(TRANSLATOR, "anime", device)
    size = trained.image_size
    photos = load_domain(cfg.photos, "translate_eval.photos", max(size, cfg.image_size), cfg.n_images)
    anime, reference = anime_and_reference(cfg)
    for key, images in (("photos", photos), ("anime", anime), ("reference", reference)):
        if len(images) < 2:  # checked before Inception runs, not after
            raise UserError(f"translate_eval.{key}: {len(images)} image; KID and FID need at least 2")
    log.info("%d test photos, %d test anime faces, %d reference anime faces at %d px", len(photos), len(anime),
             len(reference), cfg.image_size)  # fmt: skip
    detector = AnimefaceDetector(min_score=0.0, min_face=cfg.detector_min_face)
    scorer = partial(kid_fid, cfg=cfg, device=device)
    metrics, _ = evaluate_translator(
        net_translator(trained.net), size, photos, anime, reference, cfg.image_size, scorer,
        lambda image: bool(detector.detect(image_pil(image))), cfg.timing_repeats,
    )  # fmt: skip
    metrics["model"] = {"step": trained.step, "attention": trained.config.attention, "run_id": trained.run_id}
    write_metrics_and_details(metrics, TRANSLATE_HEADLINE, TRANSLATE_METRICS, TRANSLATE_DETAILS)
    atomic_write_bytes(TRANSLATE_SHEET, grid_png(translation_sheet(trained.net, photos[:8], size)[None], nrow=1))
    numbers = {f"eval.{row}.{k}": v for row in ("translated", "untranslated", "real_anime")
               for k, v in metrics[row].items() if v is not None}  # fmt: skip
    numbers["eval.seconds_per_avatar"] = metrics["seconds_per_avatar"]
    log_to_recorded_run(TRANSLATOR_RUN_FILE, "translate_train", (TRANSLATOR, trained.run_id), numbers,
                        (TRANSLATE_SHEET,))  # fmt: skip
    print(summary_table(metrics))


def image_pil(image: np.ndarray):  # -> PIL.Image.Image
    from PIL import Image

    return Image.fromarray(image)


def summary_table(metrics: dict) -> str:
    lines = [f"{'':14}{'KID x100':>10}{'FID':>10}{'face rate':>11}{'structure':>11}"]
    for row in ("translated", "untranslated", "real_anime"):
        m = metrics[row]
        structure = "" if m["structure"] is None else f"{m['structure']:.3f}"
        lines.append(f"{row:14}{m['kid_x100']:>10.2f}{m['fid']:>10.1f}{m['face_rate']:>11.2f}{structure:>11}")
    lines.append(f"seconds per avatar: {metrics['seconds_per_avatar']:.3f} ({metrics['model_image_size']} px model)")
    return "\n".join(lines)


if __name__ == "__main__":
    run_stage("translate_eval", translate_eval)
