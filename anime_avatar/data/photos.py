"""Faces in photos of people: OpenCV's frontal-face Haar cascade, and square crops around them.

The cascade file ships inside opencv-python(-headless) (``cv2.data.haarcascades``): no download. Its settings
and the crop's margin are the ``photo_faces`` section of params.yaml. On scikit-image's public-domain
``astronaut`` photo (512x512) it finds exactly one face, at (177, 67, 93, 93).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.core.params import PhotoFacesParams
from anime_avatar.data.images import crop_resize, square_box

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class PhotoFace:
    box: tuple[int, int, int, int]  # x, y, w, h in the photo's pixels
    crop: Image.Image  # the square around it, grown by the margin, at the requested size


@functools.cache
def _cascade():  # -> cv2.CascadeClassifier
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise UserError("face detection in photos needs OpenCV 4 (opencv-python-headless<5)")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE_FILE)
    if cascade.empty():
        raise UserError(f"OpenCV could not load {cv2.data.haarcascades + CASCADE_FILE}")
    return cascade


def detect_photo_faces(photo: Image.Image, cfg: PhotoFacesParams) -> list[tuple[int, int, int, int]]:
    """Frontal faces (x, y, w, h) in an RGB photo, largest first.

    The grey image is histogram-equalised (the cascade was trained on equalised windows); faces smaller
    than ``cfg.min_size`` of the photo's shorter side are ignored, which removes small false positives in
    textured backgrounds whatever the photo's resolution.
    """
    import cv2

    gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(photo.convert("RGB")), cv2.COLOR_RGB2GRAY))
    side = max(1, int(min(gray.shape) * cfg.min_size))
    found = _cascade().detectMultiScale(gray, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors,
                                        minSize=(side, side))  # fmt: skip
    boxes = [(int(x), int(y), int(w), int(h)) for x, y, w, h in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[0], b[1]))


NO_DETECT_REMEDY = "crop the photo around the face, or use --no-detect to make the avatar of the whole picture"


def photo_faces(
    photo: Image.Image,
    size: int,
    cfg: PhotoFacesParams,
    largest: bool = False,
    named: str = "the photo",
    remedy: str = NO_DETECT_REMEDY,
) -> list[PhotoFace]:
    """Square crops (``size`` px, grown by ``cfg.margin`` per side) of the faces in ``photo``, largest first
    (only it with ``largest``).

    No face found: a UserError naming the photo (``named``) and saying what to do (``remedy``: by default, a
    command's --no-detect).
    """
    boxes = detect_photo_faces(photo, cfg)
    if not boxes:
        raise UserError(
            f"no face found in {named} ({photo.width}x{photo.height}): the detector looks for frontal faces at "
            f"least {cfg.min_size:.0%} of the picture's shorter side; {remedy}"
        )
    if largest:
        boxes = boxes[:1]
    return [
        PhotoFace(box, crop_resize(photo, square_box(box, cfg.margin, photo.width, photo.height), size))
        for box in boxes
    ]
