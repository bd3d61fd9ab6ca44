"""Anime face detection and cropping: lbp (OpenCV cascade), animeface (nvxs), none (pre-cropped).

``detect_file`` is the per-file unit of work (pure apart from reading its input),
so it runs the same in this process, in a process pool, or on a cluster.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import PIL
from PIL import Image

from anime_avatar.artifacts.faces import Box, FaceCrop
from anime_avatar.core.errors import UserError
from anime_avatar.core.params import DetectParams
from anime_avatar.data.fetch import download
from anime_avatar.data.images import (
    DuplicateFilter,
    UnreadableImage,
    crop_resize,
    fit_within,
    load_rgb,
    phash64,
    png_bytes,
    square_box,
)

log = logging.getLogger(__name__)

CASCADE_URL = "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml"
CASCADE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"
CASCADE_ENV = "ANIME_AVATAR_CASCADE"


@dataclass(frozen=True)
class Detection:
    box: Box  # x, y, w, h in image pixels
    score: float


class Detector(Protocol):
    """Finds faces at least ``min_face`` pixels wide in an image that is ``scale`` times the original's size
    (so faces of ``min_face`` original pixels are ``min_face * scale`` here)."""

    name: str

    def detect(self, image: Image.Image, scale: float = 1.0) -> list[Detection]: ...


def scaled_min(min_face: int, scale: float) -> int:
    """The smallest face side, in pixels of an image ``scale`` times the original, that maps back to ``min_face``."""
    return max(1, math.ceil(min_face * scale - 1e-9))


def resolve_cascade(cascade_path: str = "") -> Path:
    """The cascade file: ``detect.cascade_path``, else ``$ANIME_AVATAR_CASCADE``, else downloaded once."""
    for origin, value in (("detect.cascade_path", cascade_path), (CASCADE_ENV, os.environ.get(CASCADE_ENV, ""))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise UserError(f"{origin}: cascade file {path} does not exist")
            return path
    return download(CASCADE_URL, CASCADE_SHA256, local_option=f"detect.cascade_path (or ${CASCADE_ENV})")


class LbpDetector:
    """nagadomi's lbpcascade_animeface with OpenCV; score is the number of merged neighbours."""

    name = "lbp"

    def __init__(self, cascade: Path, scale_factor: float, min_neighbors: int, min_face: int) -> None:
        import cv2

        if not hasattr(cv2, "CascadeClassifier"):
            raise UserError(
                "detector 'lbp' needs OpenCV 4 (opencv-python-headless<5): OpenCV 5 removed CascadeClassifier"
            )
        self._cv2 = cv2
        try:
            self._cascade = cv2.CascadeClassifier(str(cascade))
        except (cv2.error, SystemError):  # OpenCV raises on some malformed XML, returns empty on others
            self._cascade = None
        if self._cascade is None or self._cascade.empty():
            raise UserError(f"{cascade}: not a valid OpenCV cascade file")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face

    def detect(self, image: Image.Image, scale: float = 1.0) -> list[Detection]:
        cv2 = self._cv2
        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY))
        side = scaled_min(self.min_face, scale)
        boxes, neighbours = self._cascade.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
        )
        return [
            Detection((int(x), int(y), int(w), int(h)), float(n))
            for (x, y, w, h), n in zip(boxes, np.ravel(neighbours), strict=True)
        ]


class AnimefaceDetector:
    """nagadomi's nvxs detector from the ``animeface`` package; score is its likelihood."""

    name = "animeface"

    def __init__(self, min_score: float, min_face: int) -> None:
        try:
            import animeface
        except ImportError:
            raise UserError("detector 'animeface' needs the animeface package: pip install animeface") from None
        if pillow_major() >= 12:
            raise UserError(
                f"detector 'animeface' finds no faces with Pillow {PIL.__version__}: install pillow<12 "
                "(or use detect.detector=lbp)"
            )
        self._animeface = animeface
        self.min_score = min_score
        self.min_face = min_face

    def detect(self, image: Image.Image, scale: float = 1.0) -> list[Detection]:
        found = []
        side = scaled_min(self.min_face, scale)
        for face in self._animeface.detect(image):
            pos = face.face.pos
            if min(pos.width, pos.height) >= side and face.likelihood >= self.min_score:
                found.append(Detection((pos.x, pos.y, pos.width, pos.height), float(face.likelihood)))
        return found


class WholeImageDetector:
    """``none``: the input already holds one face per image."""

    name = "none"

    def __init__(self, min_face: int) -> None:
        self.min_face = min_face

    def detect(self, image: Image.Image, scale: float = 1.0) -> list[Detection]:
        width, height = image.size
        if min(width, height) < scaled_min(self.min_face, scale):
            return []
        return [Detection((0, 0, width, height), 1.0)]


