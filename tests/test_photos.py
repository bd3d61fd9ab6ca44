"""Faces in photos of people: the Haar cascade finds the astronaut's face; no face and several faces; the settings
are params.yaml's photo_faces section, which `anime-avatar avatar` also uses outside a project."""

from __future__ import annotations

import pytest
from PIL import Image

from anime_avatar import cli
from anime_avatar.core.errors import UserError
from anime_avatar.data.photos import detect_photo_faces, photo_faces
from tests.conftest import section

SETTINGS = section("photo_faces")

data = pytest.importorskip("skimage.data", reason="scikit-image is a dev dependency: pip install -e '.[dev]'")


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def two_people() -> Image.Image:
    """Two copies of the astronaut side by side, the second smaller."""
    photo = Image.new("RGB", (1024, 512), "white")
    photo.paste(astronaut(), (0, 0))
    photo.paste(astronaut().resize((400, 400)), (560, 50))
    return photo


def test_one_face_is_found_in_the_astronaut_photo():
    assert detect_photo_faces(astronaut(), SETTINGS) == [(177, 67, 93, 93)]
    (face,) = photo_faces(astronaut(), 128, SETTINGS)
    assert face.box == (177, 67, 93, 93) and face.crop.size == (128, 128)


def test_a_picture_without_a_face_says_so_and_suggests_no_detect():
    with pytest.raises(UserError, match="no face found in the photo.*--no-detect"):
        photo_faces(Image.new("RGB", (300, 200), (200, 180, 160)), 64, SETTINGS)


def test_several_faces_come_largest_first_or_only_the_largest():
    faces = photo_faces(two_people(), 64, SETTINGS)
    assert len(faces) == 2
    assert faces[0].box[2] > faces[1].box[2] and faces[0].box[0] < 512 <= faces[1].box[0]
    (largest,) = photo_faces(two_people(), 64, SETTINGS, largest=True)
    assert largest.box == faces[0].box


def test_the_settings_change_what_is_found_and_how_it_is_cropped():
    assert detect_photo_faces(astronaut(), section("photo_faces", min_size=0.5)) == []  # the face is 93 of 512 px
    (tight,) = photo_faces(astronaut(), 93, section("photo_faces", margin=0.0))
    assert tight.crop.tobytes() == astronaut().crop((177, 67, 270, 160)).tobytes()


def test_avatar_outside_a_project_uses_the_settings_the_project_ships(tmp_path):
    assert cli._photo_faces_settings(str(tmp_path / "params.yaml")) == SETTINGS
