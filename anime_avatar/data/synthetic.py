"""Procedural anime-style illustrations with known face boxes.

Each illustration holds one to three characters on a varied background.  A
character is drawn the way the genre draws faces (large eyes with iris, pupil
and highlights, bangs and side locks, a small nose and mouth, a pointed chin,
blush), so that real anime-face detectors find them; the true face box of each
character is returned with the image, which makes detector recall measurable.

Everything is drawn at ``SUPERSAMPLE`` times the output size and downsampled
with a Lanczos filter, which gives the anti-aliased lines of digital art.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

SUPERSAMPLE = 2

Box = tuple[int, int, int, int]  # x, y, width, height in output pixels
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Illustration:
    image: Image.Image
    face_boxes: list[Box]


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(color: RGB, factor: float) -> RGB:
    return tuple(int(min(255, max(0, c * factor))) for c in color)  # type: ignore[return-value]


def _hair_color(rng: np.random.Generator) -> RGB:
    kind = rng.integers(0, 6)
    if kind == 0:  # black / dark brown
        return _hsv(rng.uniform(0.0, 0.1), rng.uniform(0.2, 0.5), rng.uniform(0.12, 0.25))
    if kind == 1:  # brown
        return _hsv(rng.uniform(0.04, 0.1), rng.uniform(0.45, 0.7), rng.uniform(0.35, 0.6))
    if kind == 2:  # blond
        return _hsv(rng.uniform(0.11, 0.15), rng.uniform(0.4, 0.65), rng.uniform(0.75, 0.9))
    if kind == 3:  # silver / white
        return _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.04, 0.15), rng.uniform(0.62, 0.8))
    # vivid genre colours: pink, red, blue, green, purple, teal ...
    return _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.45, 0.85), rng.uniform(0.5, 0.85))


def _skin_color(rng: np.random.Generator) -> RGB:
    return _hsv(rng.uniform(0.04, 0.08), rng.uniform(0.08, 0.24), rng.uniform(0.93, 1.0))


def _draw_background(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator) -> None:
    """A vertical two-colour gradient with soft shapes: sky, room, or abstract."""
    hue = rng.uniform(0, 1)
    top = np.array(_hsv(hue, rng.uniform(0.1, 0.5), rng.uniform(0.6, 1.0)), dtype=float)
    bottom = np.array(
        _hsv(hue + rng.uniform(-0.2, 0.2), rng.uniform(0.1, 0.6), rng.uniform(0.4, 0.95)),
        dtype=float,
    )
    for y in range(0, size, SUPERSAMPLE * 2):
        t = y / size
        color = tuple(int(v) for v in top * (1 - t) + bottom * t)
        draw.rectangle([0, y, size, y + SUPERSAMPLE * 2], fill=color)
    for _ in range(int(rng.integers(3, 12))):
        kind = rng.integers(0, 3)
        color = _hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.4), rng.uniform(0.5, 1.0))
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(0.03, 0.18) * size
        if kind == 0:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
        elif kind == 1:
            draw.rectangle([x - r, y - r * 0.5, x + r * 1.5, y + r], fill=color)
        else:
            w = rng.uniform(0.005, 0.02) * size
            draw.line([(x, 0), (x + rng.uniform(-0.3, 0.3) * size, size)], fill=color, width=int(w))


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def _face_outline(cx: float, cy: float, fw: float, chin: float, jaw: float) -> list[tuple[float, float]]:
    """Skin polygon: a round cranium over a jaw that narrows to a pointed chin."""
    rx = fw / 2
    top = 0.62 * fw
    pts: list[tuple[float, float]] = []
    for i in range(0, 21):  # cranium, left ear to right ear over the top
        a = math.pi + math.pi * i / 20
        pts.append((cx + rx * math.cos(a), cy + top * math.sin(a)))
    for i in range(1, 13):  # right jaw down to the chin
        s = i / 12
        x = cx + rx * (1 - s) ** jaw
        y = cy + chin * fw * (s**0.8)
        pts.append((x, y))
    for i in range(11, 0, -1):  # left jaw back up
        s = i / 12
        pts.append((cx - rx * (1 - s) ** jaw, cy + chin * fw * (s**0.8)))
    return pts


def _draw_eye(
    draw: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    ew: float,
    eh: float,
    iris: RGB,
    line: RGB,
    side: int,
    rng: np.random.Generator,
) -> None:
    """One large anime eye; ``side`` is -1 for the character's right eye (image left)."""
    draw.ellipse(_ellipse(cx, cy, ew / 2, eh / 2), fill=(255, 255, 255))
    irx, iry = ew * 0.36, eh * 0.46
    draw.ellipse(_ellipse(cx, cy + eh * 0.04, irx, iry), fill=_shade(iris, 0.55))
    draw.ellipse(_ellipse(cx, cy + eh * 0.12, irx * 0.85, iry * 0.8), fill=iris)
    draw.ellipse(_ellipse(cx, cy + eh * 0.22, irx * 0.7, iry * 0.45), fill=_shade(iris, 1.35))
    draw.ellipse(_ellipse(cx, cy + eh * 0.02, irx * 0.42, iry * 0.5), fill=_shade(iris, 0.25))
    hx = cx - side * irx * 0.35
    draw.ellipse(_ellipse(hx, cy - iry * 0.35, irx * 0.32, iry * 0.26), fill=(255, 255, 255))
    draw.ellipse(_ellipse(cx + side * irx * 0.4, cy + iry * 0.45, irx * 0.15, iry * 0.12), fill=(255, 255, 255))
    # Heavy upper lash line, thicker and flicked at the outer corner.
    lw = max(2.0, eh * rng.uniform(0.11, 0.16))
    top = cy - eh * 0.5
    outer = cx - side * ew * 0.62
    inner = cx + side * ew * 0.52
    draw.polygon(
        [
            (inner, cy - eh * 0.25),
            (cx, top - lw * 0.5),
            (outer, cy - eh * 0.36),
            (outer - side * ew * 0.12, cy - eh * 0.15),
            (outer + side * ew * 0.05, cy - eh * 0.3 + lw * 0.6),
            (cx, top + lw * 0.75),
            (inner, cy - eh * 0.2 + lw * 0.5),
        ],
        fill=line,
    )
    # Thin lower lash.
    draw.line(
        [(cx - side * ew * 0.45, cy + eh * 0.38), (cx + side * ew * 0.1, cy + eh * 0.5)],
        fill=_shade(line, 1.3),
        width=max(1, int(lw * 0.35)),
    )