def build_detector(params: DetectParams) -> Detector:
    if params.detector == "lbp":
        cascade = resolve_cascade(params.cascade_path)
        return LbpDetector(cascade, params.scale_factor, params.min_neighbors, params.min_face)
    if params.detector == "animeface":
        return AnimefaceDetector(params.min_score, params.min_face)
    return WholeImageDetector(params.min_face)


@dataclass(frozen=True)
class FileJob:
    source: str  # relpath in data/raw, recorded in faces.csv
    path: str  # where to read it
    sha256: str  # gives stable, content-addressed face ids


@dataclass(frozen=True)
class FileResult:
    source: str
    crops: list[FaceCrop]
    error: str = ""


def map_back(box: Box, sx: float, sy: float, width: int, height: int) -> Box:
    """A box found in a copy scaled by (sx, sy), in the original's pixels: the smallest box covering it."""
    x, y, w, h = box
    left, top = math.floor(x / sx + 1e-9), math.floor(y / sy + 1e-9)
    right, bottom = min(width, math.ceil((x + w) / sx - 1e-9)), min(height, math.ceil((y + h) / sy - 1e-9))
    return left, top, right - left, bottom - top


def detect_faces(detector: Detector, image: Image.Image, max_side: int) -> list[Detection]:
    """Faces in original pixels, found on a copy no larger than ``max_side``: memory stays bounded on huge images."""
    small = fit_within(image, max_side)
    if small is image:
        return detector.detect(image)
    width, height = image.size
    sx, sy = small.width / width, small.height / height
    found = detector.detect(small, scale=max(sx, sy))
    return [Detection(map_back(d.box, sx, sy, width, height), d.score) for d in found]


def detect_file(job: FileJob, detector: Detector, margin: float, image_size: int, max_side: int) -> FileResult:
    """Detect the faces of one image and return their square, resized crops (cut from the full-size image)."""
    try:
        image = load_rgb(job.path)
    except UnreadableImage as err:
        return FileResult(job.source, [], f"unreadable: {err}")
    detections = sorted(detect_faces(detector, image, max_side), key=lambda d: (d.box[1], d.box[0]))
    crops = []
    for k, det in enumerate(detections):
        square = square_box(det.box, margin, *image.size)
        face = crop_resize(image, square, image_size)
        crops.append(
            FaceCrop(
                face_id=f"{job.sha256[:16]}-{k:02d}",
                source=job.source,
                box=det.box,
                crop=square,
                score=det.score,
                detector=detector.name,
                phash=phash64(face),
                png=png_bytes(face),
            )
        )
    return FileResult(job.source, crops)


@dataclass
class DetectionTally:
    """What a pass of ``unique_faces`` saw besides the crops: the images read and the files that failed."""

    images: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Found:
    """One crop, in input order: kept, or a near-duplicate of the earlier kept crop ``duplicate_of``."""

    crop: FaceCrop
    duplicate_of: str = ""  # face id of the kept crop it repeats; "" = kept
    distance: int = 0


def unique_faces(results: Iterable[FileResult], dedup_distance: int, tally: DetectionTally) -> Iterator[Found]:
    """Each crop in input order as it comes, marked kept or a perceptual near-duplicate of an earlier kept one
    (the first stays). Only the kept crops' ids and hashes are remembered, never their pixels."""
    seen = DuplicateFilter(dedup_distance)
    kept_ids: list[str] = []
    for result in results:
        tally.images += 1
        if result.error:
            tally.errors.append((result.source, result.error))
        for crop in result.crops:
            match = seen.check(crop.phash)
            if match is None:
                kept_ids.append(crop.face_id)
                yield Found(crop)
            else:
                yield Found(crop, kept_ids[match[0]], match[1])


def pillow_major() -> int:
    return int(PIL.__version__.split(".")[0])


def zero_faces_message(params: DetectParams, images: int) -> str:
    # A small detect.max_side shrinks the faces of larger images below what the detector can see.
    smaller = f"or a larger detect.max_side (images are searched at most {params.max_side} px wide)"
    if params.detector == "animeface" and pillow_major() >= 12:
        hint = f"animeface silently finds nothing with Pillow >= 12 (installed: {PIL.__version__}); install pillow<12"
    elif params.detector == "animeface":
        hint = f"try a smaller detect.min_face or detect.min_score, {smaller}, or detect.detector=lbp"
    elif params.detector == "lbp":
        hint = f"try a smaller detect.min_face or detect.min_neighbors, {smaller}"
    else:
        hint = f"every image is smaller than detect.min_face={params.min_face}"
    return f"detector {params.detector!r} found no faces in {images} images: {hint}"
