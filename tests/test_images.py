import os
import struct
import zlib
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from anime_avatar.data.images import (
    UnreadableImage,
    center_square,
    check_image,
    crop_resize,
    fit_within,
    image_stats,
    load_rgb,
    near_duplicates,
    phash64,
    read_image,
    square_box,
)


@pytest.mark.parametrize(
    ("box", "margin", "size", "expected"),
    [
        ((40, 40, 20, 20), 0.0, (100, 100), (40, 40, 20, 20)),  # inside: unchanged
        ((40, 40, 20, 20), 0.5, (100, 100), (30, 30, 40, 40)),  # grown by half the box per side
        ((40, 40, 20, 10), 0.0, (100, 100), (40, 35, 20, 20)),  # squared on the longer side
        ((0, 0, 20, 20), 0.5, (100, 100), (0, 0, 40, 40)),  # shifted back inside at the corner
        ((85, 85, 15, 15), 0.5, (100, 100), (70, 70, 30, 30)),
        ((0, 0, 100, 60), 0.0, (100, 60), (20, 0, 60, 60)),  # larger than the image: shrunk, centred
    ],
)
def test_square_box(box, margin, size, expected):
    assert square_box(box, margin, *size) == expected


def test_crop_resize_gives_the_requested_size():
    image = Image.fromarray(np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3))
    assert crop_resize(image, (10, 10, 50, 50), 32).size == (32, 32)
    same = crop_resize(image, (10, 10, 32, 32), 32)
    assert np.array_equal(np.asarray(same), np.asarray(image)[10:42, 10:42])


def test_center_square_is_the_central_square_of_the_picture_resized():
    pixels = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    wide, tall = Image.fromarray(pixels), Image.fromarray(pixels.transpose(1, 0, 2).copy())
    assert np.array_equal(np.asarray(center_square(wide, 60)), pixels[:, 20:80])
    assert np.array_equal(np.asarray(center_square(tall, 60)), pixels.transpose(1, 0, 2)[20:80])
    assert center_square(wide, 32).size == (32, 32)


def test_check_image_accepts_images_and_names_problems(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (30, 20), (1, 2, 3)).save(good)
    assert check_image(good, 1 << 20) == check_image(good, 1 << 20)
    result = check_image(good, 1 << 20)
    assert result.ok and (result.width, result.height) == (30, 20)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert check_image(text, 1 << 20).reason.startswith("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert check_image(empty, 1 << 20).reason == "empty file"
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:-20])
    assert not check_image(truncated, 1 << 20).ok
    assert check_image(good, 10).reason.startswith("larger than")


def test_load_rgb_composites_transparency_on_white(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)
    assert np.asarray(load_rgb(path))[0, 0].tolist() == [255, 255, 255]


def test_near_duplicates_keep_the_first_of_each_group():
    hashes = [0b0, 0b1, 0xFFFF_0000_0000_0000, 0b111, 0xFFFF_0000_0000_0001]
    dropped = near_duplicates(hashes, max_distance=2)
    # 0b111 is three bits from 0: kept; the last is one bit from the kept 0xFFFF...
    assert dropped == {1: (0, 1), 4: (2, 1)}
    assert near_duplicates(hashes, max_distance=-1) == {}
    assert near_duplicates(hashes, max_distance=0) == {}


def test_phash_sees_small_changes_as_close_and_other_images_as_far():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    noisy = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    h0, h1, h2 = (phash64(Image.fromarray(a)) for a in (base, noisy, other))
    assert bin(h0 ^ h1).count("1") <= 4
    assert bin(h0 ^ h2).count("1") > 16


def test_image_stats():
    flat = np.full((8, 8, 3), 255, dtype=np.uint8)
    assert image_stats(flat) == pytest.approx((1.0, 0.0), abs=1e-6)
    half = np.zeros((8, 8, 3), dtype=np.uint8)
    half[:, :4] = 255
    assert image_stats(half) == pytest.approx((0.5, 0.5), abs=1e-6)


# --- reading every mode and bit depth, upright ------------------------------------------------------


def saved(tmp_path, image: Image.Image, fmt: str, **options) -> Path:
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, format=fmt, **options)
    return path


