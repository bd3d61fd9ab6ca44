"""The translator's data and training loop: seeded batches, learning, exact resume, the synthetic photo domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.data.images import center_square
from anime_avatar.data.synthetic_photos import synthetic_photos
from anime_avatar.translate.data import load_domain
from anime_avatar.translate.inference import sample_sheet
from anime_avatar.translate.training import (
    SHEET_COLUMNS,
    TranslateBatches,
    build_state,
    fingerprint,
    train_translator,
    translator_config,
)
from tests.conftest import BIN, ROOT, params_with, run

TINY = {"image_size": 16, "channels": 8, "n_blocks": 2, "batch_size": 2, "steps": 6, "lr": 0.001, "device": "cpu",
        "attention": "cam+mask",
        "threads": 1, "log_every": 1, "checkpoint_every": 100, "sample_every": 100}  # fmt: skip


def tiny(**changes):
    return params_with({"translate": {**TINY, **changes}}).translate


def domain(colour: tuple[int, int, int], n: int, seed: int, size: int = 16) -> np.ndarray:
    """``n`` noisy images of one colour at varied brightness: two such sets are two easily told domains."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=float)[None, None, None] * rng.uniform(0.6, 1.0, (n, 1, 1, 1))
    return np.clip(base + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def batches() -> TranslateBatches:
    return TranslateBatches(domain((220, 60, 40), 8, 0), domain((40, 80, 220), 8, 1))


def test_batches_are_a_pure_function_of_seed_and_step(batches):
    a1, b1 = batches.batch(3, 7, 5)
    a2, b2 = TranslateBatches(batches.a.numpy(), batches.b.numpy()).batch(3, 7, 5)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(a1, batches.batch(3, 8, 5)[0]) and not torch.equal(a1, batches.batch(4, 7, 5)[0])
    assert a1.shape == b1.shape == (5, 3, 16, 16) and a1.dtype == torch.float32
    # Every drawn image is one of the set's, mirrored or not; over a few steps both happen.
    originals = batches.a.permute(0, 3, 1, 2).float() / 127.5 - 1
    flips = []
    for step in range(6):
        for image in batches.batch(0, step, 4)[0]:
            plain = (originals == image).flatten(1).all(1).any()
            mirrored = (originals.flip(-1) == image).flatten(1).all(1).any()
            assert plain or mirrored
            flips.append(bool(mirrored and not plain))
    assert any(flips) and not all(flips)


def test_batches_reject_mismatched_domains():
    with pytest.raises(UserError, match="differ in size"):
        TranslateBatches(domain((1, 2, 3), 2, 0, 16), domain((1, 2, 3), 2, 0, 32))
    with pytest.raises(UserError, match="square RGB photos"):
        TranslateBatches(np.zeros((2, 16, 8, 3), np.uint8), domain((1, 2, 3), 2, 0))


def test_training_lowers_the_cycle_loss(batches, tmp_path):
    state = train_translator(tiny(steps=30), batches, tmp_path / "last.pt")
    cycle = [h["cycle"] for h in state.history]
    assert len(state.history) == 30 and state.step == 30
    assert set(state.history[0]) == {"step", "loss_g", "loss_d", "adv", "cycle", "identity", "cam", "mask"}
    assert np.mean(cycle[-3:]) < 0.5 * np.mean(cycle[:3])


def test_the_mask_prior_keeps_the_mask_drawing(batches, tmp_path):
    photos = batches.fixed(8)[0]

    def drawn_share(mask_weight: float) -> tuple[float, set[str]]:
        torch.manual_seed(0)
        state = train_translator(tiny(steps=20, mask_weight=mask_weight), batches, tmp_path / f"{mask_weight}.pt")
        with torch.no_grad():
            mask = state.nets.g_ab.eval()(photos).mask
        return float(mask.mean()), set(state.history[-1])

    free, free_losses = drawn_share(0.0)
    held, held_losses = drawn_share(5.0)
    assert "mask" not in free_losses and "mask" in held_losses
    assert held > free + 0.1, (held, free)


@pytest.mark.parametrize(("attention", "ema"), [("cam+mask", 0.0), ("none", 0.0), ("cam", 0.9)])
def test_resume_gives_the_weights_of_an_uninterrupted_run(batches, tmp_path, attention, ema, ticking_clock):
    cfg = tiny(attention=attention, ema=ema)
    whole = train_translator(cfg, batches, tmp_path / "whole.pt")
    first = train_translator(cfg, batches, tmp_path / "split.pt", stop_after=3)
    assert first.step == 3
    logged = []
    second = train_translator(cfg, batches, tmp_path / "split.pt", on_log=lambda step, losses: logged.append(step))
    assert second.step == 6 and logged == [4, 5, 6]
    # One tick of the clock per step: the resumed run reports both processes' time, as does one with nothing left.
    assert second.seconds == whole.seconds == train_translator(cfg, batches, tmp_path / "split.pt").seconds == 6.0
    assert second.history == whole.history
    for key, value in whole.nets.state_dict().items():
        assert torch.equal(value, second.nets.state_dict()[key]), key
    assert ("cam" in whole.history[-1]) == (attention != "none")
    assert whole.averages.keys() == second.averages.keys() == ({"g_ab", "g_ba"} if ema else set())
    for name, average in whole.averages.items():
        assert average.step == second.averages[name].step == 6
        for key, value in average.model.state_dict().items():
            assert torch.equal(value, second.averages[name].model.state_dict()[key]), (name, key)


def test_the_weight_average_trails_the_nets_and_leaves_their_training_alone(batches, tmp_path):
    decay = 0.9
    plain = train_translator(tiny(ema=0.0), batches, tmp_path / "plain.pt")
    assert not plain.averages and plain.output("g_ab") is plain.nets.g_ab
    # Step by step (exact resume), keeping each step's weights of one generator layer.
    cfg = tiny(ema=decay)
    name, initial = next((k, v) for k, v in build_state(cfg, torch.device("cpu")).nets.g_ab.named_parameters()
                         if v.ndim == 4)  # fmt: skip
    weights = [initial.detach().clone()]
    sheets = {}
    for _ in range(cfg.steps):
        state = train_translator(cfg, batches, tmp_path / "ema.pt", stop_after=1,
                                 on_sample=lambda step, sheet: sheets.setdefault(step, sheet))  # fmt: skip
        weights.append(dict(state.nets.g_ab.named_parameters())[name].detach().clone())
    # The nets train exactly as without the average.
    for key, value in plain.nets.state_dict().items():
        assert torch.equal(value, state.nets.state_dict()[key]), key
    # The average by hand: EMA's warm-up decay min(decay, (1 + s) / (10 + s)) before update s.
    expected = weights[0]
    for s, current in enumerate(weights[1:]):
        d = min(decay, (1 + s) / (10 + s))
        expected = d * expected + (1 - d) * current
    averaged = dict(state.output("g_ab").named_parameters())[name]
    assert torch.allclose(averaged, expected, atol=1e-6) and not torch.allclose(averaged, weights[-1], atol=1e-4)
    # The run's output and its last sample sheet are the average's, not the nets'.
    assert state.output("g_ab") is state.averages["g_ab"].model and not state.output("g_ab").training
    fixed = batches.fixed(SHEET_COLUMNS)
    assert torch.equal(sheets[cfg.steps], sample_sheet(state.output("g_ab"), state.output("g_ba"), *fixed))
    assert not torch.equal(sheets[cfg.steps], sample_sheet(state.nets.g_ab, state.nets.g_ba, *fixed))


def test_the_weight_average_decay_must_be_below_one():
    with pytest.raises(UserError, match=r"translate\.ema"):
        tiny(ema=1.0)


def test_a_checkpoint_of_other_params_is_not_resumed(batches, tmp_path):
    train_translator(tiny(), batches, tmp_path / "last.pt", stop_after=3)
    other = train_translator(tiny(cycle_weight=5.0), batches, tmp_path / "last.pt", stop_after=2)
    assert other.step == 2


def test_samples_are_sheets_at_sample_every_and_at_the_end(batches, tmp_path):
    sheets = {}
    train_translator(tiny(steps=5, sample_every=2), batches, tmp_path / "last.pt",
                     on_sample=lambda step, sheet: sheets.setdefault(step, sheet))  # fmt: skip
    assert sorted(sheets) == [2, 4, 5]
    rows, columns = 10, 4  # photo, anime, cycle, heatmap, mask; then from anime; one column per sample image
    assert sheets[5].dtype == torch.uint8 and sheets[5].shape == (3, rows * 18 + 2, columns * 18 + 2)
    assert not torch.equal(sheets[2], sheets[5])


def test_divergence_names_the_learning_rate(batches, tmp_path):
    with pytest.raises(UserError, match="translate.lr"):
        train_translator(tiny(cycle_weight=1e39), batches, tmp_path / "last.pt")  # float32 overflow: inf loss


def test_wrong_image_size_is_a_user_error(batches, tmp_path):
    with pytest.raises(UserError, match="translate.image_size is 32"):
        train_translator(tiny(image_size=32), batches, tmp_path / "last.pt")


def test_fingerprint_ignores_steps_and_operational_keys():
    base = fingerprint(tiny(), "v1", "float32")
    assert fingerprint(tiny(steps=99, threads=2, log_every=5, device="auto"), "v1", "float32") == base
    assert fingerprint(tiny(lr=0.01), "v1", "float32") != base
    assert fingerprint(tiny(), "v2", "float32") != base and fingerprint(tiny(), "v1", "bfloat16") != base
    assert base["nets"]["disc_layers"] == 2  # 16 px: a 70x70 patch critic would leave no patch


def test_translator_config_follows_the_params():
    cfg = translator_config(tiny(image_size=64, channels=12, attention="mask"))
    assert (cfg.image_size, cfg.channels, cfg.disc_channels, cfg.disc_layers, cfg.attention) == (64, 12, 12, 3, "mask")


def test_synthetic_photos_are_deterministic_per_seed():
    faces = synthetic_photos(4, 32, seed=1)
    assert faces.shape == (4, 32, 32, 3) and faces.dtype == np.uint8
    assert np.array_equal(faces, synthetic_photos(4, 32, seed=1))
    assert np.array_equal(faces[:2], synthetic_photos(2, 32, seed=1))  # face i does not depend on the count
    assert not np.array_equal(faces, synthetic_photos(4, 32, seed=2))
    assert len({face.tobytes() for face in faces}) == 4 and faces.std() > 20  # varied, not flat
    centre, corner = faces[:, 12:20, 12:20].astype(float), faces[:, :4, :4].astype(float)
    assert np.abs(centre.mean(axis=(1, 2)) - corner.mean(axis=(1, 2))).max() > 10  # a face on a background


def test_sheet_columns_pair_up_when_a_domain_has_fewer_images_than_the_sheet():
    few = TranslateBatches(domain((220, 60, 40), 2, 0), domain((40, 80, 220), 10, 1))
    a, b = few.fixed(SHEET_COLUMNS)
    assert a.shape == b.shape == (2, 3, 16, 16)
    assert torch.equal(b, TranslateBatches(few.a.numpy(), few.b.numpy()).fixed(2)[1])  # the same spread
    assert [len(x) for x in TranslateBatches(few.b.numpy(), few.b.numpy()).fixed(SHEET_COLUMNS)] == [4, 4]


def test_load_domain_crops_each_image_as_it_is_read(tmp_path, monkeypatch):
    """A folder of large photos is never held at full resolution: each is cut to the square before the next is read."""
    import anime_avatar.data.image_sets as image_sets

    for i in range(3):
        Image.new("RGB", (300, 200), (60 * i, 100, 200)).save(tmp_path / f"{i}.png")
    events: list[tuple[str, tuple[int, int]]] = []
    read, crop = image_sets.read_image, center_square

    def reading(path, key, max_side=None, shown_as=None):
        image = read(path, key, max_side, shown_as)
        events.append(("read", image.size))
        return image

    def cropping(image, size):
        events.append(("crop", image.size))
        return crop(image, size)

    monkeypatch.setattr(image_sets, "read_image", reading)
    monkeypatch.setattr("anime_avatar.translate.data.center_square", cropping)
    images = load_domain(str(tmp_path), "translate.photos", 16, 0)
    assert images.shape == (3, 16, 16, 3)
    assert events == [("read", (300, 200)), ("crop", (300, 200))] * 3


def test_load_domain_reads_squares_from_a_folder(tmp_path):
    for i, (w, h) in enumerate([(40, 30), (20, 50), (32, 32)]):
        Image.new("RGB", (w, h), (10 * i, 100, 200)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_domain(str(tmp_path), "translate.anime", 16, 0)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert images[1, 8, 8].tolist() == [10, 100, 200]
    assert load_domain(str(tmp_path), "translate.anime", 16, 2).shape == (2, 16, 16, 3)
    with pytest.raises(UserError, match="translate.photos"):
        load_domain(str(tmp_path / "missing"), "translate.photos", 16, 0)


def test_load_domain_skips_macos_junk_and_reads_a_108_megapixel_phone_photo_reduced(tmp_path, caplog):
    """A folder copied from a Mac (or a zip made by its Finder) holds ._name.jpg AppleDouble files and __MACOSX/; a
    phone's 12000x9000 JPEG is over the decoder's pixel limit. Before: the first stopped translate_train ("is not
    a readable image"), and so did the second ("more than 89.5 megapixels"), which the commands read reduced."""
    Image.new("RGB", (40, 30), (200, 100, 50)).save(tmp_path / "face.jpg")
    (tmp_path / "._face.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._face.jpg").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / ".thumbnails").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".thumbnails" / "face.png")
    Image.new("RGB", (12000, 9000), (20, 150, 220)).save(tmp_path / "phone.jpg", quality=50)
    images = load_domain(str(tmp_path), "translate.photos", 16, 0)
    assert images.shape == (2, 16, 16, 3)
    assert np.abs(images[1, 8, 8].astype(int) - [20, 150, 220]).max() <= 3  # the phone photo, name order
    assert "phone.jpg: 12000x9000 is larger than 4096 px: read downscaled to 4096x3072" in caplog.text


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_process_trains(tmp_path):
    """Each rank takes half of every batch and DDP averages the gradients: the same maths as one process."""
    worker = str(ROOT / "tests" / "ddp_translate_worker.py")
    run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", worker, str(tmp_path)], ROOT)
    run([str(BIN / "python"), worker, str(tmp_path)], ROOT)
    r0, r1, alone = (torch.load(tmp_path / f"{name}.pt") for name in ("world2-rank0", "world2-rank1", "world1-rank0"))
    assert r0["step"] == r1["step"] == alone["step"] == 3
    for key, value in alone["nets"].items():
        assert torch.equal(r0["nets"][key], r1["nets"][key]), key
        torch.testing.assert_close(r0["nets"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert len(r0["history"]) == 3 and r1["history"] == []  # only the main process logs
