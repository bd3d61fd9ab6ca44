"""The stylizer as an MLflow pyfunc model: code plus tensors (no pickle), a signature with params, the pixels the
CLI writes, found again by `--model models:/...`, and requirements that cover the model code's imports."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from anime_avatar.data.images import center_square
from anime_avatar.ops import pyfunc_stylizer
from anime_avatar.ops.stylizer_models import STYLIZER_DISTRIBUTIONS, log_stylizer_model, resolve_stylizer
from anime_avatar.style.features import LAYERS, build_features
from anime_avatar.style.model_file import load_stylizer, save_stylizer
from anime_avatar.style.nets import FusionHead, fusion_config
from anime_avatar.style.transfer import make_method, stylize_image
from tests.conftest import code_model_files
from tests.importgraph import third_party_imports, unlisted_imports

NAME = "anime-avatar-stylizer"


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    """A small untrained stylizer saved as stylizer.pt, logged and registered as version 1 in a fresh store."""
    import mlflow

    work = tmp_path_factory.mktemp("stylizer-model")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    torch.manual_seed(0)
    encoder = build_features("inception", LAYERS["inception"].fusion_scales)
    heads = {m: FusionHead(fusion_config(m, encoder, LAYERS["inception"].fusion_scales, 8, 64, 16))
             for m in ("attention", "adain")}  # fmt: skip
    stylizer_file = work / "stylizer.pt"
    save_stylizer(stylizer_file, heads, step=3, image_size=64)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("stylizer-test")
    with mlflow.start_run() as run:
        log_stylizer_model(mlflow, stylizer_file, NAME)
    mlflow.set_tracking_uri(None)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)) for _ in range(3)]
    return {"uri": uri, "file": stylizer_file, "run_id": run.info.run_id, "images": images}


def test_pyfunc_model_stylises_rows_of_image_bytes_like_the_cli(registered, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    signature = model.metadata.signature
    assert [(c.name, c.type.name) for c in signature.inputs.inputs] == [("content", "binary"), ("style", "binary")]
    assert {p.name: p.default for p in signature.params.params} == {"method": "attention", "size": 256}

    a, b, style = registered["images"]
    frame = pd.DataFrame({"content": [png(a), png(b)], "style": [png(style), png(style)]})
    for method in ("attention", "adain"):
        out = model.predict(frame, params={"method": method, "size": 48})
        assert out.dtype == np.uint8 and out.shape == (2, 48, 48, 3)
        expected = stylize_image(make_method(method, stylizer=registered["file"]), center_square(a, 48), style, 48)
        assert np.array_equal(out[0], np.asarray(expected))
    # A large square photo: the command resizes it whole (resize_short), the served model crops it first
    # (center_square); both with Lanczos and the same reducing gap, so the same pixels (they differed by a grey level).
    big = Image.fromarray(np.random.default_rng(5).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    served = model.predict(pd.DataFrame({"content": [png(big)], "style": [png(style)]}), params={"size": 48})[0]
    command = stylize_image(make_method("attention", stylizer=registered["file"]), big, style, 48)
    assert np.array_equal(served, np.asarray(command))
    with pytest.raises(Exception, match="method 'gatys'"):
        model.predict(frame, params={"method": "gatys"})
    mlflow.set_tracking_uri(None)


def test_a_stylizer_holding_only_adain_serves_requests_that_name_no_method(registered, tmp_path):
    """stylize.methods: [adain] made a file whose logged signature defaulted to attention: every request without a
    method, the logged input example's included, was refused."""
    from types import SimpleNamespace

    from anime_avatar.ops.stylizer_models import stylizer_signature

    encoder = build_features("inception", LAYERS["inception"].fusion_scales)
    head = FusionHead(fusion_config("adain", encoder, LAYERS["inception"].fusion_scales, 8, 64, 16))
    save_stylizer(tmp_path / "adain.pt", {"adain": head}, step=3, image_size=64)
    model = pyfunc_stylizer.StylizerModel()
    model.load_context(SimpleNamespace(artifacts={pyfunc_stylizer.ARTIFACT: str(tmp_path / "adain.pt")}))
    a, _, style = registered["images"]
    out = model.predict(None, pd.DataFrame({"content": [png(a)], "style": [png(style)]}), params={"size": 48})
    assert out.shape == (1, 48, 48, 3)
    params = stylizer_signature(pyfunc_stylizer.default_method(["adain"])).params.params
    assert {p.name: p.default for p in params}["method"] == "adain"
    assert pyfunc_stylizer.default_method(["adain", "attention"]) == "attention"


def test_the_logged_model_holds_code_and_tensors_and_resolves_for_the_cli(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    folder, files = code_model_files(f"models:/{NAME}/1")
    assert {"pyfunc_stylizer.py", "artifacts/stylizer.pt", "code/anime_avatar/style/nets.py"} <= files
    # The package as code, without the shipped translator's 11.5 MB of weights, which every model carried.
    assert not [f for f in files if f.startswith("code/") and (f.endswith(".pt") or "__pycache__" in f)]
    path = resolve_stylizer(f"models:/{NAME}/1", NAME)
    assert load_stylizer(path, "adain").step == 3
    assert resolve_stylizer(str(registered["file"]), NAME) == registered["file"]
    requirements = (folder / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} == set(STYLIZER_DISTRIBUTIONS)


def test_a_stylizer_found_by_its_run_is_kept_once_in_the_cache_and_leaves_no_temporary_folder(
    registered, monkeypatch, tmp_path
):
    import tempfile

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    monkeypatch.setenv("ANIME_AVATAR_CACHE", str(tmp_path / "cache"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where MLflow's downloads went (mkdtemp), one per use
    uri = f"runs:/{registered['run_id']}/stylizer"
    first, second = resolve_stylizer(uri, NAME), resolve_stylizer(uri, NAME)
    assert first == second and first.parent == tmp_path / "cache" / "models"
    assert first.read_bytes() == registered["file"].read_bytes() and load_stylizer(first, "adain").step == 3
    assert list(scratch.iterdir()) == [], "each download went to a folder left behind in /tmp"


def test_requirements_cover_every_import_of_the_model_code():
    path = Path(pyfunc_stylizer.__file__)
    assert {"torch", "mlflow", "PIL", "torchvision"} <= third_party_imports(path)  # the scan sees lazy imports too
    missing = unlisted_imports(path, STYLIZER_DISTRIBUTIONS)
    assert not missing, f"the model code imports {missing}, which its requirements lack"
