"""Measures of a stylised image that no style-transfer loss optimises.

* :func:`structure_score`: SSIM between the Sobel edge maps of content and output. Style losses add
  texture and feature-space content losses tolerate much pixel change; edge SSIM asks the product's
  question: are the face's outlines still where they were? 1 = identical edges.
* :func:`colour_distance`: distance between the per-channel mean and std, in CIE Lab, of the output and of
  the style image, in Lab units (like a Delta-E). Lab because its axes are roughly perceptually uniform,
  and because mean/std in Lab is what colour transfer (Reinhard et al. 2001) matches: it measures whether
  the palette moved. Lower = closer to the style.

SSIM is torchmetrics' (Gaussian window, sigma 1.5); Lab is computed here (a test compares it with
scikit-image's ``rgb2lab``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
_LUMA = (0.299, 0.587, 0.114)  # Rec. 601
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)  # sRGB primaries, D65
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) Sobel gradient magnitude of the luma, in [0, 1].

    Scaled so a 0 -> 1 step gives 1; replicate padding so the border invents no edges.
    """
    luma = (images * torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)).sum(1, True)
    kx = _SOBEL_X.to(luma).view(1, 1, 3, 3)
    padded = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(-1, -2))
    return (gx.square() + gy.square()).sqrt().clamp(0.0, 1.0)


def structure_score(content: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """SSIM of the edge maps of content and output, one value per image (N,); the output is resized to the
    content's size first if they differ."""
    if output.shape[-2:] != content.shape[-2:]:
        output = F.interpolate(output, size=content.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    return structural_similarity_index_measure(
        sobel_edges(output.double()), sobel_edges(content.double()), data_range=1.0, reduction="none"
    ).float()


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (N, 3, H, W) -> CIE L*a*b* (D65, 2° observer), computed in float64."""
    x = images.double().clamp(0.0, 1.0)
    linear = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)  # undo the sRGB gamma
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=torch.float64, device=images.device)
    xyz = torch.einsum("ij,njhw->nihw", matrix, linear)
    t = xyz / torch.tensor(_WHITE_D65, dtype=torch.float64, device=images.device).view(1, 3, 1, 1)
    delta = 6.0 / 29.0
    f = torch.where(t > delta**3, t.clamp_min(1e-12) ** (1.0 / 3.0), t / (3 * delta**2) + 4.0 / 29.0)
    return torch.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], dim=1)


def lab_stats(images: torch.Tensor) -> torch.Tensor:
    """Per image, the Lab channels' means and standard deviations: (N, 6) = [mL, ma, mb, sL, sa, sb]."""
    lab = rgb_to_lab(images).flatten(2)
    return torch.cat([lab.mean(dim=2), lab.std(dim=2, unbiased=False)], dim=1)


def colour_distance(output: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of the Lab (mean, std) vectors of each output and the style (any size, batch 1
    or N): (N,)."""
    return (lab_stats(output) - lab_stats(style)).norm(dim=1).float()
