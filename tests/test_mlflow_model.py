"""The generator as an MLflow pyfunc model: logged as code plus tensors (no pickle), with a signature and an
input example; loaded by ``mlflow.pyfunc``, by ``anime-avatar generate --model models:/...``, and served by
``mlflow models serve`` on 127.0.0.1."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from anime_avatar.artifacts.generator import save_generator
from anime_avatar.gan.inference import avatars
from anime_avatar.gan.model_file import load_generator
from anime_avatar.gan.nets import build_generator, net_config
from anime_avatar.ops import pyfunc_generator
from anime_avatar.ops.generator_models import MODEL_DISTRIBUTIONS, log_generator_model
from anime_avatar.ops.registry import resolve_generator
from anime_avatar.ops.tracking import model_requirements
from tests.conftest import BIN, code_model_files, free_port, params_with, stop, venv_env, wait_http
from tests.importgraph import third_party_imports, unlisted_imports

NAME = "anime-avatar-generator"


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    """A small random generator saved as generator.pt, logged and registered as version 1 in a fresh store."""
    import mlflow

    work = tmp_path_factory.mktemp("mlflow-model")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    torch.manual_seed(0)
    config = net_config(params_with({"model": {"channels": 8, "z_dim": 16}}).model, 32)
    net = build_generator(config)
    generator_file = work / "generator.pt"
    save_generator(generator_file, config.to_dict(), net.state_dict(), net.state_dict(), step=4)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("model-test")
    with mlflow.start_run() as run:
        log_generator_model(mlflow, generator_file, NAME)
    mlflow.set_tracking_uri(None)
    return {"uri": uri, "file": generator_file, "run_id": run.info.run_id, "work": work}


def expected(file: Path, seeds: list[int], truncation: float) -> np.ndarray:
    return avatars(load_generator(file).net, seeds, truncation).permute(0, 2, 3, 1).numpy()


def test_pyfunc_model_has_a_signature_an_example_and_the_generate_pixels(registered, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    signature = model.metadata.signature
    assert [(c.name, c.type.name, c.required) for c in signature.inputs.inputs] == [
        ("seed", "long", True), ("truncation", "double", False)
    ]  # fmt: skip
    (output,) = signature.outputs.inputs
    assert output.type == np.dtype(np.uint8) and output.shape == (-1, 32, 32, 3)

    images = model.predict(pd.DataFrame({"seed": [5, 6], "truncation": [0.0, 0.7]}))
    assert images.dtype == np.uint8 and images.shape == (2, 32, 32, 3)
    assert np.array_equal(images[:1], expected(registered["file"], [5], 0.0))
    assert np.array_equal(images[1:], expected(registered["file"], [6], 0.7))
    # Without the optional column: no truncation.
    assert np.array_equal(model.predict(pd.DataFrame({"seed": [5]})), images[:1])

    # `anime-avatar generate --model models:/...` loads the same weights.
    net = resolve_generator(f"models:/{NAME}/1", NAME)
    assert np.array_equal(avatars(net, [5, 6], 0.7), avatars(load_generator(registered["file"]).net, [5, 6], 0.7))
    mlflow.set_tracking_uri(None)


def test_logged_model_is_code_and_tensors_with_its_requirements(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    folder, files = code_model_files(f"models:/{NAME}/1")
    assert "pyfunc_generator.py" in files and "artifacts/generator.pt" in files
    assert "code/anime_avatar/gan/nets.py" in files
    # The weights file is the project's own format: tensors only, readable with weights_only=True.
    assert load_generator(folder / "artifacts/generator.pt").step == 4
    mlmodel = (folder / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel and "python_model.pkl" not in mlmodel
    example = pd.read_json(folder / "input_example.json", orient="split")
    assert list(example.columns) == ["seed", "truncation"]
    requirements = (folder / "requirements.txt").read_text().split()
    assert requirements == model_requirements(MODEL_DISTRIBUTIONS)
    assert {r.split("==")[0] for r in requirements} == set(MODEL_DISTRIBUTIONS)
    assert "torch==" + torch.__version__.split("+")[0] in requirements


def test_requirements_cover_every_import_of_the_model_code():
    """What the logged model runs (pyfunc_generator.py and its closure) imports, top-level or lazily, is in its
    requirements: enough to load it in a clean environment."""
    path = Path(pyfunc_generator.__file__)
    assert {"torch", "numpy", "mlflow", "pandas"} <= third_party_imports(path)  # the scan sees lazy imports too
    missing = unlisted_imports(path, MODEL_DISTRIBUTIONS)
    assert not missing, f"the model code imports {missing}, which its requirements lack"


@pytest.mark.slow
def test_mlflow_models_serve_returns_avatars_from_invocations(registered):
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}/1", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=registered["work"], env=venv_env({"MLFLOW_TRACKING_URI": registered["uri"]}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server, timeout=180)
        body = {"dataframe_split": {"columns": ["seed", "truncation"], "data": [[5, 0.0], [6, 0.7]]}}
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
    finally:
        stop(server)
    assert response.status_code == 200, response.text
    images = np.asarray(response.json()["predictions"], dtype=np.uint8)
    assert images.shape == (2, 32, 32, 3)
    assert np.array_equal(images[:1], expected(registered["file"], [5], 0.0))
    assert np.array_equal(images[1:], expected(registered["file"], [6], 0.7))


def test_a_champion_whose_files_are_gone_is_named_and_the_workspace_file_used_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    """A project moved or copied: MLflow's download of the champion returned an empty folder, and `generate` said
    "no champion model registered" (at INFO) and drew other avatars than the registry names, exit 0."""
    import shutil

    from mlflow import MlflowClient

    from anime_avatar.core.errors import UserError

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    torch.manual_seed(1)
    config = net_config(params_with({"model": {"channels": 8, "z_dim": 16}}).model, 32)
    net = build_generator(config)
    (tmp_path / "models").mkdir()
    save_generator(tmp_path / "models/generator.pt", config.to_dict(), net.state_dict(), net.state_dict(), step=4)
    import mlflow

    mlflow.set_experiment("moved")
    with mlflow.start_run():
        log_generator_model(mlflow, tmp_path / "models/generator.pt", NAME)
    mlflow.set_tracking_uri(None)

    caplog.set_level("INFO")
    resolve_generator(None, NAME)  # registered, but no alias yet: the store says so, the file is used
    assert f"no champion model registered (cannot load the generator models:/{NAME}@champion: " in caplog.text
    assert "alias champion not found" in caplog.text
    MlflowClient(uri).set_registered_model_alias(NAME, "champion", "1")
    assert resolve_generator(None, NAME) is not None and "using models:/" in caplog.text

    shutil.rmtree(tmp_path / "mlruns")  # where the store keeps the models (an absolute path in mlflow.db)
    caplog.clear()
    net = resolve_generator(None, NAME)
    workspace_file = load_generator(tmp_path / "models/generator.pt").net
    assert np.array_equal(avatars(net, [3], 0.0), avatars(workspace_file, [3], 0.0))
    warning = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and warning[0].getMessage().startswith(
        f"the champion could not be loaded (cannot load the generator models:/{NAME}@champion: the tracking store "
        "knows it, but no files are where it keeps them (a moved or copied project?"
    )
    assert warning[0].getMessage().endswith("): using models/generator.pt instead")
    with pytest.raises(UserError, match=rf"^cannot load the generator models:/{NAME}/1: the tracking store knows it"):
        resolve_generator(f"models:/{NAME}/1", NAME)  # asked for by name: no fallback
