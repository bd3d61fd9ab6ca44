"""The real set's Inception features, computed once per dataset version and cached as a plain ``.npz`` file.

Every evaluation compares against the same real set, so its (N, 2048) float32 features are kept (not mean and
covariance: KID needs the samples). A cache made with another network or preprocessing
(:data:`~anime_avatar.metrics.features.FEATURE_CONVENTION`), or one that is unreadable or holds pickled objects,
is ignored and recomputed.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from anime_avatar.core.fsutil import atomic_write_bytes
from anime_avatar.data.fetch import cache_dir as default_cache_dir
from anime_avatar.metrics.features import FEATURE_CONVENTION, FEATURE_DIM, ImageSource, extract_features
from anime_avatar.metrics.inception import DeviceLike

if TYPE_CHECKING:
    from anime_avatar.core.params import EvalParams

log = logging.getLogger(__name__)


def _cache_path(cache_dir: Path, dataset_hash: str) -> Path:
    """``<cache_dir>/<dataset_hash>.npz``; the hash must be a plain name so it cannot escape ``cache_dir``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", dataset_hash):
        raise ValueError(f"dataset_hash must be a plain file name (letters, digits, . _ -), got {dataset_hash!r}")
    return Path(cache_dir) / f"{dataset_hash}.npz"


def _load_cached(path: Path) -> np.ndarray | None:
    """Cached features, or None when the file is absent, unreadable or made with another network/preprocessing."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            convention = str(data["convention"])
            features = data["features"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable FID feature cache %s (%s); recomputing", path, err)
        return None
    if convention != FEATURE_CONVENTION or features.ndim != 2 or features.shape[1] != FEATURE_DIM:
        log.warning("ignoring FID feature cache %s made with %r; recomputing", path, convention)
        return None
    return features.astype(np.float32, copy=False)


def real_features(
    images: ImageSource,
    cache_dir: Path,
    dataset_hash: str,
    device: DeviceLike = None,
    batch_size: int = 64,
    progress: bool = True,
    total: int | None = None,
    backend: str = "torchscript",
) -> np.ndarray:
    """Inception features of the real dataset, cached in ``<cache_dir>/<dataset_hash>.npz``.

    Every evaluation compares against the same real set, so its features are computed once per dataset version.
    The raw (N, 2048) float32 matrix is cached rather than mean/covariance because KID needs the samples
    (10k images -> ~80 MB). ``images`` is only consumed on a cache miss, so a lazy generator costs nothing on a hit.
    The file is written to a temporary sibling and renamed, so an interrupted run never leaves a truncated cache.
    """
    path = _cache_path(cache_dir, dataset_hash)
    cached = _load_cached(path)
    if cached is not None:
        return cached
    features = extract_features(
        images, device, batch_size, progress, total, desc="real Inception features", backend=backend
    )
    buf = io.BytesIO()
    np.savez(buf, features=features.astype(np.float32), convention=np.array(FEATURE_CONVENTION))
    atomic_write_bytes(path, buf.getvalue())
    return features


def eval_real_features(
    reals: ImageSource, version: str, cfg: EvalParams, device: DeviceLike = None, total: int | None = None
) -> np.ndarray:
    """The evaluate stage's real features: ``reals`` (data/faces; ``total`` images, for the progress bar) cached in
    the fid-stats cache under their DVC ``version``, so every evaluation of the same faces reads them instead of
    recomputing them (a lazy ``reals`` is then not even read)."""
    return real_features(reals, default_cache_dir() / "fid-stats", version.replace(":", "-"), device, cfg.batch_size,
                         total=total, backend=cfg.inception_backend)  # fmt: skip
