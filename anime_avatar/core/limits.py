"""What one command or one request may ask for: the bounds every entry point checks before any work starts.

One rule per input, shared by the command line and the served models (``anime_avatar/ops/pyfunc_*.py``):

- a **seed** is a whole number in ``0 .. 2**62 - 1`` (the CLI's rule since its seeds became checked; ``torch``
  would take up to ``2**64 - 1``, but MLflow's ``long`` columns and numpy's int64 hold only up to ``2**63 - 1``
  and wrap beyond, so the bound stays well inside that);
- a **truncation** is 0 (off) or a finite number of at least :data:`MIN_TRUNCATION`: below it the redraws of
  :func:`anime_avatar.gan.inference.latent` could not bring every latent value inside the bound;
- an output **side** is a whole number in ``1 .. MAX_SIDE``;
- a request holds at most :data:`MAX_ROWS` rows and :data:`MAX_REQUEST_PIXELS` output pixels;
- an **input image** decodes to at most :data:`MAX_INPUT_PIXELS` pixels, its long side at most
  :data:`MAX_ASPECT` times its short side, and an image made from it holds at most :data:`MAX_MADE_PIXELS`
  pixels (a style image is resized to a short side of ``size``: a 20000x2 one at 256 px would be 2,560,000x256).
  The served models refuse such an input; the commands crop it to its centre (:func:`short_side_box`) and read
  inputs larger than :data:`MAX_READ_SIDE` reduced, saying so.

Each check raises :class:`LimitError` (a :class:`UserError` and a :class:`ValueError`) whose message names the
input, the value and the bound. Pure: no I/O, no third-party imports.
"""

from __future__ import annotations

import math
import numbers

from anime_avatar.core.errors import UserError

SEED_LIMIT = 2**62  # seeds lie in 0 .. SEED_LIMIT - 1
MIN_TRUNCATION = 0.05  # P(a latent value is still outside after 1000 redraws) <= 0.96**1000 ~ 2e-18
MAX_SIDE = 768  # the side of any image a request or command makes (the stylizer at 768 px: 1.7 GiB)
# Style positions one attention query weighs (stylize.max_keys, and a stylizer file's): its matrix is content
# positions x keys, 35,344 x 1,024 x 4 bytes = 145 MB at 768 px. Unbounded, a file with 1,000,000 trained the same
# at 128 px (784 positions there) and took 10.6 GB and 78 s at 768 px instead of 1.3 GB and 5.5 s.
MAX_ATTENTION_KEYS = 1024
MAX_ROWS = 64  # rows (images) per request
# rows x side**2 per request: 1 image at 768 px, 4 at 512, 16 at 256. MLflow answers with nested JSON lists,
# about 100 bytes of Python objects per pixel while it writes them, outside the model's one-at-a-time turn:
# 14 rows at 768 px took the server to 1.8 GiB, 20 concurrent requests of 3 rows at 768 px to 2.4 GiB.
MAX_REQUEST_PIXELS = 1024 * 1024
MAX_INPUT_PIXELS = 40_000_000  # one decoded input image (120 MB as 8-bit RGB)
MAX_ASPECT = 8  # an input image's long side over its short side (wider panoramas: cropped or refused)
MAX_READ_SIDE = 4096  # the commands read larger inputs reduced (JPEG draft mode) and downscale them to this side
MAX_MADE_PIXELS = MAX_SIDE * MAX_SIDE  # any image made from an input (a style image at the output size)


class LimitError(UserError, ValueError):
    """A value outside what a command or request may ask for; the message names it and the bound."""


def check_seed(value: object, what: str = "seed") -> int:
    """``value`` as a seed (a whole number in 0 .. 2**62 - 1), or LimitError."""
    number = _whole(value, what)
    if number < 0:
        wrapped = " (MLflow's long columns read 2**63 and above as negative)" if number <= -(2**62) else ""
        raise LimitError(f"{what} {number} is negative: seeds are whole numbers from 0 to 2**62-1{wrapped}")
    if number >= SEED_LIMIT:
        raise LimitError(f"{what} {number} is not below 2**62: seeds are whole numbers from 0 to 2**62-1")
    return number


