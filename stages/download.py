"""download: fill data/raw/ from the source in params.data, with manifest.csv and rejected.csv."""

from __future__ import annotations

import logging

from anime_avatar.artifacts.raw import RAW_DIR, write_raw_set
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_dir
from anime_avatar.core.params import Params
from anime_avatar.core.stage import run_stage
from anime_avatar.data.sources import collect, no_images_message

log = logging.getLogger(__name__)


def download(params: Params) -> None:
    with atomic_dir(RAW_DIR) as out:
        result = collect(params.data, out)
        if not result.images:
            raise UserError(no_images_message(params.data, result))
        write_raw_set(out, result.images, result.rejected)
    log.info("%d images in %s, %d rejected", len(result.images), RAW_DIR, len(result.rejected))


if __name__ == "__main__":
    run_stage("download", download)
