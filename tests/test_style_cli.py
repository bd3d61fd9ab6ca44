"""`anime-avatar stylize`, `avatar` and `generate --style` end to end on small images."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from anime_avatar import cli
from anime_avatar.artifacts.generator import save_generator
from anime_avatar.core.errors import UserError
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
    assert sorted(p.name for p in out.glob("*.png")) == ["face0.png", "face1.png"]
    styled, original = Image.open(out / "face0.png"), Image.open(files["faces"] / "face0.png").resize((64, 48))
    assert styled.size == (64, 48) and styled.tobytes() != original.tobytes()


@pytest.mark.parametrize(("command", "flag"), [("stylize", "--size"), ("avatar", "--size"),
                                              ("generate", "--style-size")])  # fmt: skip
def test_a_size_too_small_for_the_methods_features_names_the_flag_that_set_it(files, tmp_path, caplog, command,
                                                                              flag):  # fmt: skip
    """This net's deepest inception layer needs 27 px; at 20 the message named only "images of 30x20 px"."""
    picture = {"stylize": ["--content", str(files["faces"] / "face0.png")],
               "avatar": ["--photo", str(files["photo"]), "--no-detect"],
               "generate": ["--model", files["generator"], "--n", "1"]}[command]  # fmt: skip
    style = ["--style-model", files["stylizer"]] if command == "generate" else ["--model", files["stylizer"]]
    method = ["--style-method", "network"] if command == "generate" else ["--method", "network"]
    out = tmp_path / ("avatars" if command == "generate" else "a.png")
    with pytest.raises(SystemExit, match="1"):
        main(command, *picture, "--style", files["style"], "--out", str(out), *method, *style, flag, "20")
    message = caplog.records[-1].getMessage()
    assert message.startswith(f"{flag} 20 is too small for this method (images of 30x20 px are too small for the")
    assert message.endswith(f"give {flag} 27 or more")
    assert not out.exists() or not any(out.iterdir())


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
    assert proc.stderr.strip().endswith("or use --no-detect to make the avatar of the whole picture")
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
        ({"--out": "avatar.psd"}, "Pillow cannot write colour images as PSD; use .png, .jpg or .webp"),  # read-only
        ({"--out": "avatar.xbm"}, "Pillow cannot write colour images as XBM"),  # black and white only
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
    caplog.clear()  # a URI the user named: the message is about it, not about the default file
    with pytest.raises(SystemExit):
        main("stylize", "--content", str(files["faces"] / "face0.png"), "--style", files["style"], "--out", "o.png",
             "--model", "models:/anime-avatar-stylizer/1")  # fmt: skip
    assert "cannot load the stylizer models:/anime-avatar-stylizer/1: no MLflow database at mlflow.db" in caplog.text
    assert "models/stylizer.pt" not in caplog.text and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["stylize", "--method", "adain", "--style-weight", "1000000"], "--style-weight only apply"),
        (["stylize", "--features", "vgg19", "--plain"], "--features, --plain only apply"),  # (network, the default)
        (["avatar", "--steps", "3"], "--steps only apply to --method gatys; --method translate"),
        (["stylize", "--method", "adain", "--content-weight", "0"], "--content-weight only apply"),  # (0: given)
    ],
)
def test_gatys_options_with_another_method_are_a_usage_error(files, capsys, argv, named):
    """They were ignored: --method adain with --style-weight 1000000 wrote the very same bytes as without."""
    picture = str(files["style"])
    images = ["--content", picture, "--style", picture] if argv[0] == "stylize" else ["--photo", picture]
    with pytest.raises(SystemExit) as exit_:
        main(*argv, *images, "--out", "z.png")
    assert exit_.value.code == 2 and named in capsys.readouterr().err


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


# --- bad input (issue 22): pixel budgets, output paths, phone photos, folders with a bad file --------------------


def fails_with(caplog, *argv: str) -> str:
    """The one error line of a command that exits with status 1."""
    caplog.clear()
    with pytest.raises(SystemExit) as exit_:
        main(*argv)
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert exit_.value.code == 1 and "\n" not in record.getMessage()
    return record.getMessage()


