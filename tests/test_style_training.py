"""The stylizer's training: seeded batches, falling losses, exact resume, a clean stop on a signal; Gatys."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anime_avatar.artifacts.stylizer import stylizer_methods
from anime_avatar.core.errors import UserError
from anime_avatar.core.loops import TrainingInterrupted
from anime_avatar.data.image_sets import load_image_set, spread
from anime_avatar.style.data import StyleBatches
from anime_avatar.style.features import LAYERS, build_features
from anime_avatar.style.gatys import gatys_transfer
from anime_avatar.style.model_file import load_stylizer, save_stylizer
from anime_avatar.style.training import build_state, loss_layers, loss_parts, train_step, train_stylizers
from tests.conftest import section

SIZE = 48  # the smallest side the Inception encoder's training layers accept is 27


def tiny(**changes):
    base = {"image_size": SIZE, "steps": 4, "batch_size": 2, "threads": 1, "checkpoint_every": 2, "log_every": 1,
            "key_dim": 8, "max_keys": 64, "decoder_width": 16}  # fmt: skip
    return section("stylize", **(base | changes))


def random_images(seed: int, n: int, size: tuple[int, int]) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def batches() -> StyleBatches:
    faces = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    return StyleBatches(faces, random_images(1, 2, (70, 110)), SIZE)


def test_batches_are_a_pure_function_of_seed_and_step(batches):
    first, again = batches.batch(0, 5, 3), batches.batch(0, 5, 3)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    content, style = first
    assert content.shape == style.shape == (3, 3, SIZE, SIZE)
    assert content.min() >= 0 and content.max() <= 1 and style.min() >= 0 and style.max() <= 1
    assert not torch.equal(batches.batch(0, 6, 3)[1], style) and not torch.equal(batches.batch(1, 5, 3)[1], style)


def test_spread_takes_evenly_spaced_items():
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread(list(range(4)), 0) == [0, 1, 2, 3]
    assert spread(list(range(4)), 9) == [0, 1, 2, 3]


class FixedBatch:
    """Always the same batch: the loss on it must fall as the nets learn."""

    def __init__(self, batches: StyleBatches) -> None:
        self.content, self.style = batches.batch(0, 0, 2)

    def batch(self, seed: int, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.content, self.style


def test_a_few_training_steps_lower_each_nets_loss(batches):
    cfg = tiny(lr=0.002)
    torch.set_num_threads(1)
    state = build_state(cfg, build_features("inception", loss_layers("inception")))
    fixed = FixedBatch(batches)
    losses = [train_step(state, cfg, fixed) for _ in range(12)]  # type: ignore[arg-type]
    for method in ("attention", "adain"):
        first, last = losses[0][f"{method}_total"], losses[-1][f"{method}_total"]
        assert last < 0.8 * first, (method, first, last)


def weights(state) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v for m, net in state.nets.items() for k, v in net.state_dict()["head"].items()}


@pytest.mark.parametrize("adversarial", [0.0, 0.1])
def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(
    batches, tmp_path, adversarial, ticking_clock
):
    cfg = tiny(adversarial_weight=adversarial)
    whole = train_stylizers(cfg, batches, tmp_path / "whole.pt")
    halves = tmp_path / "halves.pt"
    train_stylizers(cfg, batches, halves, stop_after=2)
    resumed = train_stylizers(cfg, batches, halves)
    assert resumed.step == whole.step == 4
    # One tick of the clock per step: the resumed run reports both processes' time, as does one with nothing left.
    assert resumed.seconds == whole.seconds == train_stylizers(cfg, batches, halves).seconds == 4.0
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if adversarial:
        for method in ("attention", "adain"):
            da = whole.nets[method].discriminator.state_dict()
            db = resumed.nets[method].discriminator.state_dict()
            assert all(torch.equal(da[k], db[k]) for k in da)
    assert resumed.history == whole.history
    # The stage's metrics and loss log carry every part the nets log: the GAN's too (they were left out).
    from stages.stylize_train import train_metrics

    parts = loss_parts(cfg)
    assert all(set(row) == {"step"} | {f"{m}_{p}" for m in ("attention", "adain") for p in parts}
               for row in whole.history)  # fmt: skip
    assert ("adversarial" in parts and "d_loss" in parts) is bool(adversarial)
    assert set(train_metrics(whole, parts)["attention"]) == {*parts, "params"}


def test_a_checkpoint_of_other_params_or_data_is_not_resumed(batches, tmp_path, caplog):
    checkpoint = tmp_path / "last.pt"
    train_stylizers(tiny(), batches, checkpoint, data_version="v1", stop_after=2)
    caplog.set_level("INFO")
    fresh = train_stylizers(tiny(steps=1), batches, checkpoint, data_version="v2")
    assert fresh.step == 1 and "other params or data" in caplog.text
    assert train_stylizers(tiny(steps=1, lr=0.01), batches, checkpoint, data_version="v2").step == 1


def test_a_signal_stops_training_after_a_checkpoint_and_the_next_run_resumes(batches, tmp_path):
    checkpoint = tmp_path / "last.pt"

    def interrupt(step: int, losses: dict[str, float]) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="at step 2; checkpoint"):
        train_stylizers(tiny(), batches, checkpoint, on_log=interrupt)
    assert train_stylizers(tiny(), batches, checkpoint, stop_after=1).step == 3


def test_the_stylizer_file_rebuilds_each_net(batches, tmp_path):
    state = train_stylizers(tiny(steps=1), batches, tmp_path / "last.pt")
    path = tmp_path / "stylizer.pt"
    save_stylizer(path, {m: n.head for m, n in state.nets.items()}, state.step, SIZE, run_id="r1", data_version="d")
    assert stylizer_methods(path) == ["attention", "adain"]
    loaded = load_stylizer(path, "attention")
    assert (loaded.step, loaded.image_size, loaded.run_id) == (1, SIZE, "r1")
    content, style = batches.batch(0, 0, 1)
    with torch.no_grad():
        expected = state.nets["attention"].head.eval()(state.encoder(content), state.encoder(style), (SIZE, SIZE))[0]
        assert torch.allclose(loaded.net(content, style), expected, atol=1e-6)
    with pytest.raises(UserError, match="no such stylizer file"):
        load_stylizer(tmp_path / "missing.pt")
    torch.save({"format": 1, "nets": {}}, tmp_path / "empty.pt")
    with pytest.raises(UserError, match="holds no attention net"):
        load_stylizer(tmp_path / "empty.pt")
    # A config that asks for a far wider net than its weights: refused before that net is built.
    payload = torch.load(path, weights_only=True)
    payload["nets"]["attention"]["config"]["decoder_width"] = 4096
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(UserError, match="its weights do not fit its config"):
        load_stylizer(tmp_path / "huge.pt", "attention")
    # One attending to a million style positions: the same weights, quadratic memory at large sizes (10.6 GB at
    # 768 px): refused.
    payload["nets"]["attention"]["config"]["decoder_width"] = state.nets["attention"].head.cfg.decoder_width
    payload["nets"]["attention"]["config"]["max_keys"] = 1_000_000
    torch.save(payload, tmp_path / "many_keys.pt")
    with pytest.raises(UserError, match="max_keys must be 1 to 1024, got 1000000"):
        load_stylizer(tmp_path / "many_keys.pt", "attention")
    payload["nets"]["attention"]["config"]["max_keys"] = 64
    for step in ("latest", float("inf")):  # plain values of the wrong kind: one line, not a ValueError traceback
        payload["step"] = step
        torch.save(payload, tmp_path / "odd.pt")
        with pytest.raises(UserError, match="odd.pt: not a"):
            load_stylizer(tmp_path / "odd.pt", "attention")


def test_style_sets_come_from_folders_archives_and_single_files(tmp_path):
    import zipfile

    folder = tmp_path / "styles"
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(random_images(2, 3, (20, 30))):
        image.save(folder / ("sub" if i else ".") / f"s{i}.png")
    (folder / "notes.txt").write_text("not an image")
    names = [name for name, _ in load_image_set(folder, "stylize.style_path")]
    assert names == ["s0", "sub/s1", "sub/s2"]
    archive = tmp_path / "styles.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "s0.png", "a/s0.png")
    assert [n for n, _ in load_image_set(archive, "stylize.style_path")] == ["a/s0"]
    # Zipped by macOS Finder: AppleDouble members beside each file are left out. A broken member is named inside
    # its archive, not by the temporary folder it was unpacked to (gone by the time the message is read).
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("__MACOSX/a/._s0.png", b"\x00\x05\x16\x07")
        zf.writestr("a/._s0.png", b"\x00\x05\x16\x07")
    assert [n for n, _ in load_image_set(archive, "stylize.style_path")] == ["a/s0"]
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("a/s1.png", b"not a png")
    with pytest.raises(UserError) as err:
        load_image_set(archive, "stylize.style_path")
    assert str(err.value) == f"stylize.style_path: {archive}/a/s1.png is not a readable image (not an image)"
    assert len(load_image_set(folder / "s0.png", "stylize.style_path")) == 1
    with pytest.raises(UserError, match="stylize.style_path: .* does not exist"):
        load_image_set(tmp_path / "nothing", "stylize.style_path")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images in"):
        load_image_set(tmp_path / "empty", "stylize.style_path")


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_gatys_lowers_its_objective_from_the_content_image(optimizer):
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 80)
    choice = LAYERS["inception"]
    features = build_features("inception", choice.content + choice.style)
    settings = section("gatys", steps=6, optimizer=optimizer)
    result = gatys_transfer(content, style, features, settings, softmax=True, progress=False)
    assert result.image.shape == content.shape and result.image.min() >= 0 and result.image.max() <= 1
    assert 1 <= len(result.history) <= 6
    assert result.history[-1]["total"] < result.history[0]["total"]
    assert result.history[0]["content"] == pytest.approx(0.0, abs=1e-6)  # it starts from the content
    plain = gatys_transfer(content, style, features, settings, softmax=False, progress=False)
    assert not torch.equal(plain.image, result.image)


def test_the_default_training_set_resizes_the_pipelines_small_faces(tmp_path):
    faces = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    batches = StyleBatches(faces, random_images(0, 1, (40, 40)), 64)
    assert batches.content.shape == (3, 3, 64, 64) and batches.content.dtype == torch.uint8
    with pytest.raises(UserError, match="needs faces and style images"):
        StyleBatches(faces[:0], random_images(0, 1, (40, 40)), 64)


def test_checkpoint_paths_are_not_left_half_written(batches, tmp_path):
    checkpoint = tmp_path / "last.pt"
    train_stylizers(tiny(steps=1), batches, checkpoint)
    assert checkpoint.is_file() and not list(Path(tmp_path).glob(".*.tmp"))
