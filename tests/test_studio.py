"""`anime-avatar studio`: the handlers on a tiny workspace (fast), then the page itself in a real browser.

The workspace: the project's params.yaml, an untrained 32 px generator in models/generator.pt, a validation
report, and an mlflow.db with two training runs (FID, KID, data versions, a logged sample grid) and a registered
champion whose model files are absent, so that the studio, like `anime-avatar generate`, falls back to the
workspace's generator and says so. Photos: scikit-image's public-domain astronaut.

Browser tests drive Debian's chromium (headless) with Selenium and chromium-driver. Without them they are
skipped with the reason, except where ANIME_AVATAR_REQUIRE_BROWSER=1 (set by .ci/run): there they fail.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anime_avatar.core.errors import UserError
from tests.conftest import ROOT, free_port, params_with, stop, venv_env, wait_http

data = pytest.importorskip("skimage.data", reason="scikit-image is a dev dependency: pip install -e '.[dev]'")
pytest.importorskip("gradio", reason="the studio needs gradio: pip install -e '.[dev]'")

FID = {"a": 41.5, "b": 37.25}  # two training runs; b is the better one and holds the champion alias


def _tiny_generator(path: Path) -> None:
    from anime_avatar.artifacts.generator import save_generator
    from anime_avatar.gan.nets import build_generator, net_config

    torch.manual_seed(0)
    config = net_config(params_with({"model": {"channels": 8, "z_dim": 16}}).model, 32)
    net = build_generator(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_generator(path, config.to_dict(), net.state_dict(), net.state_dict(), step=7, run_id="0123456789abcdef")


def _runs(work: Path) -> dict[str, str]:
    """Two training runs of the project's experiment in work/mlflow.db; champion: the run of FID b."""
    from mlflow import MlflowClient

    from anime_avatar.ops.data_versions import data_version_tag

    params = params_with()
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.create_experiment(params.tracking.experiment, (work / "mlartifacts").as_uri())
    client.create_registered_model(params.tracking.model_name)
    grid = work / "step-0000010.png"
    Image.new("RGB", (68, 68), (200, 120, 40)).save(grid)
    ids = {}
    for key, fid in FID.items():
        run = client.create_run(experiment, tags={"stage": "train", data_version_tag("data/train"): f"md5:{key * 8}"})
        run_id = run.info.run_id
        client.log_param(run_id, "model.arch", "sagan")
        client.log_param(run_id, "train.steps", "10")
        client.log_metric(run_id, "fid", fid + 20, step=5)
        client.log_metric(run_id, "fid", fid, step=10)
        client.log_metric(run_id, "kid_mean", fid / 1000, step=10)
        client.log_artifact(run_id, str(grid), "samples")
        client.set_terminated(run_id)
        version = client.create_model_version(params.tracking.model_name, f"runs:/{run_id}/generator", run_id=run_id)
        ids[key] = run_id
        if key == "b":
            client.set_registered_model_alias(params.tracking.model_name, "champion", version.version)
    grid.unlink()
    return ids


@pytest.fixture(scope="module", autouse=True)
def tqdm_as_found():
    """Gradio's progress tracking (track_tqdm) patches tqdm's class for the rest of the process: fine in the
    studio's own process, but the tests after these ones must get tqdm back as it was."""
    import tqdm
    import tqdm.auto

    methods = {name: tqdm.tqdm.__dict__[name] for name in ("__init__", "update", "close", "__exit__", "__iter__")}
    auto = tqdm.auto.tqdm
    yield
    for name, method in methods.items():
        setattr(tqdm.tqdm, name, method)
    tqdm.auto.tqdm = auto


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("studio")
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    _tiny_generator(work / "models" / "generator.pt")
    (work / "reports").mkdir()
    checks = [{"expectation": "expect_table_row_count_to_be_between", "table": "faces", "column": "", "success": True,
               "observed": 12}, {"expectation": "expect_column_values_to_be_between", "table": "faces",
               "column": "width", "success": True, "observed": None}]  # fmt: skip
    (work / "reports" / "validation.json").write_text(json.dumps({"checks": checks, "success": True, "failed": []}))
    ids = _runs(work)
    files = work.parent / f"{work.name}-files"
    files.mkdir()
    Image.fromarray(data.astronaut()).save(files / "astronaut.png")
    Image.new("RGB", (200, 160), (90, 140, 200)).save(files / "blank.png")  # no face in it
    (files / "notes.txt").write_text("not a photo\n")
    return {"work": work, "runs": ids, "photo": files / "astronaut.png", "blank": files / "blank.png",
            "text": files / "notes.txt"}  # fmt: skip


