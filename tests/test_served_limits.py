"""Bad requests to the served models (generator, stylizer, translator) are refused before any work with HTTP 400
and a message naming the problem, no traceback; work stops at the request's deadline; and the command line and
the served models share one rule per input (``anime_avatar/core/limits.py``)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import struct
import subprocess
import threading
import zlib

import httpx
import numpy as np
import psutil
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import invocations
from PIL import Image

from anime_avatar.core import limits
from anime_avatar.core.limits import LimitError
from anime_avatar.gan.inference import latent
from anime_avatar.ops import pyfunc_guard
from tests.conftest import BIN, free_port, params_with, stop, venv_env, wait_http

GIB = 1024**3


def png(width: int, height: int, colour=(200, 120, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: the size a decompression bomb declares, in 70 bytes."""
    data = bytearray(png(1, 1))
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- one rule per input ------------------------------------------------------------------------------------------


def test_limits_accept_the_range_and_name_the_value_and_bound_outside_it():
    assert limits.check_seed(0) == 0 and limits.check_seed(np.int64(2**62 - 1)) == 2**62 - 1
    assert limits.check_seed(7.0) == 7
    seeds = [(-1, "-1 is negative"), (2**62, "is not below 2**62"), (2**63, "is not below 2**62"),
             (-(2**63), "2**63 and above as negative"), (1.5, "1.5 is not a whole number"),
             (True, "not a whole number"), ("7", "not a whole number"), (float("nan"), "not a whole")]  # fmt: skip
    for bad, words in seeds:
        with pytest.raises(LimitError, match=re.escape(words)):
            limits.check_seed(bad)
    assert limits.check_truncation(0) == 0.0 and limits.check_truncation(0.05) == 0.05
    for bad, words in [(0.01, "too small to meet"), (-0.5, "not a finite number >= 0"), (float("inf"), "finite"),
                       (float("nan"), "finite"), ("0.7", "not a number")]:  # fmt: skip
        with pytest.raises(LimitError, match=words):
            limits.check_truncation(bad)
    assert limits.check_side(1) == 1 and limits.check_side(limits.MAX_SIDE) == limits.MAX_SIDE
    for bad in (0, -3, limits.MAX_SIDE + 1, 10**9, 2.5):
        with pytest.raises(LimitError, match="size"):
            limits.check_side(bad)
    limits.check_rows(limits.MAX_ROWS, 128)
    with pytest.raises(LimitError, match=f"{limits.MAX_ROWS + 1} rows: at most {limits.MAX_ROWS} per request"):
        limits.check_rows(limits.MAX_ROWS + 1, 32)
    with pytest.raises(LimitError, match="2 rows of 768x768 px: at most 1 per request"):
        limits.check_rows(2, 768)
    limits.check_rows(16, 256)
    limits.check_input_image(4000, 1000)
    with pytest.raises(LimitError, match="20000x2: its long side is more than 8 times its short side"):
        limits.check_input_image(20000, 2)
    with pytest.raises(LimitError, match="9000x9000 has more than 40 megapixels"):
        limits.check_input_image(9000, 9000)
    limits.check_made_image(2048, 1024, 512)
    with pytest.raises(LimitError, match="2048x1024 would be 1536x768 px at size 768: more than 589824 pixels"):
        limits.check_made_image(2048, 1024, 768)


def test_the_cli_and_every_latent_follow_the_same_seed_and_truncation_rules(capsys):
    from anime_avatar.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["generate", "--seed", str(2**62 - 1), "--truncation", "0.05"]).seed == 2**62 - 1
    cases = [(["--seed", str(2**63)], "is not below 2**62"), (["--seed", "-1"], "less than 0"),
             (["--truncation", "0.01"], "too small to meet"), (["--truncation", "-1"], "finite number")]  # fmt: skip
    for args, words in cases:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["generate", *args])
        assert exit_.value.code == 2 and words in capsys.readouterr().err
    with pytest.raises(LimitError, match="too small to meet"):
        latent(3, 16, 0.001)  # used to return a latent with values outside the bound, silently
    with pytest.raises(LimitError, match="is not below 2"):
        latent(2**62 + 3, 16)  # `generate --seed 2**62-1 --n 8` reaches here
    assert latent(3, 512, 0.05).abs().max() <= 0.05


