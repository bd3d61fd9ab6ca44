"""A newcomer's first hour: errors that need no heavy library come before importing one; torch's threads follow
the machine's load; the demo workspace supports DVC experiments."""

from __future__ import annotations

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
import yaml

from anime_avatar.core.device import apply_threads
from anime_avatar.core.parallel import idle_cores
from anime_avatar.core.params import merge
from tests.conftest import BIN, ROOT, TINY_METHODS, free_port, require_browser, run, stop, venv_env, wait_http

REPORT = """
import os, sys
from anime_avatar.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print("exit", exit.code, "MODULE imported" if "MODULE" in sys.modules else "MODULE not imported")
    print("threads", os.environ.get("OMP_NUM_THREADS"))
"""


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    report = REPORT.replace("MODULE", "mlflow")
    return subprocess.run([sys.executable, "-c", report, *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip


@pytest.mark.parametrize("command", ["runs", "audit"])
def test_runs_and_audit_outside_a_project_say_so_before_importing_mlflow(command, tmp_path):
    proc = run_cli([command], tmp_path)
    assert proc.stdout.splitlines()[0] == "exit 1 mlflow not imported", proc.stdout + proc.stderr
    assert "params.yaml: no such params file" in proc.stderr
    shutil.copy(ROOT / "params.yaml", tmp_path)  # a project, never run: no mlflow.db
    proc = run_cli([command], tmp_path)
    assert proc.stdout.splitlines()[0] == "exit 1 mlflow not imported", proc.stdout + proc.stderr
    assert "no MLflow database at mlflow.db: run the pipeline first" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_the_mlflow_ui_outside_a_project_says_so_and_makes_no_empty_database(tmp_path):
    # Before: `mlflow server` started on a new, empty mlflow.db in whatever folder this ran in.
    proc = run_cli(["ui", "--port", str(free_port())], tmp_path)
    assert proc.stdout.splitlines()[0] == "exit 1 mlflow not imported", proc.stdout + proc.stderr
    assert "no MLflow database at mlflow.db: run the pipeline first (dvc repro)" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("cores", "load", "idle"), [(2, 0.0, 2), (2, 0.6, 1), (2, 11.0, 1), (16, 3.4, 13), (4, 0.4, 4)]
)
def test_idle_cores_are_the_cores_less_the_load_and_at_least_one(cores, load, idle):
    assert idle_cores(cores, load) == idle


def test_threads_zero_follows_the_load_unless_omp_num_threads_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.0, 1.0))  # another process holds a core
        assert apply_threads(0) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        assert apply_threads(0) == 2 and torch.get_num_threads() == 2
        assert apply_threads(3) == 3 and torch.get_num_threads() == 3  # a number is used as it is
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert apply_threads(0) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_the_demo_workspace_is_a_git_repository_where_dvc_experiments_work(tmp_path):
    from pipelines import demo

    work = demo.prepare(tmp_path / "demo")
    assert run(["git", "status", "--porcelain"], work).stdout == ""  # everything committed
    assert run(["git", "rev-list", "--count", "HEAD"], work).stdout.strip() == "1"
    # The demo's stages on tiny params (the translator's branch: the cheapest stage with metrics), committed.
    params = yaml.safe_load((work / "params.yaml").read_text())
    translate = TINY_METHODS["translate"] | {"steps": 2}
    tiny = merge(params, {"data": {"synthetic": {"count": 6, "size": 256}}, "detect": {"image_size": 32},
                          "photos": TINY_METHODS["photos"], "translate": translate})  # fmt: skip
    (work / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    run(["dvc", "repro", "translate_train"], work)
    demo.commit(work, "tiny baseline")
    run(["dvc", "exp", "run", "translate_train", "-S", "translate.steps=3", "-n", "three-steps"], work)
    shown = run(["dvc", "exp", "show", "--csv", "--only-changed"], work).stdout
    assert "three-steps" in shown and "translate.steps" in shown
    diff = run(["dvc", "metrics", "diff", "--json"], work).stdout
    assert json.loads(diff)["metrics/translate_train.json"]["steps"] == {"old": 2, "new": 3, "diff": 1}


def test_the_demo_ends_with_its_avatars_beside_a_full_runs_and_the_astronaut_translated(tmp_path):
    from PIL import Image

    from pipelines import demo

    Image.new("RGB", (138, 138), (200, 40, 40)).save(tmp_path / "avatars-grid.png")  # stands in for the 4x4 grid
    written = demo.pictures(tmp_path, 300)
    assert written == [tmp_path / "avatars.png", tmp_path / "astronaut-anime.png"]
    row = np.asarray(Image.open(tmp_path / "avatars.png"))
    assert row.shape[0] == 256 + 22 + 12 and row.shape[1] == 12 + 256 + 12 + 256 + 12  # two labelled panels
    assert (row[22:278, 12:268] == (200, 40, 40)).all()  # the demo's grid, then the committed full run's
    full_run = np.asarray(Image.open(demo.FULL_RUN_GRID).convert("RGB").resize((256, 256), Image.NEAREST))
    assert (row[22:278, 280:536] == full_run).all()
    assert (row[:20, 12:268] < 128).any()  # a label is drawn above each panel
    avatar = Image.open(tmp_path / "astronaut-anime.png")
    assert avatar.size == (256, 256) and (tmp_path / "astronaut.png").is_file()


def test_the_flows_and_make_prefect_server_share_one_prefect_home():
    code = "import pipelines; from prefect.settings import PREFECT_HOME; print(PREFECT_HOME.value())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert Path(proc.stdout.strip()) == ROOT / ".prefect"
    assert "PREFECT_HOME=$(CURDIR)/.prefect" in (ROOT / "Makefile").read_text()  # make runs from ROOT
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env | {"PREFECT_HOME": "/tmp/mine"},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert proc.stdout.strip() == "/tmp/mine"  # the user's own wins


@pytest.mark.slow
def test_anime_avatar_ui_prints_the_link_that_opens_the_training_runs_in_the_mlflow_ui(tmp_path, browser,
                                                                                         monkeypatch):  # fmt: skip
    """MLflow 3.17's UI opens an experiment on its GenAI overview whatever its kind tag says, unless the
    browser picked "Model training" once: `anime-avatar ui` prints the link that opens the runs table."""
    from mlflow import MlflowClient

    from anime_avatar.ops.stage_run import EXPERIMENT_KIND, tracking_ready

    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)  # in the project, as the stages run: the experiment keeps its models in its mlruns/
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking_ready(uri, "anime-avatar")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("anime-avatar")
    assert experiment.tags[EXPERIMENT_KIND] == "custom_model_development"  # the sidebar's "Training runs"
    client.set_terminated(client.create_run(experiment.experiment_id, run_name="train-sagan-32px").info.run_id)
    client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, "genai_development")
    tracking_ready(uri, "anime-avatar")  # a kind chosen in the UI stays
    assert client.get_experiment(experiment.experiment_id).tags[EXPERIMENT_KIND] == "genai_development"

    port = free_port()
    log = tmp_path / "ui.log"
    env = venv_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the folder's mlflow.db, as in a project
    with log.open("w") as out:
        server = subprocess.Popen([str(BIN / "anime-avatar"), "ui", "--port", str(port)], cwd=tmp_path,
                                  stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/", server)
        link = log.read_text().split("the training runs: ")[1].split()[0]
        runs = f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
        assert link == f"http://127.0.0.1:{port}/{runs}"
        browser.get(link)
        deadline = time.monotonic() + 90
        while "train-sagan-32px" not in (text := browser.find_element("tag name", "body").text):
            assert time.monotonic() < deadline, f"no runs table at {browser.current_url}: {text[:300]}"
            time.sleep(1)
        assert "/runs" in browser.current_url and "Detect Issues" not in text  # not the GenAI overview
    finally:
        stop(server)


LOSSES = "step,loss_d,loss_g\n" + "".join(f"{s},{1 + (s % 7) / 10},{2 - (s % 5) / 10}\n" for s in range(0, 300, 10))


def chart_pixels(page: Path, shot: Path) -> int:
    """Pixels of the chart's line colour in headless Chromium's screenshot of ``page``, with every network
    request sent to a closed port (offline)."""
    from PIL import Image

    chromium, _ = require_browser()  # skipped locally without it, failed in CI (.ci/run requires it)
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
                    "--window-size=800,600", "--virtual-time-budget=8000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((b - g > 60) & (r - g > 30)).sum())  # the purple of DVC's default line colours


@pytest.mark.slow
def test_dvc_plots_draw_offline_with_the_inlined_vega_template(tmp_path):
    from pipelines import offline_plots

    work = tmp_path / "work"
    (work / "plots").mkdir(parents=True)
    (work / "plots/losses.csv").write_text(LOSSES)
    (work / "dvc.yaml").write_text(
        "plots:\n  - losses:\n      x: step\n      y:\n        plots/losses.csv: [loss_d, loss_g]\n"
    )
    run(["dvc", "init", "--no-scm", "-q"], work)
    run(["dvc", "plots", "show", "-o", "cdn"], work)  # DVC's own page: Vega from a CDN, blank offline
    assert chart_pixels(work / "cdn/index.html", tmp_path / "cdn.png") == 0
    template = work / ".vega" / "offline.html"  # inside the workspace, as the project's is
    if offline_plots.TEMPLATE.is_file():
        template.parent.mkdir()
        shutil.copy(offline_plots.TEMPLATE, template)
    offline_plots.install(work, template=template)  # what make setup does (it fetches Vega once, pinned)
    assert "html_template = ../.vega/offline.html" in (work / ".dvc/config.local").read_text()
    # Relative to .dvc/: the checkout moved elsewhere still draws (an absolute path failed: "HTML template has to
    # contain '{plot_divs}'").
    moved = work.rename(tmp_path / "moved")
    run(["dvc", "plots", "show", "-o", "offline"], moved)
    assert chart_pixels(moved / "offline/index.html", tmp_path / "offline.png") > 500  # the two loss lines drawn


def test_offline_plots_outside_a_dvc_workspace_is_a_warning_not_a_traceback(tmp_path, caplog):
    from pipelines import offline_plots

    offline_plots.main(["--workspace", str(tmp_path)])  # make setup goes on: the pages then load Vega from the network
    assert f"offline plots not set up: --workspace {tmp_path} is not a DVC workspace (no .dvc folder)" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_offline_plots_from_tarballs_that_are_not_there_is_an_error(tmp_path, capsys, monkeypatch):
    """`--from DIR` names the tarballs to use: a folder that is not there, or without them, exited 0 with a warning."""
    from pipelines import offline_plots

    (tmp_path / ".dvc").mkdir()
    with pytest.raises(SystemExit) as exit_:
        offline_plots.main(["--workspace", str(tmp_path), "--from", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and f"--from {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    (tmp_path / "tarballs").mkdir()
    monkeypatch.setattr(offline_plots, "TEMPLATE", tmp_path / "offline.html")  # not made yet: the tarballs are read
    with pytest.raises(SystemExit, match=r"^error: --from .*tarballs: no vega-5\.20\.2\.tgz there$"):
        offline_plots.main(["--workspace", str(tmp_path), "--from", str(tmp_path / "tarballs")])
    assert not (tmp_path / "offline.html").exists()


def test_a_heavy_command_picks_its_threads_before_torch_and_checks_out_first(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "face.png")
    (tmp_path / "A.png").mkdir()
    report = REPORT.replace("MODULE", "torch")
    proc = subprocess.run([sys.executable, "-c", report, "stylize", "--content", "face.png", "--style", "face.png",
                           "--out", "A.png"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0] == "exit 1 torch not imported", proc.stdout + proc.stderr
    assert "--out A.png is a folder" in proc.stderr
    assert lines[1] == f"threads {idle_cores()}"  # torch, once imported, would start with the idle cores


def test_the_demo_replaces_only_its_own_workspaces_even_at_the_default_demo_folder(tmp_path, monkeypatch):
    """./demo was replaced whatever it held: a folder of the user's notes there (git-ignored) went silently."""
    from pipelines import demo

    monkeypatch.setattr(demo, "ROOT", tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"it is not a demo workspace \(no \.anime-avatar-demo in it"):
        demo.prepare(tmp_path / "demo")
    assert (tmp_path / "demo" / "notes.txt").read_text() == "mine"
    (tmp_path / "demo" / demo.MARKER).write_text("")
    assert demo.replaceable(tmp_path / "demo") is None
    assert demo.replaceable(tmp_path / "new") is None and demo.replaceable(tmp_path) == "it holds the project itself"


def test_make_setup_in_a_copy_without_git_lets_dvc_run_without_it(tmp_path):
    """A source archive has the committed .dvc/config but no .git: DVC refused every command ("not a git
    repository") until the config said no_scm, which the Makefile's `dvc init --no-scm` branch never did."""
    for name in ("Makefile", "pyproject.toml", "dvc.yaml", "params.yaml", ".dvc/config"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = venv_env() | {"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    refused = subprocess.run([str(BIN / "dvc"), "status"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "not a git repository" in refused.stderr
    made = subprocess.run(["make", "dvc-without-git"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "no_scm = true" in (tmp_path / ".dvc/config").read_text()
    assert subprocess.run([str(BIN / "dvc"), "status"], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    again = subprocess.run(["make", "dvc-without-git"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "not a git repository" not in again.stdout  # said once, written once
