"""Images in requests to the served stylizer and translator: cells of image files' bytes, checked against
:mod:`anime_avatar.core.limits` from their headers (size, aspect) before any pixel is decoded, then decoded the one
way images are read (:func:`anime_avatar.data.images.load_rgb`). Every problem is a BadRequest (HTTP 400) naming
the row and column."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
import warnings
from typing import Any

import pandas as pd
from PIL import Image

from anime_avatar.core.limits import LimitError, check_input_image, check_made_image, check_rows, check_side
from anime_avatar.ops.pyfunc_guard import BadRequest, refuse

_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def image_bytes(value: Any, what: str) -> bytes:
    """An image file's bytes from a cell: bytes, or their base64 text as MLflow's request forms carry them: a
    string (``dataframe_split``/``_records``), or the text itself as bytes (``inputs``, which MLflow does not
    decode); line-wrapped base64 (``base64.encodebytes``) too. Or BadRequest."""
    if isinstance(value, str):
        return _from_base64(value.encode("ascii", "replace"), what)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        # No image file of the formats read is all base64 characters (their signatures are not), except the
        # netpbm ones ("P1".."P7", then digits and whitespace, and pixel bytes that may all be letters): anything
        # else that is, is base64 text left undecoded.
        netpbm = len(data) > 1 and data[:1] == b"P" and data[1:2] in b"1234567"
        if _BASE64_TEXT.fullmatch(data) and not netpbm:
            with contextlib.suppress(BadRequest):  # not base64 after all: read as it is
                return _from_base64(data, what)
        return data
    raise BadRequest(f"{what} is {type(value).__name__}, not an image file's bytes")


def _from_base64(text: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is text but not base64 (send the image file's bytes, base64-encoded)") from None


def check_image_header(data: bytes, what: str, resized_to: int | None = None) -> tuple[int, int]:
    """The size an image file declares, checked against the limits before anything is decoded (and, with
    ``resized_to``, the image it makes at that short side), or BadRequest."""
    from anime_avatar.data.images import READ_FORMATS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=READ_FORMATS) as im:
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadRequest(f"{what} is too large to decode safely ({err})") from None
    except Exception as err:  # Pillow raises many types for a file that is not an image
        raise BadRequest(f"{what} is not an image Pillow can read ({type(err).__name__}: {err})") from None
    try:
        check_input_image(width, height, what)
        if resized_to is not None:
            check_made_image(width, height, resized_to, what)
    except LimitError as err:
        raise refuse(err) from None
    return width, height


def decode(data: bytes, what: str) -> Image.Image:
    """A checked image file's pixels as upright 8-bit RGB (the one way images are read), or BadRequest."""
    from anime_avatar.data.images import UnreadableImage, load_rgb

    try:
        return load_rgb(io.BytesIO(data))
    except UnreadableImage as err:
        raise BadRequest(f"{what} cannot be decoded: {err}") from None


def checked_side(params: dict, default: int) -> int:
    """The ``size`` param (the output side; ``default`` when absent), checked against the limits, or BadRequest."""
    try:
        return check_side(params.get("size", default), "size")
    except LimitError as err:
        raise refuse(err) from None


def checked_images(
    frame: pd.DataFrame, columns: list[str], side: int, resized: tuple[str, ...] = ()
) -> list[list[bytes]]:
    """Each row's image files (bytes) of ``columns``, their headers checked, with the row count for images of
    ``side`` px: all before any pixel is decoded; BadRequest naming the row and column otherwise. The images of
    the ``resized`` columns are resized to a short side of ``side`` px (style images): what they make is checked."""
    try:
        check_rows(len(frame), side)
    except LimitError as err:
        raise refuse(err) from None
    rows = []
    for i, values in enumerate(zip(*(frame[c] for c in columns), strict=True)):
        row = []
        for column, value in zip(columns, values, strict=True):
            data = image_bytes(value, f"row {i} {column} image")
            check_image_header(data, f"row {i} {column} image", side if column in resized else None)
            row.append(data)
        rows.append(row)
    return rows