@pytest.fixture(scope="module")
def studio(workspace):
    from anime_avatar.studio import Studio

    before = Path.cwd()
    try:
        yield Studio(workspace["work"])  # it works in the workspace, as the command line does
    finally:
        os.chdir(before)


def checkout_env() -> dict[str, str]:
    """The venv's environment, running this checkout's code (the venv's editable install may be another's)."""
    return {**venv_env({"OMP_NUM_THREADS": "1"}), "PYTHONPATH": str(ROOT)}


def pixels(png: bytes | Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png) if isinstance(png, bytes) else png).convert("RGB"))


def cli_grid(work: Path, out: Path, *options: str) -> np.ndarray:
    """The grid `anime-avatar generate` writes in ``work`` (a fresh process, this checkout's code)."""
    cmd = [sys.executable, "-m", "pipelines.cli", "generate", *options, "--grid", str(out)]
    proc = subprocess.run(cmd, cwd=work, env=checkout_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return pixels(out)


# --- the handlers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_reference(workspace, tmp_path_factory) -> np.ndarray:
    """`anime-avatar generate --n 5 --seed 11 --truncation 0.7 --grid`: what the handler and the page must show."""
    out = tmp_path_factory.mktemp("cli") / "grid.png"
    return cli_grid(workspace["work"], out, "--n", "5", "--seed", "11", "--truncation", "0.7")


def test_generate_is_the_cli_grid_and_says_which_model(studio, cli_reference):
    path, note = studio.generate(11, 5, 0.7)
    assert np.array_equal(pixels(path), cli_reference)
    assert pixels(path).shape == (2 + 3 * 34, 2 + 2 * 34, 3)  # 5 avatars of 32 px, 2 per row (as the CLI)
    assert "seeds 11–15" in note and "models/generator.pt (step 7, run 01234567" in note
    # (the test store's champion version has no files: a moved project's case, named as such)
    assert ("no champion used: cannot load the generator models:/anime-avatar-generator@champion: the tracking store "
            "knows it, but no files are where it keeps them") in note  # fmt: skip
    assert not np.array_equal(pixels(studio.generate(12, 5, 0.7)[0]), cli_reference)  # another seed, other avatars


def test_a_walk_is_a_strip_and_a_looping_gif(studio):
    strip, gif, note = studio.walk(2, 9, 5, 0.0)
    assert pixels(strip).shape == (36, 2 + 5 * 34, 3)
    with Image.open(gif) as animation:
        assert animation.n_frames == 5 + 3 and animation.size == (128, 128)  # there and back, 4x
        assert animation.info["loop"] == 0
    assert "from seed 2 to seed 9 in 5 steps" in note


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (("generate", -1, 4, 0), "seed: -1 is not between 0"),
        (("generate", 0, 65, 0), "avatars: 65 is not between 1 and 64"),
        (("generate", 0, 2.5, 0), "avatars: 2.5 is not a whole number"),
        (("generate", "x", 2, 0), "seed: 'x' is not a number"),
        (("generate", 0, 2, 4.5), "truncation: 4.5 is not between 0 and 4"),
        (("walk", 0, 1, 1, 0), "walk steps: 1 is not between 2 and 32"),
        (("avatar", None, "translate"), "no photo: upload an image"),
        (("avatar", "PHOTO", "adain"), "AdaIN restyles the face after an example: upload a style image"),
        (("avatar", "PHOTO", "translate", None, False, 4096), "avatar size: 4096 is not between 32 and 768"),
        (("avatar", "PHOTO", "gatys", "PHOTO", False, 64, 1000), "Gatys steps: 1000 is not between 1 and 300"),
        (("avatar", "PHOTO", "cartoon"), "method: 'cartoon' is not one of"),
    ],
)
def test_bad_requests_are_one_line_on_the_page(studio, workspace, call, message):
    from anime_avatar.studio import guarded

    name, *args = call
    args = [str(workspace["photo"]) if a == "PHOTO" else a for a in args]
    with pytest.raises(UserError, match=message):
        getattr(studio, name)(*args)
    outputs = guarded(getattr(studio, name), 3)(*args)
    assert outputs[:3] == (None, None, None)
    assert message.split(":")[0] in outputs[3] and "\n" not in outputs[3]


