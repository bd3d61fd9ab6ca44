import json

import numpy as np
import pytest
from PIL import Image

from anime_avatar.artifacts.trainset import Variant, load_train_images, read_train_info, write_train_set
from anime_avatar.core.errors import ParamsError
from anime_avatar.data.augment import augment_faces, build_pipeline, check_transforms, per_face
from tests.conftest import params_with, peak_traced_bytes, section


def faces(n: int = 5, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_default_keeps_originals_then_adds_mirrored_copies():
    x = faces()
    images, variants = augment_faces(x, list("abcde"), section("augment"))
    assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8
    assert np.array_equal(images[:5], x)
    assert np.array_equal(images[5:], x[:, :, ::-1])
    assert [(v.face_id, v.copy) for v in variants] == [(c, 0) for c in "abcde"] + [(c, 1) for c in "abcde"]


def test_copies_without_originals_and_seeded_randomness():
    spec = [{"name": "HorizontalFlip", "p": 0.5}]
    params = section("augment", transforms=spec, copies=3, keep_original=False, seed=7)
    assert per_face(params) == 3
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
        build_pipeline(section("augment", transforms=[spec]))


def test_transforms_that_change_the_size_are_refused():
    params = section("augment", transforms=[{"name": "Resize", "height": 8, "width": 8}])
    with pytest.raises(ParamsError, match="keep the image size"):
        augment_faces(faces(), list("abcde"), params)


def test_training_set_round_trip_records_its_facts(tmp_path):
    x = faces(10)
    variants = [Variant(str(i % 5), i // 5) for i in range(10)]
    info = write_train_set(tmp_path, x, variants, shard_size=4, per_face=2)
    assert [count for _, count in info.shards] == [4, 4, 2]
    assert read_train_info(tmp_path) == info
    assert (info.count, info.image_size, info.per_face) == (10, 16, 2)
    assert np.array_equal(np.asarray(load_train_images(tmp_path)), x)


# --- a transform that cannot apply to the crops is named before any work ----------------------------


def test_a_crop_larger_than_the_faces_is_named_even_when_rarely_drawn():
    spec = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomCrop", "height": 64, "width": 64, "p": 0.01}]
    params = section("augment", transforms=spec)
    with pytest.raises(ParamsError) as err:
        check_transforms(params, image_size=32)
    assert str(err.value).startswith(
        "augment.transforms[1] (RandomCrop) cannot apply to the 32x32 face crops (detect.image_size): "
    )
    check_transforms(params, image_size=64)  # fits crops of 64


def test_a_transform_that_changes_the_size_is_named():
    params = section("augment", transforms=[{"name": "Resize", "height": 8, "width": 16}])
    with pytest.raises(ParamsError, match=r"augment.transforms\[0\] \(Resize\) must keep the crops' size and uint8 "
                                          r"type: it turns 32x32 uint8 into 16x8 uint8"):  # fmt: skip
        check_transforms(params, image_size=32)


def test_usual_transforms_pass_the_check():
    spec = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomCrop", "height": 32, "width": 32},
            {"name": "Affine", "rotate": [-5, 5], "p": 0.5}]  # fmt: skip
    check_transforms(section("augment", transforms=spec), image_size=32)


def test_augment_stage_checks_the_transforms_before_loading_a_face(tmp_path, monkeypatch):
    import stages.augment
    from anime_avatar.artifacts.faces import FaceSetInfo

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "index.json").write_text("previous")
    monkeypatch.setattr(stages.augment, "read_face_info", lambda folder: FaceSetInfo(32, 10, "animeface"))
    monkeypatch.setattr(stages.augment, "FaceFiles", lambda folder: pytest.fail("faces loaded before the check"))
    spec = [{"name": "RandomCrop", "height": 48, "width": 48}]
    with pytest.raises(ParamsError, match=r"augment.transforms\[0\] \(RandomCrop\) cannot apply to the 32x32"):
        stages.augment.augment(params_with({"augment": {"transforms": spec}}))
    assert (tmp_path / "data" / "train" / "index.json").read_text() == "previous"


def test_copies_of_a_pipeline_that_draws_one_image_are_refused_and_random_ones_pass():
    flip = [{"name": "HorizontalFlip", "p": 1.0}]
    with pytest.raises(ParamsError, match=r"^augment.copies is 2 but augment.transforms draw the same image every "):
        check_transforms(section("augment", transforms=flip, copies=2), image_size=16)
    check_transforms(section("augment", transforms=flip, copies=1), image_size=16)  # one mirrored copy: useful
    check_transforms(section("augment", transforms=[{"name": "HorizontalFlip", "p": 0.5}], copies=2), image_size=16)


@pytest.mark.parametrize("transforms", [[], [{"name": "HorizontalFlip", "p": 0.0}]])
def test_copies_that_never_change_the_image_beside_the_originals_are_refused(transforms):
    """copies: 1 with keep_original and no transform that changes anything put every face in twice, unchanged."""
    params = section("augment", transforms=transforms, copies=1, keep_original=True)
    refused = r"^augment.copies is 1 with augment.keep_original, but .* every face would be in the training set 2 "
    with pytest.raises(ParamsError, match=refused):
        check_transforms(params, image_size=16)
    check_transforms(params.model_copy(update={"keep_original": False}), image_size=16)  # the faces once: fine
    check_transforms(params.model_copy(update={"copies": 0}), image_size=16)
    rare = [{"name": "HorizontalFlip", "p": 0.05}]  # changes one copy in twenty: decided from the spec, not sampled
    for seed in range(10):
        check_transforms(section("augment", transforms=rare, copies=1, keep_original=True, seed=seed), image_size=16)


def test_a_transform_that_resizes_on_some_draws_only_is_named_not_a_traceback():
    params = section("augment", transforms=[{"name": "RandomScale", "scale_limit": 0.02}], copies=1)
    check_transforms(params, image_size=32)  # the sample's draw keeps the size: the check cannot see it
    message = r"^augment.transforms must keep the image size and uint8 type: copy 1 of face \d+ came out uint8 \(3[13]"
    with pytest.raises(ParamsError, match=message):
        augment_faces(faces(40, 32), [str(i) for i in range(40)], params)


# --- the stage works shard by shard: same bytes as the whole-set method, in a fraction of its memory -------------


RANDOM_SPEC = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "Affine", "rotate": [-8, 8], "p": 0.5}]