def check_truncation(value: object, what: str = "truncation") -> float:
    """``value`` as a truncation: 0 (off) or a finite number >= MIN_TRUNCATION, or LimitError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LimitError(f"{what} {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise LimitError(f"{what} {number} is not a finite number >= 0 (0 = off)")
    if 0 < number < MIN_TRUNCATION:
        raise LimitError(f"{what} {number} is below {MIN_TRUNCATION}: too small to meet (latent values cannot all "
                         f"be drawn inside it); use 0 for off or at least {MIN_TRUNCATION}")  # fmt: skip
    return number


def check_side(value: object, what: str = "size") -> int:
    """``value`` as the side of an image to make (a whole number in 1 .. MAX_SIDE), or LimitError."""
    number = _whole(value, what)
    if not 1 <= number <= MAX_SIDE:
        raise LimitError(f"{what} {number} is outside 1..{MAX_SIDE} (pixels)")
    return number


def check_rows(rows: int, side: int) -> None:
    """A request of ``rows`` images of ``side`` px fits MAX_ROWS and MAX_REQUEST_PIXELS, or LimitError."""
    if rows > MAX_ROWS:
        raise LimitError(f"{rows} rows: at most {MAX_ROWS} per request (send several requests)")
    if rows * side * side > MAX_REQUEST_PIXELS:
        most = max(1, MAX_REQUEST_PIXELS // (side * side))
        raise LimitError(f"{rows} rows of {side}x{side} px: at most {most} per request at that size "
                         f"({MAX_REQUEST_PIXELS} output pixels; send several requests)")  # fmt: skip


def check_input_image(width: int, height: int, what: str = "image") -> None:
    """An input image of ``width`` x ``height`` fits MAX_INPUT_PIXELS and MAX_ASPECT, or LimitError."""
    if width * height > MAX_INPUT_PIXELS:
        raise LimitError(f"{what} {width}x{height} has more than {MAX_INPUT_PIXELS / 1e6:g} megapixels: "
                         "scale it down first")  # fmt: skip
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise LimitError(f"{what} {width}x{height}: its long side is more than {MAX_ASPECT} times its short side "
                         "(crop it closer to a square)")  # fmt: skip


def check_made_image(width: int, height: int, side: int, what: str = "image") -> None:
    """An input image of ``width`` x ``height`` resized to a short side of ``side`` px holds at most
    MAX_MADE_PIXELS, or LimitError."""
    scale = side / min(width, height)
    made_width, made_height = math.ceil(width * scale), math.ceil(height * scale)
    if made_width * made_height > MAX_MADE_PIXELS:
        raise LimitError(f"{what} {width}x{height} would be {made_width}x{made_height} px at size {side}: "
                         f"more than {MAX_MADE_PIXELS} pixels "
                         "(crop it closer to a square, or ask for a smaller size)")  # fmt: skip


def widest_aspect(short: int) -> float:
    """The longest shape (long side / short side) an image made at a shorter side of ``short`` px may have:
    MAX_ASPECT, or less where MAX_MADE_PIXELS binds (8:1 up to 271 px, 4:1 at 384, 2.25:1 at 512, 1:1 at 768)."""
    return min(MAX_ASPECT, MAX_MADE_PIXELS / short**2)


def short_side_box(width: int, height: int, short: int) -> tuple[int, int, int, int] | None:
    """The central box (left, top, right, bottom) of a ``width`` x ``height`` image that, resized to a shorter side
    of ``short`` pixels, is at most MAX_ASPECT times longer than wide and within MAX_MADE_PIXELS (so no longer than
    :func:`widest_aspect`); None when the whole image is. At large sizes the pixel limit crops ordinary photos too:
    at ``short`` = MAX_SIDE (768), everything not square.
    """
    check_side(short, "the shorter side")
    low, high = min(width, height), max(width, height)
    keep = min(low * MAX_ASPECT, MAX_MADE_PIXELS // short * low // short)  # the longer side's input pixels to keep
    keep = max(keep, low)
    if keep >= high:
        return None
    if width >= height:
        left = (width - keep) // 2
        return left, 0, left + keep, height
    top = (height - keep) // 2
    return 0, top, width, top + keep


def _whole(value: object, what: str) -> int:
    """``value`` as an int when it is a whole number (an int, or a float with no fraction), else LimitError."""
    if isinstance(value, bool):
        raise LimitError(f"{what} {value!r} is not a whole number")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        return int(value)
    raise LimitError(f"{what} {value!r} is not a whole number")
