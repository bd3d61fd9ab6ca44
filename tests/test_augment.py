import numpy as np
import pytest

from anime_avatar.augment import augment_faces, build_pipeline, load_train_images, write_shards
from anime_avatar.errors import ParamsError
from anime_avatar.params import AugmentParams, TransformSpec


def faces(n: int = 5, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_default_keeps_originals_then_adds_mirrored_copies():
    x = faces()
    images, variants = augment_faces(x, list("abcde"), AugmentParams())
    assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8
    assert np.array_equal(images[:5], x)
    assert np.array_equal(images[5:], x[:, :, ::-1])
    assert [(v.face_id, v.copy) for v in variants] == [(c, 0) for c in "abcde"] + [(c, 1) for c in "abcde"]


def test_copies_without_originals_and_seeded_randomness():
    spec = [TransformSpec(name="HorizontalFlip", p=0.5)]
    params = AugmentParams(transforms=spec, copies=3, keep_original=False, seed=7)
    x = faces(20)
    a, variants = augment_faces(x, [str(i) for i in range(20)], params)
    b, _ = augment_faces(x, [str(i) for i in range(20)], params)
    assert a.shape[0] == 60 and {v.copy for v in variants} == {0, 1, 2}
    assert np.array_equal(a, b), "the same augment.seed must give the same training set"
    flipped = [np.array_equal(a[i], x[i % 20, :, ::-1]) for i in range(60)]
    assert 10 < sum(flipped) < 50  # p=0.5 really draws


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "NoSuchTransform"}, r"augment.transforms\[0\].name: 'NoSuchTransform' is not"),
        ({"name": "Compose"}, "is not an albumentations transform"),
        ({"name": "HorizontalFlip", "bogus": 1}, r"augment.transforms\[0\] \(HorizontalFlip\)"),
    ],
)
def test_bad_transforms_name_the_entry(spec, message):
    with pytest.raises(ParamsError, match=message):
        build_pipeline(AugmentParams(transforms=[TransformSpec(**spec)]))


def test_transforms_that_change_the_size_are_refused():
    params = AugmentParams(transforms=[TransformSpec(name="Resize", height=8, width=8)])
    with pytest.raises(ParamsError, match="keep the image size"):
        augment_faces(faces(), list("abcde"), params)


def test_shards_round_trip(tmp_path):
    import json

    x = faces(10)
    shards = write_shards(x, tmp_path, shard_size=4)
    assert [s["count"] for s in shards] == [4, 4, 2]
    (tmp_path / "index.json").write_text(json.dumps({"shards": shards}))
    assert np.array_equal(np.asarray(load_train_images(tmp_path)), x)
