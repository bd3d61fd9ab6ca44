"""The stage contracts: each artifact round-trips with its metadata, and model files cannot run code."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from anime_avatar.artifacts.checkpoint import load_checkpoint, save_checkpoint
from anime_avatar.artifacts.faces import FaceCrop, face_ids, load_faces, read_face_info, write_face_set
from anime_avatar.artifacts.generator import save_generator
from anime_avatar.artifacts.raw import RawImage, Rejected, read_manifest, write_raw_set
from anime_avatar.artifacts.reports import headline, write_metrics_and_details
from anime_avatar.artifacts.run import RunRecord, read_run_file, write_run_file
from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.errors import UserError
from anime_avatar.data.images import png_bytes
from anime_avatar.gan.model_file import load_generator
from anime_avatar.gan.nets import NetConfig, build_generator
from tests.conftest import WritesMarker

SCHEDULE = SimpleNamespace(steps=10, log_every=1)  # what load_resumable reads of a loop's params


def crop(face_id: str, colour: int, size: int = 16) -> FaceCrop:
    image = Image.new("RGB", (size, size), (colour, 255 - colour, 128))
    return FaceCrop(face_id, "a.png", (1, 2, 10, 10), (0, 0, 12, 12), 0.9, "lbp", 7, png_bytes(image))


def test_face_set_records_its_size_and_loads_in_order(tmp_path):
    crops = [crop("b-00", 10), crop("a-00", 200)]
    info = write_face_set(tmp_path, crops, [(crop("c-00", 10), crops[0], 1)], image_size=16, detector="lbp")
    assert read_face_info(tmp_path) == info and (info.image_size, info.count) == (16, 2)
    assert face_ids(tmp_path) == ["b-00", "a-00"]
    faces, ids = load_faces(tmp_path)
    assert faces.shape == (2, 16, 16, 3) and ids == ["b-00", "a-00"]
    assert tuple(faces[1, 0, 0]) == (200, 55, 128)


def test_face_set_without_its_info_names_the_stage_to_run(tmp_path):
    with pytest.raises(UserError, match="run the detect stage first"):
        load_faces(tmp_path)


def test_raw_manifest_round_trip(tmp_path):
    images = [RawImage("images/x.png", "ab" * 32, 10, 4, 5, "local:x", "CC0")]
    write_raw_set(tmp_path, images, [Rejected("y.txt", "not an image")])
    assert read_manifest(tmp_path) == images
    with pytest.raises(UserError, match="run the download stage first"):
        read_manifest(tmp_path / "missing")


def test_generator_file_says_what_rebuilds_it(tmp_path):
    config = NetConfig("sagan", 32, z_dim=16, channels=8, attention=(16,), max_channels=64)
    torch.manual_seed(0)
    g = build_generator(config).eval()
    path = tmp_path / "generator.pt"
    save_generator(path, config.to_dict(), g.state_dict(), g.state_dict(), step=12, run_id="r1", data_version="md5:x")
    loaded = load_generator(path)
    assert loaded.config == config and (loaded.step, loaded.run_id, loaded.data_version) == (12, "r1", "md5:x")
    assert (loaded.z_dim, loaded.resolution) == (16, 32)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded.net(z), g(z))


def test_generator_file_errors(tmp_path):
    with pytest.raises(UserError, match="run the train stage first"):
        load_generator(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(UserError, match="not a generator saved by the train stage"):
        load_generator(bad)


def test_a_generator_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "generator.pt"
    torch.save({"config": WritesMarker(marker)}, evil)
    with pytest.raises(UserError, match="refused to load") as err:
        load_generator(evil)
    # One line naming what was refused, not torch's advice to load the file unsafely.
    assert str(err.value).endswith("(it holds objects other than tensors: Trying to load unsupported GLOBAL "
                                   "os.makedirs whose module os is blocked)")  # fmt: skip
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_a_file_that_is_no_torch_file_or_is_truncated_says_so_in_one_line(tmp_path):
    text, truncated = tmp_path / "notes.pt", tmp_path / "cut.pt"
    text.write_text("not a model")
    save_tensors(tmp_path / "whole.pt", {"w": torch.arange(1000)})
    truncated.write_bytes((tmp_path / "whole.pt").read_bytes()[:300])  # an interrupted download
    with pytest.raises(UserError) as err:
        load_tensors(text, "translator")
    assert str(err.value) == f"{text}: not a readable translator (not a file written by torch.save)"
    # Text the weights-only unpickler reads as opcodes: an empty stack, an unknown memo key, a short length field.
    for content in (b"error: unable to download model\n", b"hello world\n", b"r\xa1"):
        text.write_bytes(content)
        with pytest.raises(UserError, match=r"not a readable translator \(not a file written by torch.save\)$"):
            load_tensors(text, "translator")
    with pytest.raises(UserError) as err:
        load_tensors(truncated, "translator")
    assert str(err.value).startswith(f"{truncated}: not a readable translator (damaged or truncated: ")
    assert "\n" not in str(err.value) and "If you are seeing this error" not in str(err.value)


def test_a_checkpoint_that_would_run_code_is_ignored_without_running_it(tmp_path, caplog):
    marker = tmp_path / "pwned"
    evil = tmp_path / "last.pt"
    torch.save({"format": 2, "step": WritesMarker(marker)}, evil)
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(evil) is None
    assert not marker.exists()
    assert "refused to load" in caplog.text and "starting from step 0" in caplog.text


def test_checkpoint_round_trip_keeps_tensors_and_plain_values(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 3, "w": torch.arange(4), "history": [{"step": 1, "loss_d": 0.5}]})
    payload = load_checkpoint(path)
    assert payload is not None and payload["step"] == 3 and torch.equal(payload["w"], torch.arange(4))
    assert payload["history"] == [{"step": 1, "loss_d": 0.5}]


def test_run_file_round_trip(tmp_path, monkeypatch):
    assert read_run_file(tmp_path) is None
    monkeypatch.chdir(tmp_path)
    write_run_file(RunRecord("abc", "1", "sqlite:///mlflow.db"))
    assert read_run_file(tmp_path) == RunRecord("abc", "1", "sqlite:///mlflow.db")


def test_training_images_must_be_square_uint8(tmp_path):
    from anime_avatar.artifacts.trainset import write_train_set

    with pytest.raises(ValueError, match="uint8"):
        write_train_set(tmp_path, np.zeros((2, 8, 4, 3), np.uint8), [], 10, 1)


def test_the_training_set_in_place_takes_images_across_shards_in_the_order_asked(tmp_path):
    from anime_avatar.artifacts.trainset import TrainImages, Variant, open_train_images, write_train_set

    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    write_train_set(tmp_path, images, [Variant(str(i), 0) for i in range(10)], 4, 1)  # shards of 4, 4, 2
    in_place = open_train_images(tmp_path)
    order = [9, 0, 4, 3, 8, 4]
    assert np.array_equal(in_place.take(order, axis=0), images.take(order, axis=0))
    assert np.array_equal(np.asarray(in_place), images) and in_place.take([]).shape == (0, 4, 4, 3)
    with pytest.raises(IndexError):
        in_place.take([10])
    with pytest.raises(ValueError):
        TrainImages([])


def test_a_training_shard_that_would_run_code_is_refused_without_running_it(tmp_path):
    from anime_avatar.artifacts.trainset import Variant, load_train_images, write_train_set

    images = np.zeros((2, 8, 8, 3), np.uint8)
    write_train_set(tmp_path, images, [Variant("a", 0), Variant("b", 0)], 10, 1)
    marker = tmp_path / "pwned"
    np.save(tmp_path / "images-00000.npy", np.array([WritesMarker(marker)], dtype=object), allow_pickle=True)
    for mmap in (True, False):
        with pytest.raises(UserError, match="not a training-image shard") as err:
            load_train_images(tmp_path, mmap=mmap)
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_a_generator_file_whose_config_asks_for_a_huge_net_is_refused_before_building_it(tmp_path):
    from anime_avatar.artifacts.generator import read_generator

    config = NetConfig("sagan", 32, z_dim=16, channels=8, attention=(16,), max_channels=64)
    g = build_generator(config)
    save_generator(tmp_path / "g.pt", config.to_dict(), g.state_dict(), g.state_dict(), step=1)
    saved = read_generator(tmp_path / "g.pt")
    huge = {**saved.config, "channels": 4096, "max_channels": 4096}  # > 8 GiB of weights if it were built
    save_generator(tmp_path / "huge.pt", huge, saved.ema, saved.generator, step=1)
    with pytest.raises(UserError, match="its weights do not fit its config") as err:
        load_generator(tmp_path / "huge.pt")
    assert "\n" not in str(err.value)
    torch.save({**torch.load(tmp_path / "g.pt", weights_only=True), "step": float("inf")}, tmp_path / "inf.pt")
    with pytest.raises(UserError, match=r"inf.pt: not a .*\(OverflowError: "):  # not an OverflowError traceback
        read_generator(tmp_path / "inf.pt")


def test_the_headline_metric_keeps_the_named_scores_nested_and_the_report_keeps_everything(tmp_path):
    full = {"attention": {"structure": 0.7, "colour": 17.0, "seconds": 0.2}, "unchanged": {"structure": 1.0},
            "gatys-vgg19": {"skipped": "no weights"}, "seconds_per_avatar": 0.01}  # fmt: skip
    keys = ("attention.structure", "adain.structure", "gatys-vgg19.skipped.why", "seconds_per_avatar")
    assert headline(full, keys) == {"attention": {"structure": 0.7}, "seconds_per_avatar": 0.01}  # absent: left out
    write_metrics_and_details(full, keys, tmp_path / "metrics/m.json", tmp_path / "reports/m.json")
    assert json.loads((tmp_path / "reports/m.json").read_text()) == full
    assert json.loads((tmp_path / "metrics/m.json").read_text()) == headline(full, keys)


def test_a_file_with_damaged_tensor_bytes_is_refused_and_such_a_checkpoint_restarts_training(tmp_path, caplog):
    # torch.load does not check the zip's CRCs: before, the damaged weights loaded as if they were the trained ones.
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 3, "w": torch.full((1000,), 7.0)})
    data = bytearray(path.read_bytes())
    at = bytes(data).index(torch.full((4,), 7.0).numpy().tobytes())
    data[at : at + 16] = bytes(16)  # four of the weights now read 0.0: a flipped disk block, a bad copy
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"last.pt: not a readable checkpoint \(damaged: its .*data/0 fails the zip's"):
        load_tensors(path, "checkpoint")
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(path) is None
    assert "fails the zip's CRC check): starting from step 0" in caplog.text
    path.write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_tensors(path, "generator")
    assert "()" not in str(err.value)  # before: "not a readable generator ()"


def test_a_checkpoint_is_read_onto_the_cpu_and_says_when_the_thread_count_changed(tmp_path, caplog):
    """A GAN checkpoint read onto the GPU held NumPy's RNG keys there (.numpy() on them: a TypeError on every resume
    on CUDA). And a CPU run resumed on another thread count rounds differently from an uninterrupted one."""
    from anime_avatar.artifacts.checkpoint import load_resumable

    before = torch.get_num_threads()
    path = tmp_path / "last.pt"
    try:
        torch.set_num_threads(1)
        save_checkpoint(path, {"fingerprint": {"a": 1}, "step": 2, "seconds": 5.0, "keys": torch.arange(3)})
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING):
            payload = load_resumable(path, {"a": 1}, SCHEDULE, "train", device="meta")  # as a GPU run would
            assert payload is not None and payload["keys"].device.type == "cpu" and caplog.text == ""
            assert load_resumable(path, {"a": 1}, SCHEDULE, "train", device="cpu") is not None
        assert "was trained on 1 CPU threads and this run has 2: it resumes" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_a_gan_checkpoint_of_another_process_count_is_not_resumed():
    from anime_avatar.gan.training import fingerprint
    from tests.conftest import params_with

    params = params_with()
    config = NetConfig("dcgan", 32, z_dim=8, channels=8, attention=(), max_channels=64)
    one, two = (fingerprint(config, params.train, "md5:x", "float32", n) for n in (1, 2))
    assert one != two and {k for k in one if one[k] != two[k]} == {"processes"}