def face_set(folder, n: int, size: int = 16) -> tuple[np.ndarray, list[str]]:
    """A face set of ``n`` random crops in ``folder``, as the detect stage writes it."""
    from anime_avatar.artifacts.faces import FaceCrop, write_face_set
    from anime_avatar.data.images import png_bytes

    x = faces(n, size)
    ids = [f"{i:016x}-00" for i in range(n)]
    box = (0, 0, size, size)
    crops = [FaceCrop(fid, "a.png", box, box, 1.0, "none", i, png_bytes(Image.fromarray(face)))
             for i, (fid, face) in enumerate(zip(ids, x, strict=True))]  # fmt: skip
    folder.mkdir(parents=True)
    write_face_set(folder, crops, [], image_size=size, detector="none")
    return x, ids


def whole_set_reference(x: np.ndarray, params) -> np.ndarray:
    """The training images as the stage made them before it streamed: every copy of every face, concatenated."""
    pipeline = build_pipeline(params)
    out = [x] if params.keep_original else []
    for _ in range(params.copies):
        out.append(np.stack([pipeline(image=face)["image"] for face in x]))
    return np.concatenate(out)


def augment_params(shard_size: int, copies: int = 2):  # -> Params
    return params_with({"augment": {"transforms": RANDOM_SPEC, "copies": copies, "seed": 3, "shard_size": shard_size}})


def test_augment_stage_writes_the_bytes_of_the_whole_set_method(tmp_path, monkeypatch):
    import stages.augment

    monkeypatch.chdir(tmp_path)
    x, ids = face_set(tmp_path / "data" / "faces", n=23)
    params = augment_params(shard_size=10)
    stages.augment.augment(params)
    train = tmp_path / "data" / "train"
    reference = whole_set_reference(x, params.augment)  # 69 images: shards of 10, 10, ..., 9
    info = json.loads((train / "index.json").read_text())
    assert info["count"] == 69 and [s["count"] for s in info["shards"]] == [10] * 6 + [9]
    for k, shard in enumerate(info["shards"]):
        expected = tmp_path / "expected.npy"
        np.save(expected, np.ascontiguousarray(reference[10 * k : 10 * k + 10]))
        assert (train / shard["file"]).read_bytes() == expected.read_bytes(), shard["file"]
    whole = tmp_path / "whole"
    whole.mkdir()
    write_train_set(whole, reference, [Variant(f, c) for c in range(3) for f in ids], 10, 3)
    for name in ("index.json", "index.csv"):
        assert (train / name).read_bytes() == (whole / name).read_bytes(), name