def test_an_unexpected_error_is_one_line_too_and_its_traceback_goes_to_the_log(caplog):
    from anime_avatar.studio import guarded

    def broken():
        raise ZeroDivisionError("division by zero")

    outputs = guarded(broken, 1)()
    assert outputs == (None, "⚠️ something went wrong (ZeroDivisionError: division by zero); the studio's log has the "
                       "details")  # fmt: skip
    assert "Traceback" in caplog.text


def test_the_astronaut_becomes_an_avatar_of_the_shipped_translator(studio, workspace):
    boxed, found = studio.faces(str(workspace["photo"]))
    assert found == "1 face found in the photo (512×512)"
    assert (pixels(boxed) == (255, 140, 0)).all(axis=-1).sum() > 300  # the orange box around her face
    avatar, boxed, note = studio.avatar(str(workspace["photo"]), "translate (photo → anime GAN)", None, False, 192)
    picture = pixels(avatar)
    assert picture.shape == (192, 192, 3) and picture.std() > 10
    assert note.startswith("192×192 avatar of the face at x=177, y=67, 93×93 px")
    assert "the shipped translator selfie2anime.pt (128 px, step" in note


def test_a_text_file_or_a_photo_without_a_face_is_one_clear_line(studio, workspace):
    with pytest.raises(UserError) as err:
        studio.faces(str(workspace["text"]))
    assert str(err.value) == "photo notes.txt is not a usable image (not an image): upload a PNG, JPEG or WebP"
    with pytest.raises(UserError, match=r"no face found .*tick 'whole picture'"):
        studio.avatar(str(workspace["blank"]), "translate")
    boxed, found = studio.faces(str(workspace["blank"]))
    assert found.startswith("no face found") and Path(boxed).is_file()
    avatar, _, note = studio.avatar(str(workspace["blank"]), "translate", None, True, 64)
    assert pixels(avatar).shape == (64, 64, 3) and "the whole picture" in note


def test_a_108_megapixel_phone_photo_is_read_reduced_as_the_command_reads_it(studio, tmp_path):
    phone = tmp_path / "phone.jpg"
    Image.new("RGB", (12000, 9000), (200, 150, 120)).save(phone, quality=50)  # over Pillow's bomb limit
    boxed, found = studio.faces(str(phone))
    assert found.startswith("no face found in the photo (4096×3072): tick 'whole picture'")
    assert Path(boxed).is_file()


def test_style_methods_use_the_workspace_stylizer_and_an_example_style(studio, workspace):
    from anime_avatar.style.features import LAYERS, build_features
    from anime_avatar.style.model_file import save_stylizer
    from anime_avatar.style.nets import FusionHead, fusion_config

    torch.manual_seed(0)
    scales = LAYERS["inception"].fusion_scales
    encoder = build_features("inception", scales)
    heads = {m: FusionHead(fusion_config(m, encoder, scales, 8, 64, 16)) for m in ("attention", "adain")}
    save_stylizer(workspace["work"] / "models" / "stylizer.pt", heads, step=3, image_size=64)
    style = studio.style_examples()[0]
    for method, name in (("AdaIN", "adain"), ("attention network", "attention")):
        avatar, _, note = studio.avatar(str(workspace["photo"]), method, str(style), False, 64)
        assert pixels(avatar).shape == (64, 64, 3)
        assert note.endswith(f"made by the {name} net of models/stylizer.pt")
    # Gradio's copy of an example, swept by its hourly clean-up (or by another Gradio app stopping): the example
    # still works. Gradio names the copy's folder by the sha256 of the bytes, so an expired upload of another
    # picture with the same name is never taken for it.
    from gradio.processing_utils import hash_file

    swept = workspace["work"] / "gradio-cache" / hash_file(style) / style.name
    made, _, _ = studio.avatar(str(workspace["photo"]), "AdaIN", str(swept), False, 64)
    kept, _, _ = studio.avatar(str(workspace["photo"]), "AdaIN", str(style), False, 64)
    assert np.array_equal(pixels(made), pixels(kept))
    with pytest.raises(UserError, match=r"the style image synthetic-0.png is no longer on the server"):
        studio.avatar(str(workspace["photo"]), "AdaIN", str(swept.parents[1] / ("0" * 64) / style.name), False, 64)