# --- the served models, through the scoring server's own request handler -----------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """The three models, each logged and registered in one fresh store, then loaded as `mlflow models serve` does."""
    import mlflow

    from anime_avatar.artifacts.generator import save_generator
    from anime_avatar.gan.nets import build_generator, net_config
    from anime_avatar.ops.generator_models import log_generator_model
    from anime_avatar.ops.stylizer_models import log_stylizer_model
    from anime_avatar.ops.translator_models import log_translator_model
    from anime_avatar.style.features import LAYERS, build_features
    from anime_avatar.style.model_file import save_stylizer
    from anime_avatar.style.nets import FusionHead, fusion_config
    from anime_avatar.translate.model_file import save_translator
    from anime_avatar.translate.nets import Generator, TranslatorConfig

    work = tmp_path_factory.mktemp("served-limits")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    torch.manual_seed(0)
    config = net_config(params_with({"model": {"channels": 8, "z_dim": 16}}).model, 32)
    net = build_generator(config)
    save_generator(work / "generator.pt", config.to_dict(), net.state_dict(), net.state_dict(), step=1)
    encoder = build_features("inception", LAYERS["inception"].fusion_scales)
    heads = {m: FusionHead(fusion_config(m, encoder, LAYERS["inception"].fusion_scales, 8, 64, 16))
             for m in ("attention", "adain")}  # fmt: skip
    save_stylizer(work / "stylizer.pt", heads, step=1, image_size=64)
    cfg = TranslatorConfig(image_size=16, channels=4, n_blocks=2, attention="cam+mask", disc_channels=4, disc_layers=2)
    save_translator(work / "translator.pt", Generator(cfg), Generator(cfg), step=1, run_id="r", data_version="d")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("served-limits")
    with mlflow.start_run():
        log_generator_model(mlflow, work / "generator.pt", "gen")
        log_stylizer_model(mlflow, work / "stylizer.pt", "sty")
        log_translator_model(mlflow, work / "translator.pt", "tra")
    loaded = {name: mlflow.pyfunc.load_model(f"models:/{name}/1") for name in ("gen", "sty", "tra")}
    mlflow.set_tracking_uri(None)
    return {"uri": uri, "work": work, **loaded}


class WorkLock:
    """Stands in for the served models' work lock: records whether a request got as far as starting work."""

    def __init__(self):
        self.lock, self.acquired = threading.Lock(), 0

    def acquire(self, timeout=-1):
        self.acquired += 1
        return self.lock.acquire(timeout=timeout)

    def release(self):
        self.lock.release()


def post(model, body: dict) -> tuple[int, dict]:
    """What the scoring server answers to a JSON request: the status and the body (what `/invocations` sends)."""
    try:
        answer = invocations(json.dumps(body), "application/json", model, model.metadata.get_input_schema())
    except MlflowException as err:
        return err.get_http_status_code(), json.loads(err.serialize_as_json())
    return answer.status, json.loads(answer.response)


def split(columns: list[str], rows: list[list], **params) -> dict:
    body = {"dataframe_split": {"columns": columns, "data": rows}}
    return {**body, "params": params} if params else body


def assert_refused(status: int, body: dict, words: str) -> None:
    assert status == 400, body
    assert words in body["message"], body["message"]
    text = json.dumps(body)
    assert "stack_trace" not in body and "Traceback" not in text and "site-packages" not in text, text