def test_augment_stage_peak_memory_is_a_few_shards_not_the_whole_set(tmp_path, monkeypatch):
    """The stage once held ~4x the training set (faces, copies, their concatenation); now one shard at a time."""
    import stages.augment

    monkeypatch.setattr(stages.augment, "check_transforms", lambda params, size: None)  # not what is measured
    monkeypatch.chdir(tmp_path)
    n, size = 600, 48  # 1800 training images: 12.4 MB; a shard of 60: 415 kB
    face_set(tmp_path / "data" / "faces", n, size)
    params = augment_params(shard_size=60)
    whole_set = 3 * n * size * size * 3
    build_pipeline(params.augment)  # albumentations' import (tens of MB) before the measure
    peak = peak_traced_bytes(lambda: stages.augment.augment(params))
    assert len(load_train_images(tmp_path / "data" / "train")) == 3 * n
    assert peak < whole_set / 4, f"peak {peak / 1e6:.2f} MB for a {whole_set / 1e6:.2f} MB training set"


def test_write_train_set_writes_each_shard_before_the_next_is_made(tmp_path):
    written: list[int] = []  # shards on disk when each image was asked for

    def images():
        for i in range(10):
            written.append(len(list(tmp_path.glob("images-*.npy"))))
            yield np.full((8, 8, 3), i, np.uint8)

    info = write_train_set(tmp_path, images(), [Variant(str(i), 0) for i in range(10)], shard_size=4, per_face=1)
    assert written == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert [c for _, c in info.shards] == [4, 4, 2] and (info.count, info.image_size) == (10, 8)
    assert np.array_equal(load_train_images(tmp_path)[:, 0, 0, 0], np.arange(10))


def test_write_train_set_refuses_images_of_mixed_sizes(tmp_path):
    with pytest.raises(ValueError, match="one shape"):
        write_train_set(tmp_path, iter([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 9, 3), np.uint8)]), [], 4, 1)
    with pytest.raises(ValueError, match="all be 8x8"):
        write_train_set(tmp_path, iter([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 9, 3), np.uint8)]), [], 1, 1)
    with pytest.raises(ValueError, match="uint8"):
        write_train_set(tmp_path, iter([np.zeros((8, 8, 3), np.float32)]), [], 4, 1)


def test_the_real_faces_are_read_batch_by_batch_and_not_at_all_once_their_features_are_cached(tmp_path, monkeypatch):
    """The evaluate stage once loaded every crop before looking in its feature cache; now a hit reads none."""
    from anime_avatar.artifacts import faces as face_files
    from anime_avatar.metrics import feature_cache

    x, _ = face_set(tmp_path / "faces", 10)
    reads: list[str] = []
    read_face = face_files.read_face
    monkeypatch.setattr(face_files, "read_face", lambda *args: reads.append(args[1]) or read_face(*args))
    seen: list[np.ndarray] = []

    def features(batches, *args, **kwargs) -> np.ndarray:  # Inception is not what is tested
        seen.extend(batches)
        return np.zeros((sum(len(b) for b in seen), 2048), np.float32)

    monkeypatch.setattr(feature_cache, "extract_features", features)
    monkeypatch.setattr(feature_cache, "default_cache_dir", lambda: tmp_path / "cache")
    files = face_files.FaceFiles(tmp_path / "faces")
    cfg = params_with({}).eval

    first = feature_cache.eval_real_features(files.batches(4), "md5:abc", cfg, total=len(files))
    assert first.shape == (10, 2048) and len(reads) == 10
    assert [len(b) for b in seen] == [4, 4, 2] and np.array_equal(np.concatenate(seen), x)
    again = feature_cache.eval_real_features(files.batches(4), "md5:abc", cfg, total=len(files))
    assert np.array_equal(again, first) and len(reads) == 10  # the second evaluation read no face
