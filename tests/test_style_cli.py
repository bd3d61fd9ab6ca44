"""`anime-avatar stylize`, `avatar` and `generate --style` end to end on small images."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from anime_avatar import cli
from anime_avatar.artifacts.generator import save_generator
from anime_avatar.gan.nets import build_generator, net_config
from anime_avatar.style.features import LAYERS, build_features
from anime_avatar.style.model_file import save_stylizer
from anime_avatar.style.nets import FusionHead, fusion_config
from tests.conftest import ROOT, params_with, run

data = pytest.importorskip("skimage.data", reason="scikit-image is a dev dependency: pip install -e '.[dev]'")
PARAMS = str(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A small untrained stylizer, a small generator, a style image, two faces and the astronaut photo."""
    work = tmp_path_factory.mktemp("style-cli")
    torch.manual_seed(0)
    encoder = build_features("inception", LAYERS["inception"].fusion_scales)
    heads = {m: FusionHead(fusion_config(m, encoder, LAYERS["inception"].fusion_scales, 8, 64, 16))
             for m in ("attention", "adain")}  # fmt: skip
    save_stylizer(work / "stylizer.pt", heads, step=0, image_size=64)
    config = net_config(params_with({"model": {"channels": 8, "z_dim": 16}}).model, 32)
    generator = build_generator(config)
    save_generator(work / "generator.pt", config.to_dict(), generator.state_dict(), generator.state_dict(), step=1)
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    Image.fromarray(data.chelsea()).save(work / "style.jpg")  # a cat: any picture can be a style
    faces = work / "faces"
    faces.mkdir()
    for i, colour in enumerate([(230, 190, 170), (90, 140, 200)]):
        Image.new("RGB", (80, 60), colour).save(faces / f"face{i}.png")
    return {"work": work, "stylizer": str(work / "stylizer.pt"), "generator": str(work / "generator.pt"),
            "photo": work / "astronaut.png", "style": str(work / "style.jpg"), "faces": faces}  # fmt: skip


def main(*argv: str) -> None:
    cli.main(["--params", PARAMS, *argv])


@pytest.mark.parametrize("method", ["network", "adain"])
def test_stylize_a_file_with_a_trained_net(files, tmp_path, method):
    out = tmp_path / "avatar.png"
    main("stylize", "--content", str(files["faces"] / "face0.png"), "--style", files["style"], "--out", str(out),
         "--method", method, "--model", files["stylizer"], "--size", "48")  # fmt: skip
    assert Image.open(out).size == (64, 48)  # the content's shorter side at --size, its aspect kept


def test_stylize_a_folder_with_gatys_writes_one_image_each(files, tmp_path):
    out = tmp_path / "styled"
    main("stylize", "--content", str(files["faces"]), "--style", files["style"], "--out", str(out),
         "--method", "gatys", "--steps", "2", "--size", "48")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["face0.png", "face1.png"]
    styled, original = Image.open(out / "face0.png"), Image.open(files["faces"] / "face0.png").resize((64, 48))
    assert styled.size == (64, 48) and styled.tobytes() != original.tobytes()


def test_avatar_finds_the_one_face_in_the_photo(files, tmp_path, caplog):
    out = tmp_path / "avatar.png"
    with caplog.at_level(logging.INFO):
        main("avatar", "--photo", str(files["photo"]), "--style", files["style"], "--out", str(out),
             "--method", "network", "--model", files["stylizer"], "--size", "64")  # fmt: skip
    assert Image.open(out).size == (64, 64)
    assert "face 1 at x=177 y=67, 93x93 px" in caplog.text


def test_avatar_without_a_face_fails_with_one_message_and_no_detect_uses_the_picture(files, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 160), (200, 190, 180)).save(blank)
    out = tmp_path / "avatar.png"
    args = ["avatar", "--photo", str(blank), "--style", files["style"], "--out", str(out), "--method", "network",
            "--model", files["stylizer"], "--size", "64"]  # fmt: skip
    proc = run(["anime-avatar", *args], tmp_path, check=False)  # the installed command, as a user runs it
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().endswith("or use --no-detect to stylise the whole picture")
    assert "no face found in the photo" in proc.stderr and "Traceback" not in proc.stderr
    main(*args, "--no-detect")
    assert Image.open(out).size == (64, 64)


def test_avatar_makes_one_avatar_per_face_or_only_the_largest(files, tmp_path):
    photo = Image.new("RGB", (1024, 512), "white")
    photo.paste(Image.open(files["photo"]), (0, 0))
    photo.paste(Image.open(files["photo"]).resize((400, 400)), (560, 50))
    photo.save(tmp_path / "two.png")
    args = ["avatar", "--photo", str(tmp_path / "two.png"), "--style", files["style"], "--method", "network",
            "--model", files["stylizer"], "--size", "48"]  # fmt: skip
    main(*args, "--out", str(tmp_path / "all" / "avatar.png"))
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["avatar-1.png", "avatar-2.png"]
    main(*args, "--out", str(tmp_path / "one" / "avatar.png"), "--largest")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["avatar.png"]


def test_generate_style_stylises_the_generated_avatars(files, tmp_path):
    out = tmp_path / "avatars"
    main("generate", "--model", files["generator"], "--n", "2", "--out", str(out), "--style", files["style"],
         "--style-model", files["stylizer"], "--style-size", "64")  # fmt: skip
    images = sorted(out.iterdir())
    assert [p.name for p in images] == ["avatar-000000.png", "avatar-000001.png"]
    assert all(Image.open(p).size == (64, 64) for p in images)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--content": "notes.txt"}, "is not a readable image"),
        ({"--model": "nowhere.pt"}, "neither a file nor an MLflow model URI"),
        ({"--out": "avatar.xyz"}, "give the image file a suffix"),
    ],
)
def test_user_errors_are_one_line(files, tmp_path, caplog, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    options = {"--content": str(files["faces"] / "face0.png"), "--style": files["style"], "--out": "out.png",
               "--model": files["stylizer"]} | change  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main("stylize", *[x for kv in options.items() for x in kv], "--size", "48")
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert exit_.value.code == 1 and message in record.getMessage() and "\n" not in record.getMessage()
    assert not (tmp_path / "out.png").exists()


def test_without_a_trained_stylizer_the_network_method_says_how_to_get_one(files, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no models/stylizer.pt, no mlflow.db here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit):
        main("stylize", "--content", str(files["faces"] / "face0.png"), "--style", files["style"], "--out", "o.png")
    assert "no stylizer: models/stylizer.pt does not exist" in caplog.text and "dvc repro stylize_train" in caplog.text
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_numbers_and_missing_images_are_refused_by_the_parser(files, capsys):
    with pytest.raises(SystemExit) as exit_:
        main("stylize", "--content", "x.png", "--style", str(files["style"]), "--out", "z.png", "--steps", "0")
    assert exit_.value.code == 2 and "0 is less than 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main("stylize", "--content", "x.png", "--style", str(files["style"]), "--out", "z.png", "--style-weight", "0")
    assert exit_.value.code == 2 and "0 is not above zero" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main("avatar", "--photo", "missing.jpg", "--style", str(files["style"]), "--out", "a.png")
    assert exit_.value.code == 2 and "missing.jpg" in capsys.readouterr().err