GOOD, STYLE = b64(png(40, 30)), b64(png(60, 40, (30, 60, 160)))
BAD_REQUESTS = {
    "gen": [
        (split(["seed"], [[2**63]]), "row 0 seed -9223372036854775808 is negative"),  # used to give seed 0's image
        (split(["seed"], [[-1]]), "row 0 seed -1 is negative"),
        (split(["seed"], [[2**62]]), "row 0 seed 4611686018427387904 is not below 2**62"),
        (split(["seed", "truncation"], [[1, 0.001]]), "row 0 truncation 0.001 is below 0.05: too small to meet"),
        (split(["seed", "truncation"], [[1, -0.5]]), "row 0 truncation -0.5 is not a finite number >= 0"),
        (split(["seed"], [[s] for s in range(65)]), "65 rows: at most 64 per request"),
        (split(["seed"], [["seven"]]), "Failed to convert column seed"),  # MLflow's own check: 400, no traceback
        (split(["sed"], [[1]]), "Model is missing inputs ['seed']"),
    ],
    "sty": [
        (
            split(["content", "style"], [[GOOD, b64(png(20000, 2))]]),
            "row 0 style image 20000x2: its long side is more than 8 times its short side",
        ),
        (
            split(["content", "style"], [[GOOD, b64(png_claiming(9000, 9000))]]),
            "row 0 style image 9000x9000 has more than 40 megapixels",
        ),
        (
            split(["content", "style"], [[GOOD, b64(png(2048, 1024))]], size=768),
            "row 0 style image 2048x1024 would be 1536x768 px at size 768",
        ),
        (split(["content", "style"], [[GOOD, STYLE]], size=100000), "size 100000 is outside 1..768"),
        (split(["content", "style"], [[GOOD, STYLE]], size=0), "size 0 is outside 1..768"),
        (split(["content", "style"], [[GOOD, STYLE]], size=24), "size 24 is below 27, the smallest side"),
        (split(["content", "style"], [[GOOD, STYLE]] * 65, size=32), "65 rows: at most 64 per request"),
        (split(["content", "style"], [[GOOD, STYLE]] * 5, size=512), "5 rows of 512x512 px: at most 4"),
        (
            split(["content", "style"], [[b64(b"not an image at all"), STYLE]]),
            "row 0 content image is not an image Pillow can read",
        ),
        (split(["content", "style"], [[GOOD, STYLE]], method="gatys"), "method 'gatys': this model holds"),
        (split(["content"], [[GOOD]]), "Model is missing inputs ['style']"),
    ],
    "tra": [
        (split(["photo"], [[GOOD]], size=4096), "size 4096 is outside 1..768"),
        (split(["photo"], [[b64(png(20000, 2))]]), "row 0 photo image 20000x2: its long side is more than 8 times"),
        (split(["photo"], [[b64(png_claiming(90000, 90000))]]), "row 0 photo image is too large to decode safely"),
        (split(["photo"], [[GOOD]] * 65, size=8), "65 rows: at most 64 per request"),
        (split(["photo"], [[GOOD]], to="cartoon"), "to 'cartoon': choose anime or photo"),
        (split(["face"], [[GOOD]]), "Model is missing inputs ['photo']"),
    ],
}


@pytest.mark.parametrize("name", ["gen", "sty", "tra"])
def test_bad_requests_are_refused_before_work_with_400_and_the_reason(models, name, monkeypatch):
    work = WorkLock()
    monkeypatch.setattr(pyfunc_guard, "_WORK", work)
    for body, words in BAD_REQUESTS[name]:
        assert_refused(*post(models[name], body), words)
    assert work.acquired == 0  # none got as far as starting work
    good = {"gen": split(["seed", "truncation"], [[5, 0.7]]), "sty": split(["content", "style"], [[GOOD, STYLE]],
            size=32), "tra": split(["photo"], [[GOOD]], size=24)}[name]  # fmt: skip
    status, body = post(models[name], good)
    assert status == 200, body
    assert np.asarray(body["predictions"]).shape[0] == 1 and work.acquired == 1


def test_an_image_whose_data_is_broken_is_a_400_too(models):
    broken = png(64, 64, (1, 2, 3))[:-40]  # the header is whole (it passes the checks before work), the pixels are not
    body = split(["content", "style"], [[GOOD, b64(broken)]], size=32)
    assert_refused(*post(models["sty"], body), "row 0 style image cannot be decoded")


def test_every_mlflow_request_form_carries_the_pictures(models):
    """Only dataframe_split/_records worked: MLflow hands `inputs` (and `instances`) the base64 text as undecoded
    bytes, and base64.encodebytes (as MLflow's own examples) wraps lines."""
    raw = png(40, 30)
    wrapped = base64.encodebytes(raw).decode()
    assert "\n" in wrapped
    bodies = [
        {"inputs": {"photo": [b64(raw)]}, "params": {"size": 24}},
        {"instances": [{"photo": b64(raw)}], "params": {"size": 24}},
        split(["photo"], [[wrapped]], size=24),
    ]
    for body in bodies:
        status, answer = post(models["tra"], body)
        assert status == 200, (body.keys(), answer)
        assert np.asarray(answer["predictions"]).shape == (1, 24, 24, 3)
    assert_refused(*post(models["tra"], split(["photo"], [["not base64!"]], size=24)), "Invalid base64")
    # A binary PGM whose pixels are all letters is all base64 characters too: it is read as the image it is.
    from anime_avatar.ops.pyfunc_images import check_image_header, image_bytes

    pgm = b"P5\n5 5\n255\n" + b"A" * 25
    assert image_bytes(pgm, "row 0 photo") == pgm and check_image_header(pgm, "row 0 photo") == (5, 5)