def test_gatys_optimises_for_the_steps_asked(studio, workspace):
    style = studio.style_examples()[1]
    avatar, _, note = studio.avatar(str(workspace["photo"]), "Gatys (optimisation, slow)", str(style), False, 64, 2)
    assert pixels(avatar).shape == (64, 64, 3)
    assert note.endswith("made by Gatys optimisation on the FID Inception features, softmax transform, 2 steps")


def test_the_runs_view_lists_the_runs_the_champion_and_the_validation(studio, workspace):
    view = studio.runs()
    ids = workspace["runs"]
    assert [row[0] for row in view.rows] == [ids["b"], ids["a"]]  # best FID first
    assert view.rows[0][3:] == ["bbbbbbbb", "sagan", 10, "37.25", "0.0372", "★"]
    assert view.rows[1][-1] == "" and view.plot is not None and pixels(view.plot).shape[0] > 100
    assert view.champion == (f"champion: anime-avatar-generator version 2, run `{ids['b']}`, FID 37.25, trained on "
                             "data version `md5:bbbbbbbb`")  # fmt: skip
    assert "passed, 2 of 2 expectations met" in view.validation
    samples = studio.run_samples(ids["a"])
    assert [caption for _, caption in samples] == ["step-0000010"]
    assert pixels(Path(samples[0][0]))[0, 0].tolist() == [200, 120, 40]


def test_a_malformed_validation_report_is_one_line_and_the_runs_still_list(studio, workspace):
    report = workspace["work"] / "reports" / "validation.json"
    kept = report.read_text()
    try:
        for checks in (None, ["x"], {"a": 1}):
            report.write_text(json.dumps({"success": True, "checks": checks}))
            view = studio.runs()  # before: a TypeError or AttributeError, and the tab showed no runs
            assert view.validation.startswith("reports/validation.json could not be read (")
            assert len(view.rows) == 2
    finally:
        report.write_text(kept)


