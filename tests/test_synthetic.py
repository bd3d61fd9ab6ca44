import json

import numpy as np
import pytest

from anime_avatar.data.synthetic import face_box, render_illustration


def test_same_seed_and_index_give_the_same_picture():
    a = render_illustration(3, 7, size=256)
    b = render_illustration(3, 7, size=256)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.face_boxes == b.face_boxes


def test_different_index_or_seed_give_different_pictures():
    base = np.asarray(render_illustration(3, 7, size=256).image)
    assert not np.array_equal(base, np.asarray(render_illustration(3, 8, size=256).image))
    assert not np.array_equal(base, np.asarray(render_illustration(4, 7, size=256).image))


@pytest.mark.parametrize("index", range(12))
def test_faces_lie_inside_the_picture_and_do_not_overlap(index):
    ill = render_illustration(0, index, size=512)
    assert ill.image.size == (512, 512) and ill.image.mode == "RGB"
    assert 1 <= len(ill.face_boxes) <= 3
    for x, y, w, h in ill.face_boxes:
        assert w == h and w >= 24
        assert x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512
    boxes = ill.face_boxes
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (x1, y1, w1, _), (x2, y2, w2, _) = boxes[i], boxes[j]
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + w1 <= y2 or y2 + w2 <= y1


def test_set_has_one_to_three_characters_and_varied_sizes():
    counts, widths = [], []
    for i in range(40):
        boxes = render_illustration(1, i, size=512).face_boxes
        counts.append(len(boxes))
        widths += [b[2] for b in boxes]
    assert set(counts) == {1, 2, 3}
    assert min(widths) < 80 and max(widths) > 150


def test_face_box_is_square_and_centred():
    x, y, w, h = face_box(100.0, 200.0, 50.0)
    assert w == h == pytest.approx(55.0)
    assert x + w / 2 == pytest.approx(100.0)
    assert json.dumps([x, y, w, h])  # plain floats, serialisable into the manifest
