"""download_photos: fill data/photos/ (the translator's photo domain) from the source in params.photos, with
manifest.csv and rejected.csv, as the download stage fills data/raw.

Sources: ``synthetic`` (procedural photo-like faces, offline: checks the pipeline, not real photos), ``local``
(folder, zip, tar), ``url`` (http(s) archive, sha256-checked), ``hf`` (Hugging Face datasets id).
"""

from __future__ import annotations

import logging

from anime_avatar.artifacts.raw import PHOTOS_DIR, write_raw_set
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_dir
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.data.sources import collect, no_images_message

log = logging.getLogger(__name__)


def download_photos(params: Params) -> None:
    with atomic_dir(PHOTOS_DIR) as out:
        result = collect(params.photos, out, synthetic="photos")
        if not result.images:
            raise UserError(no_images_message(params.photos, result))
        write_raw_set(out, result.images, result.rejected)
    log.info("%d photos in %s, %d rejected", len(result.images), PHOTOS_DIR, len(result.rejected))


if __name__ == "__main__":
    run_stage("download_photos", download_photos)
