"""FID and KID of two image sets (or of their Inception features), computed by torchmetrics.

Features come from :mod:`.features` (the FID Inception network and its input convention, which makes the
numbers comparable with published ones); the real set's are cached by :mod:`.feature_cache`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from anime_avatar.core.device import resolve_device
from anime_avatar.metrics.features import FEATURE_DIM, extract_features
from anime_avatar.metrics.inception import DeviceLike

# Precomputed features are a 2-D float array (N, D); anything else is taken as images.
FeaturesOrImages = np.ndarray | Iterable[np.ndarray]


class PrecomputedFeatures(torch.nn.Module):
    """Identity "feature extractor" that lets torchmetrics' FID/KID take features we already extracted.

    Both metrics call ``self.inception(imgs)`` in ``update``; with this module ``imgs`` are the features, so one
    Inception pass serves FID and KID and the real features can come from the cache.
    """

    def __init__(self, num_features: int = FEATURE_DIM) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features of shape (N, {self.num_features}), got {tuple(features.shape)}")
        return features


@dataclass(frozen=True)
class FidKid:
    """FID and KID (mean and std over random subsets) of a fake set against a real set."""

    fid: float
    kid_mean: float
    kid_std: float
    n_real: int
    n_fake: int
    kid_subset_size: int


def scores_from_features(
    real: np.ndarray,
    fake: np.ndarray,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
) -> FidKid:
    """FID and KID of two feature matrices (N, D), computed by torchmetrics.

    The metrics get :class:`PrecomputedFeatures` as their extractor and the features as "images", so the
    distances (FID's eigenvalue-based matrix square root, KID's unbiased polynomial-kernel MMD) stay torchmetrics'
    code. Features go in as float64 so FID's moments and result are double precision. The KID subset size is
    capped at the smaller set (torchmetrics refuses larger ones; the subsets then all hold that whole set, and
    ``kid_std`` shows only the other set's resampling) and the subsets are drawn from a fixed seed, without touching
    the global RNG, so the same features always give the same KID.

    The distances are computed on the CPU whatever device made the features: in float64, which MPS lacks, with
    the same results on every machine, and with no GPU random stream reseeded (``torch.manual_seed`` seeds
    every CUDA device too, and queues that seed when CUDA is not yet initialised).
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features must be (N, D) with the same D, got {real.shape} and {fake.shape}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 real and 2 fake samples, got {len(real)} and {len(fake)}")
    dim = real.shape[1]
    subset_size = min(kid_subset_size, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=PrecomputedFeatures(dim))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
        kid = KernelInceptionDistance(feature=PrecomputedFeatures(dim), subsets=kid_subsets, subset_size=subset_size)
    for features, is_real in ((real, True), (fake, False)):
        tensor = torch.from_numpy(np.asarray(features, dtype=np.float64))
        fid.update(tensor, real=is_real)
        kid.update(tensor, real=is_real)
    fid_value = fid.compute()
    with torch.random.fork_rng(devices=[]):  # KID's subsets use torch.randperm on the CPU generator
        torch.default_generator.manual_seed(seed)  # that generator only
        kid_mean, kid_std = kid.compute()
    return FidKid(
        fid=float(fid_value),
        kid_mean=float(kid_mean),
        kid_std=float(kid_std),
        n_real=len(real),
        n_fake=len(fake),
        kid_subset_size=subset_size,
    )


def _as_features(
    source: FeaturesOrImages, device: torch.device, batch_size: int, progress: bool, desc: str, backend: str
) -> np.ndarray:
    """A 2-D array is taken as precomputed features; anything else as uint8 NHWC images to run through the net."""
    if isinstance(source, np.ndarray) and source.ndim == 2:
        return source
    return extract_features(source, device, batch_size, progress, desc=desc, backend=backend)


def compute_fid_kid(
    real: FeaturesOrImages,
    fake: FeaturesOrImages,
    device: DeviceLike = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    batch_size: int = 64,
    progress: bool = True,
    seed: int = 0,
    backend: str = "torchscript",
) -> FidKid:
    """FID and KID of ``fake`` against ``real``; each is images (uint8 NHWC batches) or features from
    :func:`~anime_avatar.metrics.feature_cache.real_features` / :func:`~anime_avatar.metrics.features.extract_features`.

    Each image goes through Inception once and its features feed both metrics (see :func:`scores_from_features`).
    """
    device = resolve_device(device)
    real_f = _as_features(real, device, batch_size, progress, "real Inception features", backend)
    fake_f = _as_features(fake, device, batch_size, progress, "fake Inception features", backend)
    return scores_from_features(real_f, fake_f, kid_subset_size, kid_subsets, seed)
