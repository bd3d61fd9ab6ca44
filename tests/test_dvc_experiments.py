"""Comparing runs the DVC way, with real `dvc exp run` calls on tiny params in a git + DVC workspace:
the metrics, plots and run file are in git, so `dvc exp show`, `dvc metrics diff` and `dvc plots diff` read
them at every revision; a resumed training keeps its earlier sample grids; a failed `dvc exp run -S` leaves
params.yaml formatted as it was, and `git checkout params.yaml && dvc checkout` gets everything back.

Three DVC runs in all: the baseline `dvc repro`, one failing and one succeeding `dvc exp run`.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import BIN, ROOT, TINY_PIPELINE, commit, make_project, run

pytestmark = pytest.mark.slow


def test_dvc_round_trip_of_params_yaml_changes_only_the_value():
    """`dvc exp run -S` rewrites params.yaml with DVC's YAML writer: the project's file is written in its style."""
    import shutil
    import tempfile
    from pathlib import Path

    from dvc.utils.serialize import modify_yaml

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copy(ROOT / "params.yaml", copy)
        with modify_yaml(copy) as values:
            values["detect"]["margin"] = -1
        before, after = (ROOT / "params.yaml").read_text().splitlines(), copy.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [
        (
            "  margin: 0.25             # context around the box, per side, as a fraction of it",
            "  margin: -1               # context around the box, per side, as a fraction of it",
        )
    ]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    work = make_project(tmp_path_factory.mktemp("experiments") / "project", TINY_PIPELINE, git=True)
    run(["dvc", "repro"], work)
    commit(work, "baseline")
    return work


def test_outputs_of_a_run_are_committed_with_its_dvc_lock(baseline):
    tracked = set(run(["git", "ls-files"], baseline).stdout.split())
    assert {"dvc.lock", "metrics/eval.json", "metrics/train.json", "plots/losses.csv",
            "plots/samples/step-0000002.png", "reports/validation.json", "reports/samples.png",
            "reports/data_docs/index.html"} <= tracked  # fmt: skip
    assert run(["git", "status", "--porcelain"], baseline).stdout == ""
    # Each run record travels with its model in DVC's cache: dvc.lock holds both hashes at every commit.
    lock = yaml.safe_load((baseline / "dvc.lock").read_text())
    for stage, model, record in [("train", "models/generator.pt", "models/run.json"),
                                 ("stylize_train", "models/stylizer.pt", "models/stylizer_run.json")]:  # fmt: skip
        assert {model, record} <= {out["path"] for out in lock["stages"][stage]["outs"]}
        assert model not in tracked and record not in tracked
        assert (baseline / record).is_file()
    assert not any(p.startswith("data/") for p in tracked - {"data/.gitkeep"})


def test_failed_experiment_keeps_params_formatting_and_git_checkout_dvc_checkout_restore(baseline):
    work = baseline
    committed = (work / "params.yaml").read_text()
    faces = sorted(p.name for p in (work / "data/faces").iterdir())
    failed = run(["dvc", "exp", "run", "-S", "detect.margin=-1"], work, check=False)
    assert failed.returncode != 0
    assert "detect.margin: Input should be greater than or equal to 0" in failed.stdout + failed.stderr
    diff = [line for line in run(["git", "diff", "-U0", "params.yaml"], work).stdout.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]  # fmt: skip
    assert [line[0] + line[1:].split("#")[0].strip() for line in diff] == ["-margin: 0.25", "+margin: -1"]
    assert not (work / "data/faces").exists()  # DVC removed the stage's output before running it

    run(["git", "checkout", "params.yaml"], work)  # the README's way back
    run(["dvc", "checkout"], work)
    assert (work / "params.yaml").read_text() == committed
    assert sorted(p.name for p in (work / "data/faces").iterdir()) == faces
    assert "Data and pipelines are up to date" in run(["dvc", "status"], work).stdout


def test_experiment_is_compared_with_dvc_exp_show_metrics_diff_and_plots_diff(baseline):
    work = baseline
    base_scores = json.loads((work / "metrics/eval.json").read_text())
    # Longer training: resumes from the baseline's checkpoint at step 2 and goes on to step 4.
    run(["dvc", "exp", "run", "-S", "train.steps=4", "-n", "longer"], work)
    scores = json.loads((work / "metrics/eval.json").read_text())

    table = list(csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--only-changed", "--csv"], work).stdout)))
    rows = {row["Experiment"] or row["rev"]: row for row in table}
    assert float(rows["longer"]["fid"]) == pytest.approx(scores["fid"])
    # Two metrics files have a "steps" (train and stylize_train): DVC names the column by file then.
    assert float(rows["longer"]["train.steps"]) == 4 and float(rows["longer"]["metrics/train.json:steps"]) == 4
    head = next(row for row in table if row["typ"] == "baseline" and row["rev"] != "workspace")
    assert float(head["fid"]) == pytest.approx(base_scores["fid"]) and float(head["train.steps"]) == 2
    assert "!" not in {value for row in table for value in row.values()}

    # `anime-avatar experiments`: the headline scores of every stage, and of the rest only what differs.
    from pipelines.experiments import headline_pattern

    short = list(csv.DictReader(io.StringIO(run([str(BIN / "anime-avatar"), "experiments", "--csv"], work).stdout)))
    columns = set(short[0]) - {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
    headline = {c for c in columns if re.match(headline_pattern(), c)}
    assert headline == {"fid", "kid_mean", "kid_std", "seconds_per_avatar"} | {
        f"{net}.{key}" for net in ("attention", "adain") for key in ("style_loss", "structure", "colour")
    } | {f"translated.{key}" for key in ("kid_x100", "fid", "face_rate", "structure")}
    assert {"train.steps", "metrics/train.json:steps"} <= columns - headline
    assert columns - headline <= set(table[0])  # the rest: what `dvc exp show --only-changed` has
    assert not [c for c in columns if c.startswith(("anime_avatar/", "stages/"))]
    assert len(columns) < 40 < len(run(["dvc", "exp", "show", "--csv"], work).stdout.splitlines()[0].split(","))

    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], work).stdout)
    assert diff["metrics/eval.json"]["fid"]["old"] == pytest.approx(base_scores["fid"])
    assert diff["metrics/eval.json"]["fid"]["new"] == pytest.approx(scores["fid"])
    assert diff["metrics/train.json"]["steps"] == {"old": 2, "new": 4, "diff": 2}

    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "longer", "--json"], work).stdout)["data"]
    (losses,) = plots["losses"]
    values = losses["content"]["data"]["values"]
    steps = {rev: sorted({int(v["step"]) for v in values if v["rev"] == rev}) for rev in ("HEAD", "longer")}
    assert steps == {"HEAD": [1, 2], "longer": [1, 2, 3, 4]}
    # Every grid of the resumed run: step 2 (made before the resume) and step 4.
    assert sorted(p.name for p in (work / "plots/samples").iterdir()) == ["step-0000002.png", "step-0000004.png"]
    assert {r for item in plots["plots/samples/step-0000002.png"] for r in item["revisions"]} == {"HEAD", "longer"}


def test_mlflow_runs_carry_names_git_state_datasets_and_every_grid(baseline):
    client = MlflowClient(f"sqlite:///{baseline / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs(["1"], "tags.stage = 'train'")}
    assert set(runs) == {"sagan-32px-2", "sagan-32px-4"}
    first, longer = runs["sagan-32px-2"], runs["sagan-32px-4"]
    log = run(["git", "log", "--format=%H"], baseline).stdout.split()
    assert first.data.tags["mlflow.source.git.commit"] == log[1] and first.data.tags["git.dirty"] == "false"
    # `dvc exp run -S` trains on changed params: recorded as dirty, on the commit it started from.
    assert longer.data.tags["mlflow.source.git.commit"] == log[0] and longer.data.tags["git.dirty"] == "true"
    (data,) = longer.inputs.dataset_inputs
    assert data.dataset.name == "data/train" and data.dataset.source_type == "local"
    assert longer.data.tags["data_version.train"].removeprefix("md5:").startswith(data.dataset.digest[:32])
    samples = [a.path for a in client.list_artifacts(longer.info.run_id, "samples")]
    assert samples == ["samples/step-0000002.png", "samples/step-0000004.png"]
    # generator.pt is logged once: inside the registered model, not beside it.
    assert "generator.pt" not in [a.path for a in client.list_artifacts(longer.info.run_id)]
