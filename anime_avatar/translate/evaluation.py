"""How well a translator turns photos into anime faces, measured as the selfie2anime protocol does, plus two
measures that no training loss optimises.

* KID (x100) and FID of the translated test photos against the test anime faces, all at ``size`` px (128 for
  the protocol), beside two references: the photos untranslated (what doing nothing scores) and a sample of
  other real anime faces (the floor: what a perfect translator could reach with this many images).
* The rate at which the detect stage's anime-face detector finds a face in the translations (and, for
  scale, in the photos and the real anime faces).
* A structure score: SSIM of the edge maps of photo and translation (1: the same edges; the style
  evaluation's measure), which says how much of the photo's layout survives.
* Seconds per avatar: one photo translated at a time, the median of several runs.

The translator is trained with a least-squares GAN loss, cycle and identity L1, and a CAM classifier:
none of these sees Inception features, the detector or edge maps, so none of the numbers here is
optimised directly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from anime_avatar.metrics.stylize import structure_score
from anime_avatar.nn.images import resize_images
from anime_avatar.translate.inference import translate
from anime_avatar.translate.nets import Generator

Scorer = Callable[[np.ndarray, np.ndarray], tuple[float, float]]  # (real, fake) uint8 NHWC -> (kid, fid)
FaceFinder = Callable[[np.ndarray], bool]  # one uint8 HWC image -> is there an anime face
Translator = Callable[[np.ndarray], np.ndarray]  # uint8 (N, S, S, 3) photos at its size -> uint8 translations


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def face_rate(images: np.ndarray, finds_face: FaceFinder) -> float:
    """The fraction of ``images`` in which ``finds_face`` finds a face."""
    return float(np.mean([finds_face(image) for image in images])) if len(images) else 0.0


def structure(photos: np.ndarray, outputs: np.ndarray) -> float:
    """Mean edge SSIM of each photo and its translation (both uint8 NHWC, any sizes)."""
    return float(structure_score(to_unit(photos), to_unit(outputs)).mean())


def seconds_per_avatar(translator: Translator, photos: np.ndarray, repeats: int) -> float:
    """Median seconds to translate one photo (uint8 (S, S, 3) at the translator's size), after one warm-up run."""
    one = photos[:1]
    translator(one)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        translator(one)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def net_translator(net: Generator) -> Translator:
    """A project translator's generator as a :data:`Translator`."""
    return lambda images: translate(net, images)[0]


@dataclass(frozen=True)
class TranslationScores:
    """One row of the evaluation: a set of images scored against the test anime faces."""

    kid_x100: float
    fid: float
    face_rate: float
    structure: float | None  # against the photos (None for sets that are not made from them)

    def summary(self) -> dict[str, float | None]:
        return {"kid_x100": round(self.kid_x100, 3), "fid": round(self.fid, 2), "face_rate": round(self.face_rate, 3),
                "structure": None if self.structure is None else round(self.structure, 4)}  # fmt: skip


def score_set(
    images: np.ndarray, anime: np.ndarray, photos: np.ndarray | None, scorer: Scorer, finds_face: FaceFinder
) -> TranslationScores:
    """``images`` (uint8 NHWC at the evaluation size) against the test ``anime`` faces; structure against
    ``photos`` when given."""
    kid, fid = scorer(anime, images)
    return TranslationScores(100.0 * kid, fid, face_rate(images, finds_face),
                             None if photos is None else structure(photos, images))  # fmt: skip


def evaluate_translator(
    translator: Translator,
    model_size: int,
    photos: np.ndarray,
    anime: np.ndarray,
    reference: np.ndarray,
    size: int,
    scorer: Scorer,
    finds_face: FaceFinder,
    timing_repeats: int,
) -> tuple[dict, np.ndarray]:
    """The metrics (``translated``, ``untranslated``, ``real_anime`` rows, seconds per avatar) of ``translator`` on
    test ``photos`` against test ``anime`` faces, with ``reference`` anime faces as the floor; and the translations.
    Every set is brought to ``size`` px; photos go into the translator at its own resolution, ``model_size``."""
    at_model = resize_images(photos, model_size)
    outputs = translator(at_model)
    photos_eval, anime_eval = resize_images(photos, size), resize_images(anime, size)
    translated = resize_images(outputs, size)
    rows = {
        "translated": score_set(translated, anime_eval, photos_eval, scorer, finds_face),
        "untranslated": score_set(photos_eval, anime_eval, photos_eval, scorer, finds_face),
        "real_anime": score_set(resize_images(reference, size), anime_eval, None, scorer, finds_face),
    }
    metrics: dict = {name: row.summary() for name, row in rows.items()}
    metrics |= {"n_photos": len(photos), "n_anime": len(anime), "n_reference": len(reference), "image_size": size,
                "model_image_size": model_size,
                "seconds_per_avatar": round(seconds_per_avatar(translator, at_model, timing_repeats), 4)}  # fmt: skip
    return metrics, outputs
