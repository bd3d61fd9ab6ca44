"""The translator that ships with the package: tensors only, within the size limit, its record true, and it
redraws a real photo (scikit-image's public-domain astronaut) with her face where it was."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from anime_avatar.artifacts.torchfile import load_tensors
from anime_avatar.artifacts.translator import SHIPPED_TRANSLATOR, read_chosen_translator
from anime_avatar.core.errors import UserError
from anime_avatar.core.params import PhotoFacesParams, semantic_keys
from anime_avatar.data.photos import photo_faces
from anime_avatar.metrics.stylize import structure_score
from anime_avatar.translate.inference import translate_picture
from anime_avatar.translate.model_file import load_translator, save_translator
from anime_avatar.translate.nets import Generator, TranslatorConfig
from tests.conftest import ROOT, params_with

data = pytest.importorskip("skimage.data", reason="scikit-image is a dev dependency: pip install -e '.[dev]'")
RECORD = SHIPPED_TRANSLATOR.with_suffix(".json")


def test_the_shipped_translator_is_tensors_only_small_and_described_by_its_record():
    assert SHIPPED_TRANSLATOR.is_file() and SHIPPED_TRANSLATOR.stat().st_size <= 20 << 20
    payload = load_tensors(SHIPPED_TRANSLATOR, "translator")  # torch.load(weights_only=True)
    record = json.loads(RECORD.read_text())
    assert record["sha256"] == hashlib.sha256(SHIPPED_TRANSLATOR.read_bytes()).hexdigest()
    assert record["step"] == payload["step"] and record["config"] == payload["config"]
    assert record["translate_params"]["steps"] == payload["step"]
    assert record["translate_params"]["photos"].endswith("trainA") and "selfie2anime" in record["data_note"]
    assert record["evaluation"]["n_photos"] == 100 and "kid_x100" in record["evaluation"]["translated"]
    assert "research use only" in record["data_licence"] and "women" in record["data_licence"]
    assert SHIPPED_TRANSLATOR.is_relative_to(ROOT / "anime_avatar")  # ships inside the package, outside DVC's outputs


def test_the_records_command_sets_every_key_that_changes_the_translator():
    # Defaults change (translate.ema became 0.999 after this file was made): a command that relied on them
    # would now train something else.
    record = json.loads(RECORD.read_text())
    command = record["reproduce"].split()
    assert command[:4] == ["dvc", "exp", "run", "translate_train"] and command[4::2] == ["-S"] * len(command[4::2])
    sets = dict(part.removeprefix("translate.").split("=", 1) for part in command[5::2])
    assert sorted(sets) == sorted(key.removeprefix("translate.") for key in semantic_keys("translate"))
    made = params_with({"translate": {key: yaml.safe_load(value) for key, value in sets.items()}}).translate  # as -S
    assert made.ema == 0.0 and made.steps == record["step"]  # the nets as trained, no average
    shape = ("image_size", "channels", "n_blocks", "attention")
    assert {k: getattr(made, k) for k in shape} == {k: record["config"][k] for k in shape}


def test_avatar_uses_the_shipped_translator_when_the_workspace_has_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/translator.pt here
    path, payload = read_chosen_translator()
    assert path == SHIPPED_TRANSLATOR and payload["config"]["image_size"] == 128
    (tmp_path / "models").mkdir()
    (tmp_path / "models/translator.pt").write_bytes(b"")
    with pytest.raises(UserError, match="models/translator.pt"):  # a broken workspace translator is not skipped
        load_translator()


def test_a_workspace_translator_of_synthetic_photos_gives_way_to_the_shipped_one(tmp_path, monkeypatch, caplog):
    """`make run`'s offline default learns from procedural photos: its avatars are noise, so `avatar` and the
    studio use the shipped translator unless --model names the workspace's."""
    monkeypatch.chdir(tmp_path)
    config = TranslatorConfig(image_size=16, channels=4, n_blocks=2, attention="cam", disc_channels=4, disc_layers=2)
    for synthetic, expected in ((True, SHIPPED_TRANSLATOR), (False, Path("models/translator.pt"))):
        save_translator(Path("models/translator.pt"), Generator(config), Generator(config), step=3,
                        info={"synthetic_photos": synthetic})  # fmt: skip
        with caplog.at_level(logging.INFO, logger="anime_avatar"):
            assert read_chosen_translator()[0] == expected
            assert load_translator().path == expected
        said = "learned from synthetic photos (the offline pipeline check): using the shipped translator"
        assert (said in caplog.text) == synthetic
        caplog.clear()
    assert load_translator(Path("models/translator.pt")).path == Path("models/translator.pt")  # --model: as named


def test_the_shipped_translator_redraws_the_astronaut_and_keeps_her_face_in_place():
    trained = load_translator(SHIPPED_TRANSLATOR)
    photo = Image.fromarray(data.astronaut())
    settings = PhotoFacesParams(margin=0.4, min_size=0.1, scale_factor=1.1, min_neighbors=5)
    (face,) = photo_faces(photo, trained.image_size, settings, largest=True)
    avatar = translate_picture(trained.net, face.crop, 256)  # the avatar command's default size
    assert avatar.size == (256, 256)
    crop, drawn = (as_tensor(image.resize((trained.image_size,) * 2)) for image in (face.crop, avatar))
    # The face's edges stay where they were (edge SSIM 0.58; the offline default's 32 px, 300-step translator
    # scores 0.09, noise), and the picture is redrawn, not copied (mean change 0.15 of the range).
    assert float(structure_score(crop, drawn)) > 0.4
    assert float((crop - drawn).abs().mean()) > 0.08
    # Whether it is an anime face is for the evaluation's measures (README: the detector's face rate on 100
    # test photos); on this one picture the anime detector's answer depends on the size (none at 128 px).


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
