"""Synthetic photo-like faces: the offline default of the translator's photo domain (``photos.source: synthetic``).

Smooth, shaded skin-tone faces with soft lighting, sensor noise and no outlines: the opposite of the anime
domain's flat colours and ink lines. They exist to check the pipeline end to end without data; they are not
photos of people, and a translator trained on them says nothing about real photos.
"""

from __future__ import annotations

import numpy as np

# Skin tones from light to dark (linear RGB in 0..1), interpolated at random.
_SKIN_LIGHT, _SKIN_DARK = np.array([0.96, 0.80, 0.69]), np.array([0.42, 0.27, 0.19])
# Hair: black, brown, light brown, blond, auburn, grey.
_HAIR = np.array([[0.06, 0.05, 0.05], [0.25, 0.15, 0.08], [0.45, 0.30, 0.15], [0.78, 0.64, 0.38],
                  [0.50, 0.20, 0.10], [0.55, 0.55, 0.55]])  # fmt: skip


def synthetic_photos(count: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (count, size, size, 3) photo-like faces; face i depends only on (seed, i), not on ``count``."""
    if count < 1:
        raise ValueError(f"synthetic_photos needs count >= 1 (got {count})")
    return np.stack([render_photo(seed, i, size) for i in range(count)])


def render_photo(seed: int, index: int, size: int) -> np.ndarray:
    """uint8 (size, size, 3): face ``index`` of the set of ``seed``."""
    if size < 8 or seed < 0 or index < 0:
        raise ValueError(f"render_photo needs size >= 8, seed >= 0 and index >= 0 (got {size}, {seed}, {index})")
    return _photo(np.random.default_rng([seed, index]), size)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) bilinearly interpolated Gaussian values on a (cells + 1)^2 grid: low-frequency blotches."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, size)
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[..., None]) + colour * alpha[..., None]


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """A soft elliptical Gaussian spot (1 at its centre): features without outlines."""
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """One face, rendered at twice ``size`` and averaged down 2x2 (smooth edges, as a lens gives)."""
    n = 2 * size
    y, x = np.mgrid[0:n, 0:n] / (n - 1) * 2.0 - 1.0  # [-1, 1], y down
    # Background: a gradient between two muted colours along a random direction, with soft blotches.
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip((x * np.cos(angle) + y * np.sin(angle)) * 0.5 + 0.5, 0, 1)[..., None]
    image = rng.uniform(0.15, 0.85, 3) * (1 - t) + rng.uniform(0.15, 0.85, 3) * t
    image = image + 0.05 * _smooth_noise(rng, n, 4)[..., None]
    # Geometry of the head.
    cx, cy = rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.12)
    rx = rng.uniform(0.38, 0.48)
    ry = rx * rng.uniform(1.2, 1.4)
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.2), 1.0])
    light /= np.linalg.norm(light)
    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.uniform(0, 1) + rng.normal(0, 0.02, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2) + rng.normal(0, 0.02, 3)
    shirt = rng.uniform(0.05, 0.9, 3)
    soft = 3.0 / n  # edge softness, in [-1, 1] units
    # Shoulders and neck, then hair behind the head (longer on the sides), then the face.
    shoulders = ((x - cx) / (rx * 2.4)) ** 2 + ((y - 1.25) / 0.55) ** 2
    image = _blend(image, shirt * (0.8 + 0.2 * (1 - y) / 2)[..., None], _smoothstep(1 + soft, 1 - soft, shoulders))
    neck_alpha = _smoothstep(1 + soft, 1 - soft, np.abs(x - cx) / (rx * 0.45)) * _smoothstep(cy, cy + 0.1, y)
    image = _blend(image, skin * 0.75, neck_alpha * (1 - _smoothstep(1 + soft, 1 - soft, shoulders)))
    length = rng.uniform(0.3, 1.1)  # how far below the chin the hair falls
    back = ((x - cx) / (rx * 1.22)) ** 2 + ((y - cy + 0.1 * ry) / (ry * 1.12)) ** 2
    end = cy + ry * length
    falls = _smoothstep(1 + soft, 1 - soft, np.abs(x - cx) / (rx * 1.22)) * _smoothstep(end + 0.05, end, y)
    hair_alpha = np.maximum(_smoothstep(1 + soft, 1 - soft, back), falls * (y > cy))
    hair_shade = (0.8 + 0.1 * _smooth_noise(rng, n, 12) - 0.15 * y)[..., None]  # strands' sheen, lit from above
    image = _blend(image, hair * hair_shade, hair_alpha)
    u, v = (x - cx) / rx, (y - cy) / ry
    d2 = u**2 + v**2
    nz = np.sqrt(np.clip(1 - d2, 0, 1))
    diffuse = np.clip(u * light[0] + v * light[1] + nz * light[2], 0, 1)
    face = skin * (0.55 + 0.5 * diffuse)[..., None]
    image = _blend(image, face, _smoothstep(1 + 4 * soft, 1 - 4 * soft, np.sqrt(d2)))
    # Features: soft shadows and tints only.
    eye_y, eye_dx = cy - 0.05 * ry, 0.38 * rx
    for side in (-1, 1):
        ex = cx + side * eye_dx
        image = _blend(image, np.array([0.12, 0.09, 0.08]), 0.8 * _blob(x, y, ex, eye_y, 0.10 * rx, 0.05 * ry))
        image = _blend(image, hair * 0.8, 0.5 * _blob(x, y, ex, eye_y - 0.16 * ry, 0.16 * rx, 0.03 * ry))
        image = _blend(image, np.array([0.85, 0.45, 0.45]), 0.12 * _blob(x, y, ex, cy + 0.22 * ry, 0.18 * rx, 0.1 * ry))
    nose_x = cx + 0.05 * rx * light[0]  # its shadow falls away from the light
    image = _blend(image, skin * 0.6, 0.35 * _blob(x, y, nose_x, cy + 0.18 * ry, 0.06 * rx, 0.08 * ry))
    image = _blend(image, np.array([0.62, 0.28, 0.28]), 0.6 * _blob(x, y, cx, cy + 0.5 * ry, 0.22 * rx, 0.045 * ry))
    # Bangs over the forehead, with a wavy lower edge.
    bang_line = cy - ry * rng.uniform(0.35, 0.7) + 0.04 * np.sin(x * rng.uniform(8, 16) + rng.uniform(0, 6))
    bangs = _smoothstep(bang_line + 2 * soft, bang_line - 2 * soft, y) * _smoothstep(1 + soft, 1 - soft, back)
    image = _blend(image, hair * hair_shade, bangs)
    # Soft room light across the frame, then sensor noise.
    image = image * (0.85 + 0.15 * (x * light[0] + y * light[1]))[..., None]
    image = image + rng.normal(0, 0.02, image.shape)
    small = image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    return (np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)
