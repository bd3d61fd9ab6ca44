"""Using a trained translator: uint8 images in, uint8 images (and what the attention looked at) out; the
sample sheets that training logs. Kept apart from the training loop: the CLI and the evaluation need only this.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from anime_avatar.nn.images import resize_images, to_uint8
from anime_avatar.translate.nets import Generator


def heatmap_image(heatmap: Tensor, size: int) -> Tensor:
    """(N, 1, h, w) CAM heatmaps -> float (N, size, size) in [0, 1]: bilinearly enlarged to the image and
    min-max normalised per image (only where the attention lies matters, not its scale)."""
    up = F.interpolate(heatmap.float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    high = up.amax(dim=(1, 2), keepdim=True)
    return (up - low) / (high - low).clamp_min(1e-8)


@torch.inference_mode()
def translate(
    net: Generator, images_uint8_nhwc: np.ndarray, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(uint8 (N, S, S, 3) translations, float32 (N, S, S) heatmaps in [0, 1] or None, float32 (N, S, S) masks
    in [0, 1] or None) for uint8 (N, S, S, 3) images, ``batch_size`` at a time on the net's device."""
    images = np.asarray(images_uint8_nhwc)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"translate expects uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    device = next(net.parameters()).device
    outs: list[Tensor] = []
    heats: list[Tensor] = []
    masks: list[Tensor] = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)  # a writable copy
        x = chunk.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # NCHW in [-1, 1] (NHWC in memory: channels_last)
        result = net(x)
        outs.append(to_uint8(result.image).permute(0, 2, 3, 1).cpu())
        if result.heatmap is not None:
            heats.append(heatmap_image(result.heatmap, x.shape[-1]).cpu())
        if result.mask is not None:
            masks.append(result.mask[:, 0].float().cpu())
    return (
        torch.cat(outs).numpy(),
        torch.cat(heats).numpy() if heats else None,
        torch.cat(masks).numpy() if masks else None,
    )


def _grey(maps: Tensor) -> Tensor:
    """float (N, H, W) in [0, 1] -> (N, 3, H, W) in [-1, 1], so a map sits in a sheet beside images."""
    return (maps * 2.0 - 1.0)[:, None].expand(-1, 3, -1, -1)


@torch.inference_mode()
def sample_sheet(g_ab: Generator, g_ba: Generator, a: Tensor, b: Tensor) -> Tensor:
    """uint8 (3, H, W) sheet, one column per sample image; rows: photo | its anime (g_ab) | the cycle back
    (g_ba(g_ab)) | the CAM heatmap | the mask (attention rows where the nets have them), then the same from anime
    faces to photos. ``a``, ``b``: float (n, 3, S, S) photos and anime faces in [-1, 1]."""
    from torchvision.utils import make_grid

    device = next(g_ab.parameters()).device
    rows: list[Tensor] = []
    for x, forward, back in ((a, g_ab, g_ba), (b, g_ba, g_ab)):
        x = x.to(device).float()
        out = forward(x)
        rows += [x, out.image, back(out.image).image]
        if out.heatmap is not None:
            rows.append(_grey(heatmap_image(out.heatmap, x.shape[-1])))
        if out.mask is not None:
            rows.append(_grey(out.mask[:, 0]))
    images = torch.cat([to_uint8(row.cpu()) for row in rows])
    return make_grid(images, nrow=len(a), padding=2)


@torch.inference_mode()
def translation_sheet(net: Generator, photos: np.ndarray, size: int) -> Tensor:
    """uint8 (3, H, W) sheet, one column per photo (uint8 NHWC, resized to the net's ``size``); rows: photo |
    translation | each attention the net has (CAM heatmap, mask) in grey."""
    from torchvision.utils import make_grid

    images = resize_images(photos, size)
    outputs, heatmaps, masks = translate(net, images)
    rows = [torch.from_numpy(images), torch.from_numpy(outputs)]
    rows += [torch.from_numpy((m * 255).round().astype(np.uint8))[..., None].expand(-1, -1, -1, 3)
             for m in (heatmaps, masks) if m is not None]  # fmt: skip
    return make_grid(torch.cat(rows).permute(0, 3, 1, 2), nrow=len(images), padding=2)


def translate_picture(net: Generator, picture, size: int):  # (PIL.Image, int) -> PIL.Image
    """One square picture (a face crop) translated at the net's resolution and written at ``size`` px: the
    picture is resized (high-quality) to the net's side, translated, and the result resized to ``size``."""
    from PIL import Image

    side = net.cfg.image_size
    image = picture.convert("RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    out, _, _ = translate(net, np.asarray(image, dtype=np.uint8)[None])
    result = Image.fromarray(out[0])
    return result if size == side else result.resize((size, size), Image.Resampling.LANCZOS)
