"""download: fill data/raw/ from the source in params.data, with manifest.csv and rejected.csv."""

from __future__ import annotations

import logging

from anime_avatar import layout
from anime_avatar.errors import UserError
from anime_avatar.fsutil import atomic_dir, write_csv
from anime_avatar.params import Params
from anime_avatar.sources import MANIFEST_FIELDS, REJECTED_FIELDS, collect
from anime_avatar.stage import run_stage

log = logging.getLogger(__name__)


def download(params: Params) -> None:
    with atomic_dir(layout.RAW_DIR) as out:
        result = collect(params.data, out)
        if not result.images:
            raise UserError(
                f"no readable images from data.source={params.data.source!r} "
                f"({len(result.rejected)} files rejected; see the reasons above)"
                + "".join(f"\n  {r.relpath}: {r.reason}" for r in result.rejected[:10])
            )
        write_csv(out / layout.MANIFEST, [i.row() for i in result.images], MANIFEST_FIELDS)
        write_csv(out / layout.REJECTED, [r.row() for r in result.rejected], REJECTED_FIELDS)
    log.info("%d images in %s, %d rejected", len(result.images), layout.RAW_DIR, len(result.rejected))


if __name__ == "__main__":
    run_stage("download", download)