@pytest.mark.parametrize(
    "argv",
    [
        ["stylize", "--content", "c.png", "--style", "{style}", "--out", "o.png", "--size", "100000"],
        ["avatar", "--photo", "{style}", "--out", "o.png", "--size", "100000"],
        ["translate", "--content", "c.png", "--out", "o.png", "--size", "100000"],
        ["generate", "--style", "{style}", "--style-size", "100000"],
    ],
)
def test_a_size_over_the_largest_side_is_a_usage_error(files, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(*[a.format(style=files["style"]) for a in argv])
    assert exit_.value.code == 2 and "100000 is more than 768, the largest side in pixels" in capsys.readouterr().err


@pytest.fixture
def strip(tmp_path) -> str:
    """A 20000x2 PNG of about 200 bytes: resized by its shorter side to 256 px it would be 655 megapixels."""
    path = tmp_path / "strip.png"
    Image.new("RGB", (20000, 2), (90, 140, 200)).save(path)
    assert path.stat().st_size < 400
    return str(path)


def test_stylize_crops_a_20000x2_style_and_content_and_says_so(files, tmp_path, strip, caplog):
    out = tmp_path / "o.png"
    main("stylize", "--content", strip, "--style", strip, "--out", str(out), "--model", files["stylizer"],
         "--size", "32")  # fmt: skip
    assert Image.open(out).size == (256, 32)  # 8:1 at most
    assert f"{strip}: 20000x2 is larger than 4096 px: read downscaled to 4096x1" in caplog.text
    assert "a 4096x1 picture cropped to its central 8x1: at a shorter side of 32 px, an image is at most 8:1" in (
        caplog.text
    )


def test_translate_and_avatar_translate_take_a_20000x2_picture_in_their_square(tmp_path, strip, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped translator
    main("translate", "--content", strip, "--out", "t.png", "--size", "64")
    main("avatar", "--photo", strip, "--method", "translate", "--no-detect", "--out", "a.png", "--size", "64")
    assert Image.open("t.png").size == Image.open("a.png").size == (64, 64)


@pytest.fixture
def phone_photo(tmp_path) -> Path:
    """A 12000x9000 JPEG (a 108-megapixel phone photo): 0.7 s and 0.45 GB to make."""
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (12000, 9000), (200, 150, 120)).save(path, quality=50)
    return path


def test_a_108_megapixel_jpeg_is_read_reduced_by_stylize_and_avatar(files, tmp_path, phone_photo, caplog,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    main("stylize", "--content", str(phone_photo), "--style", files["style"], "--out", "s.png",
         "--model", files["stylizer"], "--size", "48")  # fmt: skip
    main("avatar", "--photo", str(phone_photo), "--method", "translate", "--no-detect", "--out", "a.png")
    assert Image.open("s.png").size == (64, 48) and Image.open("a.png").size == (256, 256)
    assert caplog.text.count(f"{phone_photo}: 12000x9000 is larger than 4096 px: read downscaled to 4096x3072") == 2


def test_an_animated_gif_is_stylised_from_its_first_frame_with_a_warning(files, tmp_path, caplog):
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    main("stylize", "--content", str(gif), "--style", files["style"], "--out", str(tmp_path / "o.png"),
         "--model", files["stylizer"], "--size", "30")  # fmt: skip
    assert Image.open(tmp_path / "o.png").size == (40, 30)
    assert f"{gif}: an animated image: read the first of 2 frames" in caplog.text


@pytest.mark.parametrize("command", ["stylize", "translate"])
def test_a_folder_with_an_unreadable_file_gets_the_others_done_and_names_it(files, tmp_path, caplog, monkeypatch,
                                                                           command):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    shutil.copytree(files["faces"], "faces")
    Path("faces/broken.png").write_text("not an image")
    options = ["--style", files["style"], "--model", files["stylizer"]] if command == "stylize" else []
    message = fails_with(caplog, command, "--content", "faces", "--out", "out", "--size", "32", *options)
    assert message == "--content: faces/broken.png is not a readable image (not an image)"
    assert sorted(p.name for p in Path("out").glob("*.png")) == ["face0.png", "face1.png"]


@pytest.mark.parametrize("command", ["stylize", "translate", "avatar"])
@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("A.png", "--out A.png is a folder: name the image file to write (e.g. A.png/out.png)"),
        ("FILE/a.png", "--out FILE/a.png: FILE is a file, not a folder"),
    ],
)
def test_out_that_is_a_folder_or_under_a_file_is_refused_before_any_work(files, tmp_path, caplog, monkeypatch,
                                                                        command, out, message):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    Path("A.png").mkdir()
    Path("FILE").write_text("kept")
    # --model names nothing: an --out checked after loading the model would give that error instead
    photo = ["--photo", str(files["photo"]), "--method", "network", "--style", files["style"]]
    content = ["--content", str(files["faces"] / "face0.png")]
    inputs = {"avatar": photo, "stylize": [*content, "--style", files["style"]], "translate": content}[command]
    assert fails_with(caplog, command, *inputs, "--out", out, "--model", "nowhere.pt") == message
    assert Path("FILE").read_text() == "kept" and not any(Path("A.png").iterdir())