def test_seeds_are_exact_up_to_the_commands_largest(studio):
    from anime_avatar.core.limits import SEED_LIMIT
    from anime_avatar.studio import whole_number

    # Before, through a float: 2**53 + 1 drew seed 2**53's avatars, and 2**62 - 1 was refused as 2**62.
    assert whole_number(2**53 + 1, "seed", 0, SEED_LIMIT - 1) == 2**53 + 1
    assert whole_number(str(2**53 + 1), "seed", 0, SEED_LIMIT - 1) == 2**53 + 1
    assert whole_number(3.0, "seed", 0, 9) == 3 and whole_number(" 7 ", "seed", 0, 9) == 7
    for bad, message in ((float("nan"), "is not a number"), ("1.5", "is not a whole number"),
                         (SEED_LIMIT, f"{SEED_LIMIT} is not between 0 and {SEED_LIMIT - 1}")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            whole_number(bad, "seed", 0, SEED_LIMIT - 1)
    _, words = studio.generate(SEED_LIMIT - 1, 1, 0.0)
    assert f"seeds {SEED_LIMIT - 1}" in words
    # Typed in the page's text field: int() of this took minutes, holding the GIL (every request waited).
    with pytest.raises(UserError, match=r"^seed: 1e\+9000000 is not between 0 and"):
        whole_number("1e9000000", "seed", 0, SEED_LIMIT - 1)
    with pytest.raises(UserError, match=r"^seed: -1e\+5000 is not between 0 and"):
        whole_number("-1e5000", "seed", 0, SEED_LIMIT - 1)


def test_a_photo_deleted_from_the_server_says_upload_it_again(studio, workspace, tmp_path):
    gone = tmp_path / "astronaut.png"  # Gradio deletes uploads after an hour; the page still shows the photo
    with pytest.raises(UserError) as err:
        studio.avatar(str(gone), "translate")
    assert str(err.value) == ("the photo astronaut.png is no longer on the server (uploads are deleted after an "
                              "hour): upload it again")  # fmt: skip


def test_requests_pruning_old_answers_at_once_do_not_trip_over_each_other(studio):
    import threading

    old = time.time() - 7200
    for i in range(300):
        folder = studio.out / f"{i:012d}"
        folder.mkdir()
        (folder / "a.png").write_bytes(b"x")
        os.utime(folder, (old, old))
    errors: list[BaseException] = []

    def answers() -> None:
        try:
            for _ in range(5):
                studio._new_file("a.png")
        except BaseException as err:  # before: FileNotFoundError from a folder another request had removed
            errors.append(err)

    threads = [threading.Thread(target=answers) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and not any((studio.out / f"{i:012d}").exists() for i in range(300))


def test_a_request_body_over_the_limit_is_refused_before_it_is_read(studio, workspace):
    """Gradio's max_file_size covers multipart uploads only; an image sent inline in an API call's JSON (a base64
    data URL) had no limit (a 250 MB body took the server to 2.8 GB)."""
    import http.client

    from anime_avatar.studio import MAX_REQUEST_BYTES, build_app, launch

    app = build_app(workspace["work"], studio=studio)
    port = free_port()
    launch(app, port=port, block=False)

    def status(body: bytes, announced: int | None = None, chunked: bool = False) -> int:
        """POST ``body`` to /gradio_api/call/on_generate, chunked or with Content-Length ``announced`` (default: its
        length; a larger one is sent with no body: the server must answer from the header alone)."""
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.putrequest("POST", "/gradio_api/call/on_generate")
        connection.putheader("Content-Type", "application/json")
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", str(len(body) if announced is None else announced))
        connection.endheaders()
        try:
            if chunked:
                for start in range(0, len(body), 2**20):
                    piece = body[start : start + 2**20]
                    connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                connection.send(b"0\r\n\r\n")
            elif announced is None:
                connection.send(body)
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        assert status(b'{"data": [3, 1, 0]}') == 200
        assert status(b"", announced=MAX_REQUEST_BYTES + 1) == 413  # refused by its Content-Length, nothing read
        assert status(b"x" * (MAX_REQUEST_BYTES + 1), chunked=True) == 413  # once what came exceeds the limit
        assert status(b"x" * 2**20, chunked=True) == 422  # under it: the app reads it (and finds no JSON)

        def upload(origin: str | None) -> int:
            boundary = "studio-test"
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                    f"Content-Type: image/png\r\n\r\n"
                ).encode()
                + b"x" * 100
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                connection.request("POST", "/gradio_api/upload", body, headers | ({"Origin": origin} if origin else {}))
                return connection.getresponse().status
            finally:
                connection.close()

        # Gradio took uploads from any site's page (twelve 20 MB files in 3.7 s, kept for up to two hours).
        assert upload("https://evil.example") == 403 and upload("null") == 403
        assert status(b'{"data": [3, 1, 0]}') == 200  # no Origin (a script): served
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:  # any route that takes a body (Gradio's process_recording writes files too), not only /upload
            connection.request("POST", "/gradio_api/call/on_generate", b'{"data": [3, 1, 0]}',
                               {"Content-Type": "application/json", "Origin": "https://evil.example"})  # fmt: skip
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (403, b"requests from another site's page are refused")
            assert answer.getheader("Content-Type") == "text/plain; charset=utf-8"
        finally:
            connection.close()
        assert upload(f"http://127.0.0.1:{port}") == 200 and upload(None) == 200
    finally:
        app.close()


def test_each_heavy_model_takes_one_request_at_a_time_through_a_queue(studio, workspace):
    from anime_avatar.studio import build_app

    app = build_app(workspace["work"], studio=studio)
    limits = {(fn.concurrency_id, fn.concurrency_limit) for fn in app.fns.values()}
    assert {("generator", 1), ("photo", 2), ("detector", 1), ("runs", 1)} <= limits
    assert app._queue.max_size == 32


def test_the_page_makes_no_call_home_and_old_answers_are_deleted(studio, workspace):
    from anime_avatar.studio import build_app, theme

    app = build_app(workspace["work"], studio=studio)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and app.analytics_enabled is False
    from gradio.themes.utils.fonts import GoogleFont

    fonts = theme()._font + theme()._font_mono
    assert not [f for f in fonts if isinstance(f, GoogleFont)]  # the page downloads no fonts either
    old, _ = studio.generate(0, 1, 0.0)
    os.utime(old.parent, (time.time() - 7200, time.time() - 7200))
    new, _ = studio.generate(1, 1, 0.0)  # each new answer deletes those older than an hour first
    assert not old.exists() and new.is_file()


def test_the_studio_removes_the_folder_it_made_when_it_stops_and_keeps_a_given_one(workspace, tmp_path):
    from anime_avatar.studio import Studio

    before = Path.cwd()
    try:
        own = Studio(workspace["work"])
        avatar, _ = own.generate(0, 1, 0.0)
        assert avatar.is_file() and own.out.name.startswith("anime-avatar-studio-")
        own.close()
        assert not own.out.exists()  # the answers (people's photos with their face boxes) are gone
        given = Studio(workspace["work"], out=tmp_path / "answers")
        given.generate(0, 1, 0.0)
        given.close()
        assert len(list((tmp_path / "answers").iterdir())) == 1
    finally:
        os.chdir(before)


def test_a_taken_port_is_one_line_before_any_model_loads(workspace, monkeypatch):
    import socket

    from anime_avatar.studio import Studio, serve

    monkeypatch.setattr(Studio, "warm", lambda self: pytest.fail("loaded the models before checking the port"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError) as err:
            serve(workspace["work"], port=port)
    assert str(err.value) == (f"cannot listen on 127.0.0.1:{port} (Address already in use): another program (a "
                              "studio already running?) has it; pass --port N")  # fmt: skip


def test_the_avatar_is_of_the_picture_last_given_by_upload_or_webcam(studio, workspace):
    """The page keeps the picture last given (by upload or webcam; the other tab may still hold an older one):
    the avatar is of the picture whose face boxes are shown."""
    from anime_avatar.studio import build_app

    app = build_app(workspace["work"], studio=studio)
    blocks = {getattr(block, "elem_id", None): block for block in app.blocks.values()}

    def handlers(elem_id: str):
        return [f for f in app.fns.values() if any(t[0] == blocks[elem_id]._id for t in f.targets)]

    (set_upload, upload), (set_shot, camera) = handlers("photo-file"), handlers("photo-webcam")
    (make,) = handlers("photo-button")
    picture = make.inputs[0]
    assert set_upload.outputs == [picture] and set_shot.outputs == [picture] and picture not in upload.outputs
    # The picture is set at once, not after the face detection: a click in between (seconds for a phone photo)
    # made the avatar of nothing, or of an older webcam shot.
    assert set_upload.queue is False and set_shot.queue is False
    assert make.tracks_progress  # Gradio found the handler's gr.Progress: Gatys shows a progress bar
    blank, astronaut = str(workspace["blank"]), str(workspace["photo"])
    assert set_upload.fn(blank, None) == blank
    _, note, status = upload.fn(blank, None)
    assert status == "" and note.startswith("no face found")
    latest = set_shot.fn(astronaut, blank)  # a webcam shot after the upload
    assert latest == astronaut and camera.fn(astronaut, blank)[1] == "1 face found in the photo (512×512)"
    avatar, _, note, _, status = make.fn(latest, "translate", None, False, 64, 10)
    assert status == "" and "avatar of the face at x=177" in note  # the shot's face, not the blank upload
    assert set_shot.fn(None, blank) == blank  # the shot cleared: the upload is the picture again


def test_one_face_detection_at_a_time(studio, workspace):
    """The upload's preview and the avatar share OpenCV's detector, which keeps state in the object."""
    import threading

    for detect in (lambda: studio.faces(str(workspace["photo"])),
                   lambda: studio.avatar(str(workspace["photo"]), "translate", None, False, 64)):  # fmt: skip
        with studio.lock("detector"):
            worker = threading.Thread(target=detect)
            worker.start()
            worker.join(1.0)
            assert worker.is_alive()  # waiting for the detector
        worker.join(120)
        assert not worker.is_alive()


def test_outside_a_project_the_studio_says_so(tmp_path):
    from anime_avatar.studio import Studio

    before = Path.cwd()
    try:
        with pytest.raises(UserError, match="no params.yaml in .*: start the studio inside the project"):
            Studio(tmp_path)
    finally:
        os.chdir(before)


def test_the_studio_command_binds_to_localhost_by_default(capsys):
    from anime_avatar.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["studio", "--help"])
    assert "Open the web studio on this project" in capsys.readouterr().out
    args = build_parser().parse_args(["studio"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["studio", "--port", "0"])
    assert "0 is less than 1" in capsys.readouterr().err


# --- in a real browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(workspace, browser):
    """`anime-avatar studio` serving the workspace (its own process, this checkout's code), open in the browser."""
    port = free_port()
    log = (workspace["work"].parent / "studio.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "studio", "--port", str(port)],
                              cwd=workspace["work"], stdout=log, stderr=subprocess.STDOUT,
                              env=checkout_env())  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/", server, timeout=120)
        yield browser, url
    finally:
        stop(server)
        log.close()


def _wait(driver, condition, timeout: float = 60.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def _text(driver, element_id: str, contains: str, timeout: float = 60.0) -> str:
    from selenium.webdriver.common.by import By

    def found(d):
        text = " ".join(d.find_element(By.ID, element_id).text.split())  # markdown's code spans break lines
        return text if contains in text else False

    return _wait(driver, found, timeout)


def _image(driver, url: str, element_id: str, previous: str | None = None) -> np.ndarray:
    """The picture an image component of the page shows, fetched from the server as the browser does."""
    import httpx
    from selenium.webdriver.common.by import By

    def source(d):
        found = d.find_elements(By.CSS_SELECTOR, f"#{element_id} img")
        src = found[0].get_attribute("src") if found else None
        return src if src and src != previous else False

    src = _wait(driver, source)
    return pixels(httpx.get(src if src.startswith("http") else url + src, timeout=30).content)


def _tab(driver, url: str, label: str) -> None:
    """A fresh page (each test its own), on the tab ``label``."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")

    button = _wait(driver, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                          if b.text.strip() == label), False))  # fmt: skip
    button.click()


def _set_number(driver, selector: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector))
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value, Keys.TAB)


def test_browser_generate_gives_the_cli_pixels(page, cli_reference):
    from selenium.webdriver.common.by import By

    driver, url = page
    _tab(driver, url, "Generate")
    _set_number(driver, "#gen-seed input", "11")
    _set_number(driver, "#gen-count input[type=number]", "5")
    _set_number(driver, "#gen-truncation input[type=number]", "0.7")
    driver.find_element(By.ID, "gen-button").click()
    note = _text(driver, "gen-note", "seeds 11–15")
    assert np.array_equal(_image(driver, url, "gen-grid"), cli_reference)
    assert "truncation 0.7" in note and "made by the workspace's models/generator.pt" in note
    # Seeds are read exactly as typed (a number field went through a JavaScript float: 2**53 + 1 became 2**53).
    _set_number(driver, "#gen-seed input", "9007199254740993")
    _set_number(driver, "#gen-count input[type=number]", "1")
    driver.find_element(By.ID, "gen-button").click()
    _text(driver, "gen-note", "seeds 9007199254740993–9007199254740993")


def test_browser_the_astronaut_photo_becomes_an_avatar(page, workspace):
    from selenium.webdriver.common.by import By

    driver, url = page
    _tab(driver, url, "Photo → avatar")
    driver.find_element(By.CSS_SELECTOR, "#photo-file input[type=file]").send_keys(str(workspace["photo"]))
    _text(driver, "photo-note", "1 face found in the photo (512×512)")
    driver.find_element(By.ID, "photo-button").click()
    note = _text(driver, "photo-note", "made by")
    avatar = _image(driver, url, "photo-avatar")
    assert avatar.shape == (256, 256, 3) and avatar.std() > 10
    assert "the shipped translator selfie2anime.pt" in note
    assert driver.find_element(By.ID, "photo-status").text.strip() == ""


def test_browser_a_text_file_gives_one_clear_message(page, workspace):
    from selenium.webdriver.common.by import By

    driver, url = page
    _tab(driver, url, "Photo → avatar")
    driver.find_element(By.CSS_SELECTOR, "#photo-file input[type=file]").send_keys(str(workspace["text"]))
    message = _text(driver, "photo-status", "notes.txt")
    assert message.strip() == "⚠️ photo notes.txt is not a usable image (not an image): upload a PNG, JPEG or WebP"
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text


def test_browser_the_runs_table_lists_the_workspace_runs(page, workspace):
    driver, url = page
    _tab(driver, url, "Runs")
    ids = workspace["runs"]
    table = _text(driver, "runs-table", ids["a"])
    assert ids["b"] in table and "37.25" in table and "41.50" in table
    assert table.index(ids["b"]) < table.index(ids["a"])
    _text(driver, "runs-champion", f"champion: anime-avatar-generator version 2, run {ids['b']}")
    _text(driver, "runs-validation", "passed, 2 of 2 expectations met")