def test_work_stops_once_the_deadline_has_passed(models, monkeypatch):
    """The scoring server answers 504 at MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT but cannot stop predict's thread:
    predict stops itself between rows, and gives up waiting for the requests before it."""
    clock = iter(range(1000))  # every look at the clock: one second later
    monkeypatch.setattr(pyfunc_guard.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setenv(pyfunc_guard.TIMEOUT_ENV, "4.5")
    status, body = post(models["tra"], split(["photo"], [[GOOD]] * 6, size=16))
    assert status == 504 and body["error_code"] == "DEADLINE_EXCEEDED"
    assert body["message"].endswith("stopped after 3 of 6 rows: the request's 4.5 s deadline "
                                    "(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT) passed")  # fmt: skip
    monkeypatch.undo()

    monkeypatch.setenv(pyfunc_guard.TIMEOUT_ENV, "0.2")
    with pyfunc_guard.turn():  # another request is computing: this one waits until its deadline, then gives up
        status, body = post(models["tra"], split(["photo"], [[GOOD]], size=16))
    assert status == 504 and "gave up waiting for the requests before it" in body["message"]
    monkeypatch.delenv(pyfunc_guard.TIMEOUT_ENV)
    assert post(models["tra"], split(["photo"], [[GOOD]], size=16))[0] == 200  # not served: no deadline


# --- a real server ---------------------------------------------------------------------------------------------


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


@pytest.mark.slow
def test_a_served_stylizer_refuses_20_concurrent_bad_requests_in_bounded_memory_then_serves(models):
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", "models:/sty/1", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=models["work"], env=venv_env({"MLFLOW_TRACKING_URI": models["uri"], "OMP_NUM_THREADS": "1"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server, timeout=180)
        process = psutil.Process(server.pid)
        before, peak, done = tree_rss(process), [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], tree_rss(process))

        sampler = threading.Thread(target=sample)
        sampler.start()
        requests = (BAD_REQUESTS["sty"] * 2)[:20]
        answers: list = [None] * len(requests)

        def send(i: int) -> None:
            answers[i] = httpx.post(url, json=requests[i][0], timeout=120)

        senders = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        done.set()
        sampler.join()
        good = httpx.post(url, json=split(["content", "style"], [[GOOD, STYLE]], size=32), timeout=120)
    finally:
        stop(server)
    for (_, words), answer in zip(requests, answers, strict=True):
        assert_refused(answer.status_code, answer.json(), words)
    assert peak[0] < 2 * GIB and peak[0] - before < 0.5 * GIB, (before, peak[0])
    assert good.status_code == 200, good.text
    assert np.asarray(good.json()["predictions"], dtype=np.uint8).shape == (1, 32, 32, 3)


def test_translate_and_avatar_take_a_registered_translator_by_its_uri(models, monkeypatch):
    """--model took only a file ("no such translator file" for models:/…), though the translator is registered and
    the generator's and stylizer's --model take URIs."""
    from anime_avatar.cli import _translator
    from anime_avatar.core.errors import UserError
    from anime_avatar.translate.model_file import load_translator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", models["uri"])
    registered, saved = _translator("models:/tra/1", "anime"), load_translator(models["work"] / "translator.pt")
    assert registered.step == saved.step == 1
    weights = zip(registered.net.state_dict().values(), saved.net.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    with pytest.raises(UserError, match=r"^cannot load the translator models:/tra/9: .*not found"):
        _translator("models:/tra/9", "anime")
    with pytest.raises(UserError, match=r"^models:/gen/1 holds no artifacts/translator.pt: not a translator logged"):
        _translator("models:/gen/1", "anime")
    with pytest.raises(UserError, match=r"^--model 'nowhere.pt' is neither a file nor an MLflow model URI \(models:/"):
        _translator("nowhere.pt", "anime")
    # One loader serves the three kinds: a model of another kind is named as such, with what to do.
    from anime_avatar.ops.registry import resolve_generator
    from anime_avatar.ops.stylizer_models import resolve_stylizer

    with pytest.raises(UserError, match=r"^models:/tra/1 holds no artifacts/generator.pt: not a generator logged by "
                                        r"the train stage \(models logged before the pyfunc format"):  # fmt: skip
        resolve_generator("models:/tra/1", "gen")
    with pytest.raises(UserError, match=r"^models:/gen/1 holds no artifacts/stylizer.pt: not a stylizer logged by "
                                        r"the stylize_train stage \(train one with"):  # fmt: skip
        resolve_stylizer("models:/gen/1", "sty")