def _bangs(
    cx: float, cy: float, fw: float, strands: int, length: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Front hair: a cap over the cranium whose lower edge is a row of pointed strands."""
    rx = fw * 0.6
    top = cy - 0.78 * fw
    base = cy - fw * 0.25
    pts: list[tuple[float, float]] = []
    for i in range(0, 17):  # the cap, from the right side over the top to the left
        a = -math.pi * i / 16
        pts.append((cx + rx * math.cos(a), base + (base - top) * math.sin(a)))
    xs = np.linspace(cx - rx, cx + rx, strands + 1)
    for i in range(strands):
        tip_x = (xs[i] + xs[i + 1]) / 2 + rng.uniform(-0.25, 0.25) * (xs[1] - xs[0])
        centrality = 1 - abs(tip_x - cx) / rx
        tip_y = cy - fw * 0.2 + length * fw * (0.5 + 0.5 * centrality) * rng.uniform(0.75, 1.1)
        notch_y = cy - fw * rng.uniform(0.3, 0.4)
        pts.append((xs[i], notch_y))
        pts.append((tip_x, tip_y))
    pts.append((xs[-1], cy - fw * 0.3))
    return pts


def _draw_character(img: Image.Image, cx: float, cy: float, fw: float, rng: np.random.Generator) -> None:
    """Draw a head-and-shoulders character whose face is centred at (cx, cy), width ``fw``."""
    draw = ImageDraw.Draw(img)
    hair = _hair_color(rng)
    hair_dark = _shade(hair, 0.6)
    hair_line = _shade(hair, 0.35)
    skin = _skin_color(rng)
    skin_line = _shade(skin, 0.72)
    iris = _hsv(rng.uniform(0, 1), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9))
    line = _hsv(rng.uniform(0, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.05, 0.2))
    chin = rng.uniform(0.5, 0.6)
    jaw = rng.uniform(0.45, 0.75)
    hair_len = rng.uniform(0.3, 2.2)
    outline = max(1, int(fw * 0.012))

    # Shoulders and clothes.
    cloth = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.95))
    body_top = cy + chin * fw + fw * 0.18
    draw.polygon(
        [
            (cx - fw * 0.25, body_top - fw * 0.05),
            (cx + fw * 0.25, body_top - fw * 0.05),
            (cx + fw * 1.05, body_top + fw * 0.35),
            (cx + fw * 1.2, body_top + fw * 2.0),
            (cx - fw * 1.2, body_top + fw * 2.0),
            (cx - fw * 1.05, body_top + fw * 0.35),
        ],
        fill=cloth,
        outline=_shade(cloth, 0.6),
        width=outline,
    )
    # Back hair, behind the head; long hair falls past the shoulders.
    back_w = fw * rng.uniform(0.62, 0.78)
    draw.rounded_rectangle(
        [cx - back_w, cy - 0.7 * fw, cx + back_w, cy + fw * (0.1 + hair_len)],
        radius=fw * 0.45,
        fill=hair_dark,
    )
    draw.ellipse(_ellipse(cx, cy - 0.12 * fw, fw * 0.66, fw * 0.72), fill=hair)
    # Neck, face.
    draw.rectangle([cx - fw * 0.13, cy + fw * 0.35, cx + fw * 0.13, body_top + fw * 0.02], fill=_shade(skin, 0.9))
    draw.polygon(_face_outline(cx, cy, fw, chin, jaw), fill=skin, outline=skin_line, width=outline)
    # Blush.
    if rng.random() < 0.7:
        blush = _hsv(rng.uniform(0.96, 1.0), rng.uniform(0.2, 0.35), 1.0)
        for side in (-1, 1):
            draw.ellipse(_ellipse(cx + side * fw * 0.27, cy + fw * 0.2, fw * 0.09, fw * 0.035), fill=blush)
    # Eyes, large and set low on the face.
    ew = fw * rng.uniform(0.24, 0.3)
    eh = ew * rng.uniform(1.0, 1.3)
    ey = cy + fw * rng.uniform(0.0, 0.06)
    gap = fw * rng.uniform(0.2, 0.24)
    for side in (-1, 1):
        ex = cx + side * gap
        # Eyebrow: a thin arc above the eye (bangs may cover it).
        draw.line(
            [(ex - ew * 0.4, ey - eh * 0.85), (ex, ey - eh * 0.95), (ex + ew * 0.4, ey - eh * 0.85)],
            fill=_shade(hair, 0.5),
            width=max(1, int(fw * 0.012)),
        )
        _draw_eye(draw, ex, ey, ew, eh, iris, line, side, rng)
    # Nose: a tiny shadow stroke; mouth: a small arc or a small open mouth.
    ny = cy + fw * 0.27
    draw.line([(cx + fw * 0.01, ny - fw * 0.03), (cx - fw * 0.01, ny)], fill=skin_line, width=max(1, int(fw * 0.01)))
    my = cy + fw * rng.uniform(0.38, 0.42)
    mw = fw * rng.uniform(0.05, 0.1)
    if rng.random() < 0.5:
        draw.arc([cx - mw, my - mw * 0.6, cx + mw, my + mw * 0.4], 20, 160, fill=line, width=max(1, int(fw * 0.012)))
    else:
        draw.chord([cx - mw, my - mw * 0.3, cx + mw, my + mw * 0.9], 0, 180, fill=(190, 70, 80), outline=line)
    # Side locks framing the face, then the bangs on top.
    lock_len = fw * rng.uniform(0.55, 0.9)
    for side in (-1, 1):
        x0 = cx + side * fw * 0.5
        draw.polygon(
            [
                (x0 - side * fw * 0.12, cy - fw * 0.35),
                (x0 + side * fw * 0.1, cy - fw * 0.3),
                (x0 + side * fw * 0.04, cy + lock_len),
                (x0 - side * fw * 0.04, cy + lock_len * 0.8),
            ],
            fill=hair,
            outline=hair_dark,
        )
    strands = int(rng.integers(5, 10))
    bangs = _bangs(cx, cy, fw, strands, rng.uniform(0.15, 0.3), rng)
    # The shadow that bangs cast on the forehead, as cel shading draws it.
    # Clipped to the face so it never shows over the back hair.
    face_mask = Image.new("L", img.size)
    ImageDraw.Draw(face_mask).polygon(_face_outline(cx, cy, fw * 0.97, chin, jaw), fill=255)
    shadow_mask = Image.new("L", img.size)
    ImageDraw.Draw(shadow_mask).polygon([(x, y + fw * 0.05) for x, y in bangs], fill=255)
    img.paste(_shade(skin, 0.8), mask=ImageChops.multiply(face_mask, shadow_mask))
    draw.polygon(bangs, fill=hair, outline=hair_line, width=outline * 2)
    # Strand lines from the crown towards each tip.
    tips = bangs[17:-1][1::2]
    for tx, ty in tips:
        draw.line(
            [(cx + (tx - cx) * 0.4, cy - fw * 0.6), (tx, ty - fw * 0.06)],
            fill=hair_dark,
            width=max(1, int(fw * 0.012)),
        )
    # A glossy highlight band across the top of the hair.
    draw.arc(
        _ellipse(cx, cy - fw * 0.35, fw * 0.45, fw * 0.3),
        200,
        340,
        fill=_shade(hair, 1.35),
        width=max(1, int(fw * 0.04)),
    )


def face_box(cx: float, cy: float, fw: float) -> tuple[float, float, float, float]:
    """The true face box (x, y, w, h) of a face centred at (cx, cy) with width ``fw``:
    from the top of the bangs' strands to the chin, cheek to cheek."""
    return cx - fw * 0.55, cy - fw * 0.5, fw * 1.1, fw * 1.1


def _covers(front: tuple[float, float, float], back: tuple[float, float, float]) -> bool:
    """Whether the character ``front`` (drawn later) would hide part of ``back``'s face."""
    fx, fy, fw = front
    bx, by, bw = back
    apart_sideways = abs(fx - bx) > bw * 0.6 + fw * 1.25
    back_face_above = by + bw * 0.65 < fy - fw * 0.85
    return not (apart_sideways or back_face_above)


def _place_faces(size: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Pick 1-3 face centres and widths such that no character hides another's face.

    Characters are drawn top to bottom, so a later one can only cover what lies
    below its own head; candidates that would do so are rejected.
    """
    wanted = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    placed: list[tuple[float, float, float]] = []
    for _ in range(300):
        if len(placed) == wanted:
            break
        fw = size * rng.uniform(0.12, 0.34) / math.sqrt(wanted)
        cand = (rng.uniform(fw * 0.75, size - fw * 0.75), rng.uniform(fw * 0.9, size - fw * 0.9), fw)
        ok = all(not _covers(*sorted((cand, p), key=lambda c: -c[1])) for p in placed)
        if ok:
            placed.append(cand)
    return sorted(placed, key=lambda p: p[1])


def render_illustration(seed: int, index: int, size: int = 512) -> Illustration:
    """Render illustration ``index`` of the set seeded by ``seed``.

    The pair (seed, index) alone determines the picture, so a dataset can be
    grown or sharded without changing the images it already holds.
    """
    rng = np.random.default_rng([seed, index])
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(img)
    _draw_background(draw, big, rng)
    img = img.filter(ImageFilter.GaussianBlur(radius=big * 0.004))  # soft background
    boxes: list[Box] = []
    for cx, cy, fw in _place_faces(size, rng):
        _draw_character(img, cx * SUPERSAMPLE, cy * SUPERSAMPLE, fw * SUPERSAMPLE, rng)
        x, y, w, h = face_box(cx, cy, fw)
        boxes.append((round(x), round(y), round(w), round(h)))
    return Illustration(img.resize((size, size), Image.Resampling.LANCZOS), boxes)
