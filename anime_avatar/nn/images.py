"""Images as the nets see them and as people see them: uint8 NHWC <-> float NCHW in [-1, 1], and PNG grids."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F


def to_model_range(images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    return images_uint8_nhwc.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> uint8, same layout."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def grid_png(images: torch.Tensor, nrow: int = 8) -> bytes:
    """A PNG grid of uint8 (N, 3, H, W) images."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    buf = io.BytesIO()
    to_pil_image(make_grid(images, nrow=nrow, padding=2)).save(buf, format="PNG")
    return buf.getvalue()


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) -> uint8 (N, size, size, 3), bicubic with antialiasing (a no-op at the same size)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
