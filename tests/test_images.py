import numpy as np
import pytest
from PIL import Image

from anime_avatar.data.images import (
    check_image,
    crop_resize,
    image_stats,
    load_rgb,
    near_duplicates,
    phash64,
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