@pytest.mark.parametrize("command", ["stylize", "translate"])
def test_a_folder_as_content_with_out_naming_a_file_is_refused_and_the_file_kept(files, tmp_path, caplog,
                                                                                 monkeypatch, command):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    Path("existing.png").write_bytes(b"kept")
    style = ["--style", files["style"]] if command == "stylize" else []
    message = fails_with(caplog, command, "--content", str(files["faces"]), "--out", "existing.png",
                         "--model", "nowhere.pt", *style)  # fmt: skip
    assert message == "--out existing.png is a file: with a folder as --content, --out is the folder to write into"
    assert Path("existing.png").read_bytes() == b"kept"


def test_an_output_name_in_a_content_folder_that_is_a_folder_is_refused_before_any_work(files, tmp_path, caplog):
    (tmp_path / "out" / "face1.png").mkdir(parents=True)
    message = fails_with(caplog, "stylize", "--content", str(files["faces"]), "--style", files["style"],
                         "--out", str(tmp_path / "out"), "--model", "nowhere.pt")  # fmt: skip
    assert message.startswith(f"--out {tmp_path / 'out' / 'face1.png'} is a folder")
    assert not (tmp_path / "out" / "face0.png").exists()


@pytest.mark.parametrize("command", ["stylize", "translate"])
def test_a_folder_whose_results_would_collide_or_replace_its_pictures_is_refused_before_any_work(
    files, tmp_path, caplog, monkeypatch, command
):
    monkeypatch.chdir(tmp_path)
    Path("faces").mkdir()
    for name in ("a.jpg", "a.png", "b.png"):
        Image.open(files["faces"] / "face0.png").save(Path("faces") / name)
    before = {p.name: p.read_bytes() for p in Path("faces").iterdir()}
    style = ["--style", files["style"]] if command == "stylize" else []
    run = (command, "--content", "faces", "--model", "nowhere.pt", *style)  # the model would fail later
    assert fails_with(caplog, *run, "--out", "out") == (
        "--content faces: a.jpg and a.png would both be written to out/a.png: rename one"
    )
    assert fails_with(caplog, *run, "--out", "faces") == (
        "--out faces is the --content folder: the results would replace the pictures; name another"
    )
    assert fails_with(caplog, *run, "--out", "faces/../faces").startswith("--out faces/../faces is the --content")
    Path("out").mkdir()
    Path("out/b.png").symlink_to(Path("faces/b.png").resolve())  # writing out/b.png would write the picture
    (Path("faces") / "a.jpg").unlink()
    del before["a.jpg"]
    assert (
        fails_with(caplog, *run, "--out", "out")
        == "--out out: out/b.png would replace one of the pictures; name another folder"
    )
    Path("out/b.png").unlink()
    Path("out").rmdir()
    assert {p.name: p.read_bytes() for p in Path("faces").iterdir()} == before and not Path("out").exists()


def test_results_inside_the_content_folder_are_not_taken_for_pictures_and_the_users_pictures_never_replaced(
    files, tmp_path, monkeypatch
):
    """An --out inside --content was taken for an earlier run's results whatever it held: a folder of the user's
    own pictures was skipped, and each written over by the translation of a same-named picture beside it."""
    from anime_avatar.cli import RESULTS_MARKER, _contents_and_targets, _save_result

    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces" / "anime").mkdir(parents=True)
    for name in ("a.png", "b.png", "anime/a.png"):
        Image.open(files["faces"] / "face0.png").save(tmp_path / "faces" / name)
    with pytest.raises(UserError, match=r"^--out faces/anime: faces/anime/a.png would replace one of the pictures"):
        _contents_and_targets(Path("faces"), Path("faces/anime"))  # anime/a.png is the user's: read, kept
    assert not (tmp_path / "faces" / "anime" / RESULTS_MARKER).exists()
    contents, targets = _contents_and_targets(Path("faces"), Path("faces/styled"))
    assert contents == [Path("faces/a.png"), Path("faces/anime/a.png"), Path("faces/b.png")]
    assert not (tmp_path / "faces" / "styled").exists()  # a check: nothing written before the first result
    for target in targets:
        _save_result(Image.open(files["faces"] / "face0.png"), target, Path("faces/styled"))
    assert (tmp_path / "faces" / "styled" / RESULTS_MARKER).is_file()  # the folder is marked as results
    again, _ = _contents_and_targets(Path("faces"), Path("faces/styled"))
    assert again == contents  # not faces/styled/*, the earlier run's results


