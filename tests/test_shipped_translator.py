"""The translator that ships with the package: tensors only, within the size limit, its record true, and it
turns a real photo (scikit-image's public-domain astronaut) into a picture the anime face detector finds a
face in."""

from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image

from anime_avatar.artifacts.torchfile import load_tensors
from anime_avatar.artifacts.translator import SHIPPED_TRANSLATOR, translator_file
from anime_avatar.core.params import PhotoFacesParams
from anime_avatar.data.detection import AnimefaceDetector
from anime_avatar.data.photos import photo_faces
from anime_avatar.translate.inference import translate_picture
from anime_avatar.translate.model_file import load_translator
from tests.conftest import ROOT

data = pytest.importorskip("skimage.data", reason="scikit-image is a dev dependency: pip install -e '.[dev]'")
RECORD = SHIPPED_TRANSLATOR.with_suffix(".json")


def test_the_shipped_translator_is_tensors_only_small_and_described_by_its_record():
    assert SHIPPED_TRANSLATOR.is_file() and SHIPPED_TRANSLATOR.stat().st_size <= 20 << 20
    payload = load_tensors(SHIPPED_TRANSLATOR, "translator")  # torch.load(weights_only=True)
    record = json.loads(RECORD.read_text())
    assert record["sha256"] == hashlib.sha256(SHIPPED_TRANSLATOR.read_bytes()).hexdigest()
    assert record["step"] == payload["step"] and record["config"] == payload["config"]
    assert record["translate_params"]["steps"] == payload["step"]
    assert record["translate_params"]["photos"].endswith("selfie2anime/trainA")
    assert record["evaluation"]["n_photos"] == 100 and "kid_x100" in record["evaluation"]["translated"]
    assert "research use only" in record["data_licence"] and "women" in record["data_licence"]
    assert SHIPPED_TRANSLATOR.is_relative_to(ROOT / "anime_avatar")  # ships inside the package, outside DVC's outputs


def test_avatar_uses_the_shipped_translator_when_the_workspace_has_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/translator.pt here
    assert translator_file() == SHIPPED_TRANSLATOR
    (tmp_path / "models").mkdir()
    (tmp_path / "models/translator.pt").write_bytes(b"")
    assert translator_file().resolve() == (tmp_path / "models/translator.pt").resolve()


def test_the_shipped_translator_turns_the_astronaut_into_an_anime_face_the_detector_finds():
    trained = load_translator(SHIPPED_TRANSLATOR)
    photo = Image.fromarray(data.astronaut())
    settings = PhotoFacesParams(margin=0.4, min_size=0.1, scale_factor=1.1, min_neighbors=5)
    (face,) = photo_faces(photo, trained.image_size, settings, largest=True)
    # At 128 px, the size translate_eval scores at (the detector's face rate there: README). At 256 px this
    # translator's astronaut is not found: see README, Photo -> anime translation, Measured.
    avatar = translate_picture(trained.net, face.crop, 128)
    assert avatar.size == (128, 128)
    found = AnimefaceDetector(min_score=0.0, min_face=24).detect(avatar)
    assert found, "the anime face detector finds no face in the translated astronaut"
    # ...and none in the photo's own crop: the translation made it an anime face.
    assert not AnimefaceDetector(min_score=0.0, min_face=24).detect(face.crop.resize((128, 128)))
