"""All six stages under `dvc repro` on tiny params, then MLflow records and `anime-avatar generate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anime_avatar.generate import latent, slerp
from tests.conftest import run

pytestmark = pytest.mark.slow

TINY = {
    "data": {"synthetic": {"count": 10, "size": 512}},
    "detect": {"image_size": 32},
    "validate": {"min_count": 8},
    "model": {"channels": 8, "attention": [16], "z_dim": 16},
    "train": {"steps": 4, "batch_size": 8, "log_every": 1, "sample_every": 2, "checkpoint_every": 2},
    "eval": {"n_samples": 24, "batch_size": 12, "kid_subset_size": 8},
}


def test_repro_trains_evaluates_tracks_and_generates(project, tmp_path):
    work = project(TINY)
    proc = run(["dvc", "repro"], work)
    assert "FID" in proc.stdout + proc.stderr

    train_metrics = json.loads((work / "metrics/train.json").read_text())
    assert train_metrics["steps"] == 4 and train_metrics["params_g"] > 0 and train_metrics["params_d"] > 0
    scores = json.loads((work / "metrics/eval.json").read_text())
    assert set(scores) == {"fid", "kid_mean", "kid_std", "n_samples", "n_real"}
    assert scores["n_samples"] == 24 and scores["fid"] > 0
    assert Image.open(work / "reports/samples.png").size[0] > 32 * 4
    assert sorted(p.name for p in (work / "plots/samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    losses = (work / "plots/losses.csv").read_text().splitlines()
    assert losses[0] == "step,loss_d,loss_g" and len(losses) == 5

    # DVC sees the metrics.
    shown = run(["dvc", "metrics", "show", "--json"], work).stdout
    assert '"fid"' in shown and '"steps"' in shown

    # MLflow: one run with params, data versions, losses, FID, artifacts and a registered model.
    code = """
import json, mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri("sqlite:///mlflow.db")
run_id = json.load(open("models/run.json"))["run_id"]
c = MlflowClient()
r = c.get_run(run_id)
hist = c.get_metric_history(run_id, "loss_d")
versions = c.search_model_versions("name='anime-avatar-generator'")
arts = [a.path for a in c.list_artifacts(run_id, "samples")]
print(json.dumps({"params": r.data.params, "tags": r.data.tags, "metrics": r.data.metrics,
                  "steps": [m.step for m in hist], "versions": [v.run_id for v in versions], "arts": arts}))
"""
    record = json.loads(run(["python", "-c", code], work).stdout.strip().splitlines()[-1])
    assert record["params"]["train.steps"] == "4" and record["params"]["model.arch"] == "sagan"
    assert record["tags"]["data_version.train"].startswith("md5:")
    assert record["tags"]["stage"] == "train" and record["tags"]["git_commit"]
    assert record["steps"] == [1, 2, 3, 4]
    assert {"fid", "kid_mean", "kid_std"} <= set(record["metrics"])
    assert record["metrics"]["fid"] == pytest.approx(scores["fid"])
    assert record["versions"] == [json.loads((work / "models/run.json").read_text())["run_id"]]
    assert record["arts"] == ["samples/step-0000002.png", "samples/step-0000004.png"]

    # The product: the same seed gives the same avatars, from the file or from the registry.
    for out in ("a", "b"):
        run(["anime-avatar", "generate", "--n", "3", "--seed", "5", "--out", str(tmp_path / out)], work)
    run(["anime-avatar", "generate", "--n", "1", "--seed", "6", "--out", str(tmp_path / "c"),
         "--model", "models:/anime-avatar-generator/1"], work)  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["avatar-000005.png", "avatar-000006.png", "avatar-000007.png"]
    for name in names:
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "a" / name)), np.asarray(Image.open(tmp_path / "b" / name))
        )
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "a" / "avatar-000006.png")),
        np.asarray(Image.open(tmp_path / "c" / "avatar-000006.png")),
    )
    run(["anime-avatar", "generate", "--interpolate", "1", "2", "--steps", "4", "--grid", str(tmp_path / "w.png"),
         "--truncation", "0.7"], work)  # fmt: skip
    assert Image.open(tmp_path / "w.png").size == (4 * 34 + 2, 36)

    bad = run(["anime-avatar", "generate", "--model", "nowhere.pt"], work, check=False)
    assert bad.returncode == 1 and "neither a file nor an MLflow model URI" in bad.stderr


def test_latents_are_seeded_and_truncated():
    assert torch.equal(latent(3, 64), latent(3, 64))
    assert not torch.equal(latent(3, 64), latent(4, 64))
    assert latent(3, 512, truncation=0.5).abs().max() <= 0.5
    a, b = latent(1, 32), latent(2, 32)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    middle = slerp(a, b, 0.5)
    assert abs(middle.norm() - (a.norm() + b.norm()) / 2) < 0.15 * a.norm()