@pytest.mark.parametrize("command", ["translate", "stylize", "avatar"])
def test_an_out_that_names_a_picture_the_command_reads_is_refused_before_any_work(files, tmp_path, caplog,
                                                                                   command):  # fmt: skip
    """avatar --photo me.png --out me.png (and translate/stylize alike) replaced the photo with its avatar."""
    photo, style = tmp_path / "me.png", tmp_path / "style.png"
    shutil.copy(files["photo"], photo)
    shutil.copy(files["style"], style)
    before = photo.read_bytes(), style.read_bytes()
    given = {"translate": ["--content", str(photo)], "stylize": ["--content", str(photo), "--style", str(style)],
             "avatar": ["--photo", str(photo), "--method", "adain", "--style", str(style)]}[command]  # fmt: skip
    for out in (photo, style):
        if command == "translate" and out == style:
            continue
        assert fails_with(caplog, command, *given, "--out", str(out), "--model", "nowhere.pt") == (
            f"--out {out} is the picture {out} the command reads: the result would replace it; name another file"
        )
    assert (photo.read_bytes(), style.read_bytes()) == before


def test_generate_never_writes_its_avatars_or_grid_over_the_style_picture(files, tmp_path, caplog):
    """`generate --style style.png --grid style.png` replaced the style with the grid (exit 0)."""
    style = tmp_path / "avatars" / "avatar-000003.png"
    style.parent.mkdir()
    shutil.copy(files["style"], style)
    before = style.read_bytes()
    common = ("generate", "--model", files["generator"], "--style", str(style), "--style-model", files["stylizer"])
    assert fails_with(caplog, *common, "--grid", str(style)) == (
        f"--grid {style} is the --style picture: the grid would replace it; name another file"
    )
    assert fails_with(caplog, *common, "--out", str(style.parent), "--n", "5") == (
        f"--out {style.parent}: avatar-000003.png would replace the --style picture; name another folder"
    )
    assert style.read_bytes() == before
    main(*common, "--out", str(style.parent), "--n", "2", "--style-size", "48")  # seeds 0 and 1: beside it, fine
    assert sorted(p.name for p in style.parent.iterdir()) == ["avatar-000000.png", "avatar-000001.png",
                                                               "avatar-000003.png"]  # fmt: skip
    assert style.read_bytes() == before


def test_avatar_with_a_style_and_the_default_translate_method_is_a_usage_error(files, tmp_path, capsys):
    """--style with the default method was ignored without a word: the avatar was the plain translation."""
    with pytest.raises(SystemExit) as exit:
        main("avatar", "--photo", str(files["photo"]), "--style", files["style"], "--out", str(tmp_path / "a.png"))
    assert exit.value.code == 2 and "--style applies to --method network, adain and gatys" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


def test_stylize_eval_on_the_photos_only_reads_no_face_of_the_content_set(files, tmp_path):
    """n_content 0 once decoded every face of content_path (load_image_set's limit 0 means all) to keep none."""
    from stages.stylize_eval import evaluation_pairs

    styles = tmp_path / "styles"
    styles.mkdir()
    shutil.copy(files["style"], styles / "style.jpg")
    missing = str(tmp_path / "no-such-folder")
    params = params_with({"stylize_eval": {"n_content": 0, "photos": [str(files["photo"])], "image_size": 64,
                                           "content_path": missing, "style_path": str(styles)}})  # fmt: skip
    pairs = evaluation_pairs(params.stylize_eval, params.photo_faces, torch.device("cpu"))
    assert [(pair.content_name, pair.style_name) for pair in pairs] == [("astronaut", "style")]


def test_a_stylize_eval_photo_without_a_face_is_named_with_its_setting(files, tmp_path):
    """With several photos the message said only 'no face found in the photo', and offered the commands'
    --no-detect, which a stage does not have."""
    from stages.stylize_eval import evaluation_pairs

    styles = tmp_path / "styles"
    styles.mkdir()
    shutil.copy(files["style"], styles / "style.jpg")
    params = params_with({"stylize_eval": {"n_content": 0, "photos": [str(files["photo"]), str(files["style"])],
                                           "image_size": 64, "style_path": str(styles)}})  # fmt: skip
    with pytest.raises(UserError) as err:
        evaluation_pairs(params.stylize_eval, params.photo_faces, torch.device("cpu"))
    assert str(err.value).startswith(f"no face found in stylize_eval.photos: {files['style']} (")
    assert str(err.value).endswith("crop the photo around the face, or take it out of the list")
