"""The translator's two image domains as uint8 (N, S, S, 3) arrays: photos of people (A) and anime faces (B).

A domain is a folder (read recursively), an archive or one image file, read by the project's image readers
(:func:`anime_avatar.data.image_sets.load_image_set`: EXIF orientation, any bit depth, safe archive extraction,
one clear error naming the params key), each image centre-cropped to a square and resized as it is read (a
folder of full-size phone photos never sits in memory at full resolution). The offline default
photo domain is data/photos, which download_photos fills with synthetic photo-like faces
(:mod:`anime_avatar.data.synthetic_photos`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anime_avatar.data.image_sets import load_image_set
from anime_avatar.data.images import center_square


def load_domain(path: str, key: str, size: int, max_images: int) -> np.ndarray:
    """uint8 (N, size, size, 3): the images at ``path`` (``max_images`` > 0: that many, evenly spread in name
    order). ``key`` names the params key in errors."""
    images = load_image_set(Path(path), key, max_images, prepare=lambda image: center_square(image, size))
    return np.stack([np.asarray(image, dtype=np.uint8) for _, image in images])