def on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """What a viewer shows: colour over an opaque white background (0..255 floats)."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return colour.astype(np.float64) * a + 255.0 * (1.0 - a)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257, 32896, 65535], [128, 12850, 50000, 65280]], dtype=np.uint16)
    path = saved(tmp_path, Image.fromarray(levels), "PNG")
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == [[0, 1, 128, 255], [0, 50, 195, 254]]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_32_bit_integer_and_float_images_are_scaled(tmp_path):
    ints = np.array([[-5, 0, 257, 65535, 70000]], dtype=np.int32)
    assert np.asarray(load_rgb(saved(tmp_path, Image.fromarray(ints), "TIFF")))[0, :, 0].tolist() == [0, 0, 1, 255, 255]
    floats = np.array([[-0.5, 0.0, 0.5, 1.0, 3.0, np.nan]], dtype=np.float32)
    path = saved(tmp_path, Image.fromarray(floats, "F"), "TIFF")
    assert np.asarray(load_rgb(path))[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]


@pytest.mark.parametrize(
    ("mode", "pixel", "expected"),
    [
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
        ("CMYK", (255, 0, 0, 0), (0, 255, 255)),  # pure cyan
        ("LA", (40, 0), (255, 255, 255)),  # fully transparent: the white background
        ("LA", (40, 255), (40, 40, 40)),
        ("PA", (0, 128), None),  # checked below against its palette
        ("RGBA", (255, 0, 0, 128), (255, 127, 127)),
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("1", 1, (255, 255, 255)),
    ],
)
def test_other_modes_become_rgb_on_white(tmp_path, mode, pixel, expected):
    image = Image.new(mode, (3, 2), pixel)
    if mode == "PA":
        image.putpalette([10, 20, 30] * 256)
        expected = tuple(round(c * 128 / 255 + 255 * 127 / 255) for c in (10, 20, 30))
    fmt = {"YCbCr": "JPEG", "CMYK": "TIFF", "PA": "TIFF"}.get(mode, "PNG")
    rgb = np.asarray(load_rgb(saved(tmp_path, image, fmt)))
    assert rgb.shape == (2, 3, 3)
    assert np.abs(rgb.astype(int) - expected).max() <= 1


def test_palette_with_a_transparent_index_and_rgb_with_a_transparent_colour(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette.putpixel((1, 0), 1)
    rgb = np.asarray(load_rgb(saved(tmp_path, palette, "PNG", transparency=1)))
    assert rgb.tolist() == [[[200, 0, 0], [255, 255, 255]]]
    keyed = Image.new("RGB", (2, 1), (9, 9, 9))
    keyed.putpixel((0, 0), (1, 2, 3))
    rgb = np.asarray(load_rgb(saved(tmp_path, keyed, "PNG", transparency=(1, 2, 3))))
    assert rgb.tolist() == [[[255, 255, 255], [9, 9, 9]]]


# The displayed image for each EXIF orientation, from the stored pixels ``a`` (EXIF 2.3, tag 0x0112).
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # stored rotated: shown turned 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, 1),  # shown turned 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = saved(tmp_path, Image.fromarray(stored), "PNG", exif=exif.tobytes())
    shown = ORIENTATIONS[orientation](stored)
    assert np.array_equal(np.asarray(load_rgb(path)), shown)
    check = check_image(path, 1 << 20)
    assert (check.height, check.width) == shown.shape[:2], "the manifest records the upright size"


def test_damaged_exif_is_ignored_and_the_pixels_still_read(tmp_path):
    stored = np.full((2, 2, 3), 7, dtype=np.uint8)
    path = saved(tmp_path, Image.fromarray(stored), "PNG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert np.array_equal(np.asarray(load_rgb(path)), stored)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb, as the header is read)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 4  # signature, then the IHDR chunk's length
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 4 + 13 : ihdr + 4 + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 4 + 13])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [9500, 20000])  # over Pillow's warning limit, and over its error limit
def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, side):
    path = png_claiming(tmp_path / "bomb.png", side, side)
    with pytest.raises(UnreadableImage, match=r"more than 89\.5 megapixels: refused"):
        read_image(path)
    assert "more than 89.5 megapixels" in check_image(path, 1 << 20).reason


def test_missing_and_unidentified_files_say_why(tmp_path):
    with pytest.raises(UnreadableImage, match="cannot open: No such file"):
        read_image(tmp_path / "gone.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(UnreadableImage, match="^not an image$"):
        read_image(tmp_path / "text.png")


def test_read_image_reports_the_files_own_mode_and_channels(tmp_path):
    decoded = read_image(saved(tmp_path, Image.new("LA", (2, 2)), "PNG"))
    assert (decoded.mode, decoded.channels, decoded.rgb.mode) == ("LA", 2, "RGB")


def test_fit_within_keeps_small_images_and_bounds_large_ones():
    small = Image.new("RGB", (300, 200))
    assert fit_within(small, 300) is small
    assert fit_within(Image.new("RGB", (3000, 1000)), 1000).size == (1000, 333)
    assert fit_within(Image.new("RGB", (10, 4000)), 100).size == (1, 100)


# --- property: whatever Pillow saves, the reader returns HxWx3 uint8 at the right scale --------------


@st.composite
def stored_images(draw) -> tuple[Image.Image, str, np.ndarray]:
    """An image of a random mode, size and content, a lossless format that keeps it, and what it should read as."""
    mode = draw(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    formats = {"1": ["PNG", "TIFF", "BMP"], "L": ["PNG", "TIFF", "BMP"], "LA": ["PNG", "TIFF"],
               "P": ["PNG", "TIFF", "BMP"], "RGB": ["PNG", "TIFF", "BMP"], "RGBA": ["PNG", "TIFF"],
               "I;16": ["PNG", "TIFF"], "I": ["TIFF"], "F": ["TIFF"], "CMYK": ["TIFF"]}  # fmt: skip
    fmt = draw(st.sampled_from(formats[mode]))
    u8 = hnp.arrays(np.uint8, (height, width, Image.getmodebands(mode)))
    if mode == "1":
        bits = draw(hnp.arrays(np.bool_, (height, width)))
        image = Image.fromarray(bits.astype(np.uint8) * 255, "L").convert("1")
        gray = bits.astype(np.float64) * 255
        return image, fmt, np.repeat(gray[..., None], 3, axis=2)
    if mode == "I;16":
        values = draw(hnp.arrays(np.uint16, (height, width)))
        gray = values.astype(np.float64) / 257
        return Image.fromarray(values), fmt, np.repeat(gray[..., None], 3, axis=2)
    if mode == "I":
        values = draw(hnp.arrays(np.int32, (height, width)))
        gray = np.clip(values.astype(np.float64), 0, 65535) / 257
        return Image.fromarray(values), fmt, np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        values = draw(hnp.arrays(np.float32, (height, width), elements=st.floats(-2, 2, width=32)))
        gray = np.clip(values.astype(np.float64), 0, 1) * 255
        return Image.fromarray(values, "F"), fmt, np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        indices = draw(hnp.arrays(np.uint8, (height, width)))
        palette = draw(hnp.arrays(np.uint8, (256, 3)))
        image = Image.fromarray(indices, "P")
        image.putpalette(palette.ravel().tolist())
        return image, fmt, palette[indices].astype(np.float64)
    pixels = draw(u8)
    image = Image.fromarray(pixels if mode != "L" else pixels[..., 0], mode)
    if mode == "L":
        return image, fmt, np.repeat(pixels[..., :1].astype(np.float64), 3, axis=2)
    if mode == "LA":
        return image, fmt, on_white(np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1])
    if mode == "RGBA":
        return image, fmt, on_white(pixels[..., :3], pixels[..., 3])
    if mode == "CMYK":
        c, k = pixels[..., :3].astype(np.float64), pixels[..., 3:].astype(np.float64)
        return image, fmt, (255 - c) * (255 - k) / 255
    return image, fmt, pixels.astype(np.float64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=stored_images())
def test_any_mode_and_depth_reads_back_as_rgb_uint8_at_the_right_scale(tmp_path, case):
    image, fmt, expected = case
    path = saved(tmp_path, image, fmt)
    rgb = np.asarray(load_rgb(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (*expected.shape[:2], 3)
    assert np.abs(rgb.astype(np.float64) - expected).max() <= 1.0


# --- the commands' reading of large and animated pictures (issue 22) -------------------------------------


def test_a_108_megapixel_jpeg_is_read_reduced_with_max_side_and_refused_without(tmp_path, caplog):
    """A 12000x9000 phone photo: the commands (max_side) decode it at 1/2 scale and downscale it, with a
    warning; the stages (no max_side) still refuse it. About 1 s and 0.45 GB, most of it making the file."""
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (12000, 9000), (200, 150, 120)).save(path, quality=50)
    image = read_image(path, max_side=4096)
    assert image.rgb.size == (4096, 3072) and image.rgb.mode == "RGB"
    assert image.rgb.getpixel((2048, 1536)) == pytest.approx((200, 150, 120), abs=3)
    assert f"{path}: 12000x9000 is larger than 4096 px: read downscaled to 4096x3072" in caplog.text
    with pytest.raises(UnreadableImage, match="more than 89.5 megapixels"):
        read_image(path)


def test_a_jpeg_larger_than_pillow_opens_is_read_reduced_and_a_png_bomb_stays_refused(tmp_path):
    """A JPEG header claiming 20000x20000 (over twice Pillow's limit, which Image.open refuses outright) is read
    at 1/8 scale; a PNG cannot be decoded reduced, so it is refused whatever max_side says."""
    small = tmp_path / "small.jpg"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(small)
    data = bytearray(small.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 20000, 20000)  # height, width
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    image = read_image(tmp_path / "huge.jpg", max_side=64)  # the scan is truncated: what it holds, then grey
    assert image.rgb.size == (64, 64)
    bomb = png_claiming(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(UnreadableImage, match="refused"):
        read_image(bomb, max_side=64)


def test_an_animated_gif_gives_its_first_frame_and_says_so(tmp_path, caplog):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert read_image(path).rgb.getpixel((5, 5)) == (255, 0, 0)
    assert f"{path}: an animated image: read the first of 3 frames" in caplog.text
    caplog.clear()
    frames[0].save(tmp_path / "still.gif")
    read_image(tmp_path / "still.gif")
    assert "animated" not in caplog.text


@pytest.mark.parametrize(
    ("size", "short", "expected"),
    [
        ((20000, 2), 256, (2048, 256)),  # 8:1 at most
        ((2, 20000), 256, (256, 2048)),
        ((400, 100), 256, (1024, 256)),  # 4:1: as it is
        ((1000, 100), 512, (1152, 512)),  # 8:1 would be 2.1 Mpx: cut to MAX_MADE_PIXELS (2.25:1 here)
        ((1000, 100), 768, (768, 768)),  # at the largest side only a square fits MAX_MADE_PIXELS
    ],
)
def test_resize_short_crops_extreme_aspect_ratios_to_the_pixel_budget(size, short, expected, caplog):
    from anime_avatar.core.limits import MAX_MADE_PIXELS
    from anime_avatar.style.images import resize_short

    out = resize_short(Image.new("RGB", size), short)
    assert out.size == expected and out.width * out.height <= MAX_MADE_PIXELS
    assert ("cropped to its central" in caplog.text) == (expected[0] * size[1] != expected[1] * size[0])


def test_the_crop_warning_names_the_widest_shape_the_size_allows(caplog):
    """At --size 768 an ordinary 4:3 photo is cropped square; the warning once said "at most 8:1"."""
    from anime_avatar.core.limits import widest_aspect
    from anime_avatar.style.images import resize_short

    assert [widest_aspect(side) for side in (256, 271, 384, 512, 768)] == [8, 8, 4, 2.25, 1]
    assert resize_short(Image.new("RGB", (1024, 768)), 768).size == (768, 768)
    assert ("a 1024x768 picture cropped to its central 768x768: at a shorter side of 768 px, an image is at most "
            "1:1 (589824 pixels at most, 8:1 at most)") in caplog.text  # fmt: skip


def test_short_side_box_is_central_and_refuses_a_side_over_the_limit():
    from anime_avatar.core.errors import UserError
    from anime_avatar.core.limits import MAX_SIDE, short_side_box

    assert short_side_box(100, 100, 256) is None
    assert short_side_box(20000, 2, 256) == (9992, 0, 10008, 2)
    assert short_side_box(3, 301, 16) == (0, 138, 3, 162)
    with pytest.raises(UserError, match=rf"the shorter side 100000 is outside 1\.\.{MAX_SIDE} \(pixels\)"):
        short_side_box(10, 10, 100_000)


def test_a_broken_file_that_pillow_fails_on_with_another_error_type_is_unreadable_not_a_crash(tmp_path):
    """A QOI file cut short makes Pillow's decoder raise IndexError; it once came up from the served models as a
    stack trace and from `stylize` as a traceback."""
    import io

    from anime_avatar.ops.pyfunc_images import BadRequest, decode

    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(whole, "QOI")
    cut = whole.getvalue()[:70]
    (tmp_path / "cut.qoi").write_bytes(cut)
    with pytest.raises(UnreadableImage, match="^corrupt image: IndexError: "):
        read_image(tmp_path / "cut.qoi")
    with pytest.raises(BadRequest, match="^row 0 style image cannot be decoded: corrupt image: IndexError: "):
        decode(cut, "row 0 style image")


def test_a_postscript_file_never_reaches_ghostscript(tmp_path, monkeypatch):
    """Pillow's EPS plugin runs Ghostscript on the bytes when `gs` is on the PATH: a served model or a command
    handed a client's file to it. Only the formats images come in are read."""
    from anime_avatar.ops.pyfunc_images import BadRequest, check_image_header

    marker = tmp_path / "gs-ran"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (tmp_path / "bin" / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n"
    (tmp_path / "face.eps").write_bytes(eps)
    with pytest.raises(UnreadableImage, match="^not an image$"):
        read_image(tmp_path / "face.eps")
    assert check_image(tmp_path / "face.eps", 1 << 20).reason == "not an image"
    with pytest.raises(BadRequest, match="is not an image Pillow can read"):
        check_image_header(eps, "row 0 photo")
    assert not marker.exists()
