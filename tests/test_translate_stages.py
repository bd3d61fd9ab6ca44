"""End to end: `dvc repro translate_eval` (download, detect, download_photos, translate_train, translate_eval) on
tiny params; the translator's file, its MLflow model and the commands that use it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from anime_avatar.artifacts.translator import read_translator, write_translator
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import read_csv
from anime_avatar.core.params import merge
from anime_avatar.translate.model_file import load_translator, save_translator
from anime_avatar.translate.nets import Generator, TranslatorConfig
from tests.conftest import TINY_METHODS, WritesMarker, code_model_files, params_with, run

TINY = merge(TINY_METHODS, {"data": {"synthetic": {"count": 8, "size": 256}}})


@pytest.mark.slow
def test_dvc_repro_trains_evaluates_and_registers_the_translator(project, monkeypatch):
    work = project(TINY)
    first = run(["dvc", "repro", "translate_eval"], work)
    assert "alembic" not in first.stdout + first.stderr  # MLflow's database set-up: 9 lines per stage until 2026-12-07

    assert len(read_csv(work / "data/photos/manifest.csv")) == 8
    trained = load_translator(work / "models/translator.pt")
    assert trained.step == 3 and trained.image_size == 16 and trained.config.attention == "cam+mask"
    assert trained.info["params"]["steps"] == 3 and set(trained.info["domains"]) == {"data/photos", "data/faces"}
    assert trained.info["synthetic_photos"] is True  # the offline default: `avatar` prefers the shipped translator
    assert trained.data_version.startswith("data/photos=md5:") and ";data/faces=md5:" in trained.data_version
    assert (work / "models/translator_checkpoints/last.pt").is_file()
    train_metrics = json.loads((work / "metrics/translate_train.json").read_text())
    assert train_metrics["steps"] == 3 and {"loss_g", "loss_d", "cycle", "identity", "cam"} <= set(train_metrics)
    assert [int(r["step"]) for r in read_csv(work / "plots/translate_losses.csv")] == [1, 2, 3]
    sheets = sorted(p.name for p in (work / "plots/translate_samples").iterdir())
    assert sheets == ["step-0000002.png", "step-0000003.png"]
    # photo | anime | cycle | heatmap | mask, then the same from anime: 10 rows of 4 samples of 16 px (+2 px gaps)
    assert Image.open(work / "plots/translate_samples" / sheets[-1]).size == (2 + 4 * 18, 2 + 10 * 18)

    metrics = json.loads((work / "reports/translate.json").read_text())
    assert json.loads((work / "metrics/translate.json").read_text()) == {
        "translated": {k: metrics["translated"][k] for k in ("kid_x100", "fid", "face_rate", "structure")},
        "seconds_per_avatar": metrics["seconds_per_avatar"],
    }  # the headline `dvc exp show` has columns for; every number is in the report
    for row in ("translated", "untranslated", "real_anime"):
        assert np.isfinite(metrics[row]["kid_x100"]) and 0.0 <= metrics[row]["face_rate"] <= 1.0, row
    assert metrics["translated"]["fid"] > 0 and metrics["untranslated"]["fid"] > 0
    # The default reference is the test set's folder: its other half, not the test faces themselves (FID 0).
    assert metrics["real_anime"]["fid"] > 0 and metrics["n_reference"] >= 2
    assert metrics["untranslated"]["structure"] == pytest.approx(1.0)
    assert 0.0 < metrics["translated"]["structure"] < 1.0
    assert metrics["real_anime"]["structure"] is None
    assert (metrics["n_photos"], metrics["n_anime"], metrics["image_size"], metrics["model_image_size"]) == (
        6,
        6,
        32,
        16,
    )
    assert metrics["seconds_per_avatar"] > 0 and metrics["model"]["step"] == 3
    assert Image.open(work / "reports/translate.png").size[0] == 2 + 6 * 18  # one column per test photo

    from mlflow import MlflowClient

    record = json.loads((work / "models/translator_run.json").read_text())
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    (version,) = client.search_model_versions("name='anime-avatar-translator'")
    assert version.run_id == record["run_id"] == trained.run_id
    logged = client.get_run(record["run_id"])
    assert logged.info.status == "FINISHED" and logged.data.tags["stage"] == "translate_train"
    assert logged.data.tags["data_version.photos"].startswith("md5:")
    datasets = {d.dataset.name: d.dataset for d in logged.inputs.dataset_inputs}  # both domains (until 2026-12-07
    assert set(datasets) == {"data/photos", "data/faces"}  # only the GAN's runs logged their training set)
    assert json.loads(datasets["data/photos"].profile)["features_shape"] == [8, 16, 16, 3]
    assert "eval.translated.kid_x100" in logged.data.metrics and "cycle" in logged.data.metrics
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    assert {"translate.png", "translate_samples"} <= artifacts

    assert "Data and pipelines are up to date" in run(["dvc", "repro", "translate_eval"], work).stdout
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["translate"]["threads"] = 2  # operational: nothing to redo
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "up to date" in run(["dvc", "status", "translate_train"], work).stdout
    params["translate"]["cycle_weight"] = 5.0
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "translate.cycle_weight" in run(["dvc", "status", "translate_train"], work).stdout

    # The logged model is code and tensors, and translates like the file does.
    import mlflow

    # (mlflow.set_tracking_uri sets MLFLOW_TRACKING_URI: through monkeypatch, so that it does not outlive the test
    # and send a later test's stages to this project's store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    folder, files = code_model_files("models:/anime-avatar-translator/1")
    assert "artifacts/translator.pt" in files
    model = mlflow.pyfunc.load_model("models:/anime-avatar-translator/1")
    photo = work / "data/photos/images/synthetic/000000.png"
    out = model.predict({"photo": [photo.read_bytes()]}, params={"size": 24})
    assert out.shape == (1, 24, 24, 3) and out.dtype == np.uint8

    # Longer: resumes at step 3 and keeps the sheet the first process made at step 2 (the folder persists);
    # step 3's, not a sample step of a 4-step run, is pruned. The new run has every sheet of its steps.
    params["translate"] |= {"cycle_weight": 10.0, "steps": 4}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert (
        "resumed from models/translator_checkpoints/last.pt at step 3"
        in run(["dvc", "repro", "translate_train"], work).stderr
    )
    assert sorted(p.name for p in (work / "plots/translate_samples").iterdir()) == [
        "step-0000002.png",
        "step-0000004.png",
    ]
    resumed = json.loads((work / "models/translator_run.json").read_text())["run_id"]
    assert {a.path for a in client.list_artifacts(resumed, "translate_samples")} == {
        "translate_samples/step-0000002.png",
        "translate_samples/step-0000004.png",
    }


def tiny_translator(path, attention="cam+mask", seed=0):
    torch.manual_seed(seed)
    cfg = TranslatorConfig(image_size=16, channels=4, n_blocks=2, attention=attention, disc_channels=4, disc_layers=2)
    g_ab, g_ba = Generator(cfg), Generator(cfg)
    save_translator(path, g_ab, g_ba, step=7, run_id="r1", data_version="d", info={"params": {"steps": 7}})
    return g_ab, g_ba


def test_a_translator_file_rebuilds_both_directions_exactly(tmp_path):
    g_ab, g_ba = tiny_translator(tmp_path / "t.pt")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for to, net in (("anime", g_ab), ("photo", g_ba)):
        loaded = load_translator(tmp_path / "t.pt", to)
        assert (loaded.step, loaded.run_id, loaded.info) == (7, "r1", {"params": {"steps": 7}})
        with torch.no_grad():
            assert torch.equal(loaded.net(x).image, net.eval()(x).image)
    with pytest.raises(UserError, match="--to must be one of anime, photo"):
        load_translator(tmp_path / "t.pt", "cartoon")


def test_translator_files_that_do_not_fit_are_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such translator file .*dvc repro translate_train"):
        load_translator(tmp_path / "missing.pt")
    tiny_translator(tmp_path / "t.pt")
    payload = read_translator(tmp_path / "t.pt")
    # A config that asks for a huge net beside small weights: refused before anything of that size is built.
    huge = {**payload["config"], "channels": 1024}
    write_translator(tmp_path / "huge.pt", huge, {"g_ab": payload["g_ab"], "g_ba": payload["g_ba"]}, 1)
    with pytest.raises(UserError, match="its weights do not fit its config") as err:
        load_translator(tmp_path / "huge.pt")
    assert "\n" not in str(err.value)
    torch.save({"format": 1, "config": WritesMarker(tmp_path / "pwned")}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused to load"):
        load_translator(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    # Plain values of the wrong kind, which weights_only loads: one line, not a ValueError/TypeError traceback.
    for bad in ({"step": "latest"}, {"info": [1, 2]}, {"step": float("inf")}):
        torch.save({**payload, **bad}, tmp_path / "odd.pt")
        with pytest.raises(UserError, match="odd.pt: not a"):
            load_translator(tmp_path / "odd.pt")
    # The workspace's models/translator.pt (the default, read for its info first): the same line, not an
    # AttributeError traceback from avatar, translate and the studio.
    (tmp_path / "models").mkdir()
    torch.save({**payload, "info": [1, 2]}, tmp_path / "models" / "translator.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^models/translator.pt: not a .* \(info is a list, not a mapping\)$"):
        load_translator()


def test_translate_command_writes_one_image_or_a_folder(tmp_path):
    from anime_avatar.cli import main

    tiny_translator(tmp_path / "t.pt")
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("RGB", (40 + i, 30), (50 * i, 120, 200)).save(faces / f"f{i}.png")
    main(["translate", "--content", str(faces / "f0.png"), "--out", str(tmp_path / "a.png"), "--model",
          str(tmp_path / "t.pt")])  # fmt: skip
    assert Image.open(tmp_path / "a.png").size == (16, 16)  # the translator's side unless --size
    main(["translate", "--content", str(faces), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "t.pt"),
          "--size", "40", "--to", "photo"])  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["f0.png", "f1.png", "f2.png"]
    assert Image.open(tmp_path / "out/f2.png").size == (40, 40)


def test_avatar_style_methods_need_a_style_and_say_so(tmp_path, caplog):
    from anime_avatar.cli import main

    Image.new("RGB", (64, 64), "white").save(tmp_path / "p.png")
    with pytest.raises(SystemExit):
        main(["avatar", "--photo", str(tmp_path / "p.png"), "--out", str(tmp_path / "a.png"), "--method", "adain"])
    assert "--method adain restyles the face after an example: give it --style IMG" in caplog.text


def test_the_translator_models_requirements_cover_every_import_of_its_code():
    from pathlib import Path

    from anime_avatar.ops import pyfunc_translator
    from anime_avatar.ops.translator_models import TRANSLATOR_DISTRIBUTIONS
    from tests.importgraph import third_party_imports, unlisted_imports

    path = Path(pyfunc_translator.__file__)
    assert {"torch", "mlflow", "PIL"} <= third_party_imports(path)
    missing = unlisted_imports(path, TRANSLATOR_DISTRIBUTIONS)
    assert not missing, f"the model code imports {missing}, which its requirements lack"


@pytest.mark.parametrize("key", ["photos", "anime"])
def test_translate_eval_with_one_image_in_a_set_stops_before_scoring_naming_the_key(tmp_path, monkeypatch, key):
    from stages import translate_eval as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    tiny_translator(tmp_path / "models/translator.pt")
    folder, single = tmp_path / "three", tmp_path / "one.png"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (40 * i, 90, 160)).save(folder / f"{i}.png")
    Image.new("RGB", (20, 20), (200, 90, 40)).save(single)
    sets = {"photos": str(folder), "anime": str(folder), "reference": str(folder)} | {key: str(single)}
    params = params_with({"translate_eval": {**sets, "n_images": 0, "device": "cpu"}})
    monkeypatch.setattr(stage, "compute_fid_kid", lambda *a, **k: pytest.fail("scored a set of one image"))
    threads = torch.get_num_threads()  # the stage sets translate_eval.threads for its process
    with pytest.raises(UserError, match=rf"^translate_eval\.{key}: 1 image; KID and FID need at least 2$"):
        try:
            stage.translate_eval(params)
        finally:
            torch.set_num_threads(threads)
    assert not (tmp_path / "metrics").exists()


def test_one_set_as_anime_and_reference_is_split_in_disjoint_halves(tmp_path):
    """The offline default names data/faces for both: the floor was the test faces scored against themselves."""
    from stages.translate_eval import anime_and_reference

    for i in range(9):
        Image.new("RGB", (40, 40), (25 * i, 90, 160)).save(tmp_path / f"{i}.png")
    same = {"anime": str(tmp_path), "reference": str(tmp_path / "."), "image_size": 32}
    anime, reference = anime_and_reference(params_with({"translate_eval": {**same, "n_images": 4}}).translate_eval)
    assert len(anime) == len(reference) == 4
    colours = lambda images: {int(image[0, 0, 0]) for image in images}  # noqa: E731
    assert colours(anime) == {0, 50, 100, 150} and colours(reference) == {25, 75, 125, 175}  # spread 8: 0,1,...,7
    everything, rest = anime_and_reference(params_with({"translate_eval": {**same, "n_images": 0}}).translate_eval)
    assert (len(everything), len(rest)) == (5, 4) and not colours(everything) & colours(rest)
