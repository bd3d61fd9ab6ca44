"""Bad command lines of `anime-avatar`: each ends in one clear line and a non-zero exit (2 for usage errors),
and `generate` outside a project creates nothing. Every case runs the installed command in a real process."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import BIN, ROOT, free_port, venv_env

USAGE_ERROR = 2


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = venv_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own mlflow.db, or none
    return subprocess.run([str(BIN / "anime-avatar"), *args], cwd=cwd, env=env, capture_output=True, text=True)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command says (argparse also prints its usage above a usage error)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    if proc.returncode == USAGE_ERROR:
        assert lines[0].startswith("usage: anime-avatar"), proc.stderr
        lines = [line for line in lines if not line.startswith(" ") and not line.startswith("usage:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture
def generator_project(tmp_path) -> Path:
    """A folder with the project's params.yaml and a tiny trained-generator file, and no mlflow.db."""
    import torch

    from anime_avatar.artifacts.generator import save_generator
    from anime_avatar.core.architecture import NetConfig
    from anime_avatar.gan.nets import build_generator

    work = tmp_path / "project"
    (work / "models").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    config = NetConfig("dcgan", 32, z_dim=8, channels=4, attention=(), max_channels=16)
    torch.manual_seed(0)
    net = build_generator(config)
    save_generator(work / "models" / "generator.pt", config.to_dict(), net.state_dict(), net.state_dict(), step=1)
    return work


# --- generate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "reason"), [("0", "0 is less than 1"), ("-1", "-1 is less than 1"),
                                               ("two", "'two' is not a whole number")])  # fmt: skip
def test_generate_n_below_one_is_a_usage_error(tmp_path, value, reason):
    proc = cli(["generate", "--n", value], tmp_path)
    assert proc.returncode == USAGE_ERROR
    assert error_line(proc) == f"anime-avatar generate: error: argument --n: {reason}"
    assert files_in(tmp_path) == []


def test_generate_out_naming_a_file_is_a_usage_error_and_the_file_is_kept(tmp_path):
    (tmp_path / "taken.png").write_bytes(b"mine")
    proc = cli(["generate", "--out", "taken.png"], tmp_path)
    assert proc.returncode == USAGE_ERROR
    assert error_line(proc) == "anime-avatar generate: error: argument --out: taken.png is a file, not a folder"
    assert (tmp_path / "taken.png").read_bytes() == b"mine"

    (tmp_path / "avatars").write_bytes(b"also mine")  # the default --out
    proc = cli(["generate"], tmp_path)
    assert proc.returncode == USAGE_ERROR
    assert "avatars (the default --out) is a file, not a folder: pass --out FOLDER" in error_line(proc)


@pytest.mark.parametrize(("grid", "reason"), [
    ("folder", "folder is a folder: name the .png file to write"),
    ("grid.jpg", "grid.jpg: the picture is a PNG image; name a .png file"),
])  # fmt: skip
def test_generate_grid_naming_a_folder_or_not_png_is_a_usage_error(tmp_path, grid, reason):
    (tmp_path / "folder").mkdir()
    proc = cli(["generate", "--grid", grid], tmp_path)
    assert proc.returncode == USAGE_ERROR
    assert error_line(proc) == f"anime-avatar generate: error: argument --grid: {reason}"


@pytest.mark.parametrize(("args", "message"), [
    (["runs", "--plot", "runs.txt"], "anime-avatar runs: error: argument --plot: runs.txt: the picture is a PNG image; "
                                     "name a .png file"),
    (["audit", "--run", "r1", "--manifest", "folder"], "anime-avatar audit: error: argument --manifest: folder is a "
                                                       "folder: name the .csv file to write"),
])  # fmt: skip
def test_runs_plot_and_audit_manifest_that_cannot_be_written_are_usage_errors(tmp_path, args, message):
    (tmp_path / "folder").mkdir()
    proc = cli(args, tmp_path)
    assert proc.returncode == USAGE_ERROR and error_line(proc) == message


def test_audit_manifest_without_a_run_says_so_instead_of_ignoring_it(tmp_path):
    proc = cli(["audit", "--manifest", "m.csv"], tmp_path)
    assert proc.returncode == 1
    assert error_line(proc).endswith("--manifest needs --run RUN_ID: the manifest is the data behind one training run")


def test_generate_with_a_tracking_server_that_does_not_answer_uses_the_file_and_says_why(generator_project):

    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    proc = subprocess.run([str(BIN / "anime-avatar"), "generate", "--n", "1", "--out", "out"], cwd=generator_project,
                          env={**venv_env(), **env}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "WARNING anime_avatar.ops.registry: the champion could not be loaded (cannot load the generator " in (
        proc.stderr
    )  # not "no champion model registered": the store did not say so
    assert "Connection refused" in proc.stderr and "using models/generator.pt instead" in proc.stderr
    assert (generator_project / "out" / "avatar-000000.png").is_file()


def test_generate_outside_a_project_creates_nothing(tmp_path):
    for args in (["generate", "--n", "2"], ["generate", "--model", "models:/anime-avatar-generator@champion"]):
        proc = cli(args, tmp_path)
        assert proc.returncode == 1
        assert error_line(proc).endswith(
            "no params.yaml here: run inside the project (for its champion model), or pass --model FILE"
        )
        assert files_in(tmp_path) == [], "no mlflow.db, no avatars folder"


def test_generate_without_a_tracking_database_uses_the_file_and_creates_no_database(generator_project):
    proc = cli(["generate", "--n", "2", "--out", "out"], generator_project)
    assert proc.returncode == 0, proc.stderr
    assert (
        "no champion model registered (cannot load the generator models:/anime-avatar-generator@champion: no MLflow "
        "database at mlflow.db): using models/generator.pt" in proc.stderr
    )
    assert files_in(generator_project) == [
        "models", "models/generator.pt", "out", "out/avatar-000000.png", "out/avatar-000001.png", "params.yaml",
    ]  # fmt: skip
    assert Image.open(generator_project / "out" / "avatar-000001.png").size == (32, 32)

    proc = cli(["generate", "--model", "models:/anime-avatar-generator@champion"], generator_project)
    assert proc.returncode == 1
    assert error_line(proc).endswith(
        "cannot load the generator models:/anime-avatar-generator@champion: no MLflow database at mlflow.db"
    )
    assert not (generator_project / "mlflow.db").exists()


def test_generate_output_that_cannot_be_written_is_one_line(generator_project):
    (generator_project / "file").write_bytes(b"x")
    proc = cli(["generate", "--n", "1", "--model", "models/generator.pt", "--out", "file/sub"], generator_project)
    assert proc.returncode == 1
    assert error_line(proc).endswith("cannot write file/sub/avatar-000000.png: Not a directory")


def test_generate_writes_many_avatars_a_chunk_at_a_time_and_bounds_a_grid(generator_project, monkeypatch):
    """100,000 avatars were all held at once (3.2 GB, growing with --n); a grid of them has no sensible size."""
    proc = cli(["generate", "--n", "1025", "--model", "models/generator.pt", "--grid", "g.png"], generator_project)
    assert proc.returncode == USAGE_ERROR
    assert error_line(proc).endswith("--grid holds at most 1024 avatars (--n 1025): write them with --out FOLDER")
    proc = cli(["generate", "--interpolate", "1", "2", "--steps", "1025", "--grid", "w.png"], generator_project)
    assert error_line(proc).endswith("argument --steps: 1025 is more than 1024")
    from anime_avatar import cli as commands
    from anime_avatar.gan import inference

    made, real = [], inference.avatars
    monkeypatch.setattr(inference, "avatars", lambda g, seeds, t: made.append(len(seeds)) or real(g, seeds, t))
    monkeypatch.chdir(generator_project)
    commands.main(["generate", "--n", "600", "--seed", "5", "--model", "models/generator.pt", "--out", "many"])
    assert made == [256, 256, 88]
    names = sorted(p.name for p in (generator_project / "many").iterdir())
    assert len(names) == 600 and names[0] == "avatar-000005.png" and names[-1] == "avatar-000604.png"
    # With --style, the style image and the stylizer are loaded once, not once per chunk (a download each).
    loads = []
    monkeypatch.setattr(commands, "_style_method", lambda *a: loads.append(a) or (lambda content, style, size: content))
    monkeypatch.setattr("anime_avatar.style.transfer.stylize_image", lambda method, content, style, size: content)
    Image.new("RGB", (8, 8)).save(generator_project / "style.png")
    commands.main(["generate", "--n", "600", "--model", "models/generator.pt", "--out", "styled", "--style",
                   "style.png"])  # fmt: skip
    assert len(loads) == 1 and len(list((generator_project / "styled").iterdir())) == 600


def test_generated_files_honour_the_umask(generator_project):
    proc = subprocess.run(
        ["bash", "-c", f"umask 027 && exec {BIN / 'anime-avatar'} generate --n 1 --out out --grid g/grid.png"],
        cwd=generator_project, env=venv_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (generator_project / "out" / "avatar-000000.png").stat().st_mode & 0o777 == 0o640
    assert (generator_project / "g" / "grid.png").stat().st_mode & 0o777 == 0o640


# --- faces -------------------------------------------------------------------------------------------


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_faces_on_a_decompression_bomb_is_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    png_claiming(tmp_path / "bomb.png", 20000, 20000)
    proc = cli(["faces", "bomb.png", "--detector", "none"], tmp_path)
    assert proc.returncode == 1
    assert error_line(proc).endswith("bomb.png: unreadable: more than 89.5 megapixels: refused (too large to decode "
                                     "safely)")  # fmt: skip
    assert not (tmp_path / "faces").exists()


def test_faces_reads_the_good_images_and_fails_for_the_bad_one(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    Image.new("RGB", (40, 40), (200, 100, 50)).save(tmp_path / "face.png")
    (tmp_path / "notes.png").write_text("not an image")
    proc = cli(["faces", "face.png", "notes.png", "--detector", "none", "--out", "crops"], tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.count("face.png\t(0, 0, 40, 40)") == 1
    assert len(list((tmp_path / "crops").iterdir())) == 1
    assert proc.stderr.strip().splitlines()[-1].endswith("ERROR anime_avatar: notes.png: unreadable: not an image")


@pytest.mark.parametrize(("name", "reason"), [("folder", "folder is a folder: pass image files (e.g. folder/*.png)"),
                                              ("gone.png", "gone.png: no such file")])  # fmt: skip
def test_faces_on_a_folder_or_a_missing_file_is_a_usage_error(tmp_path, name, reason):
    (tmp_path / "folder").mkdir()
    proc = cli(["faces", name], tmp_path)
    assert proc.returncode == USAGE_ERROR
    assert error_line(proc) == f"anime-avatar faces: error: argument images: {reason}"


def test_faces_out_naming_a_file_is_a_usage_error(tmp_path):
    Image.new("RGB", (40, 40)).save(tmp_path / "face.png")
    (tmp_path / "crops").write_text("a file")
    proc = cli(["faces", "face.png", "--out", "crops"], tmp_path)
    assert proc.returncode == USAGE_ERROR
    assert error_line(proc) == "anime-avatar faces: error: argument --out: crops is a file, not a folder"


# --- output into a closed pipe ------------------------------------------------------------------------


def test_params_into_a_closed_pipe_is_one_line_and_the_sigpipe_status(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head`) has gone before the first byte is written
    try:
        proc = subprocess.run([str(BIN / "anime-avatar"), "params"], cwd=tmp_path, env=venv_env(),
                              stdout=write_end, stderr=subprocess.PIPE, text=True)  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 128 + signal.SIGPIPE
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.endswith("ERROR anime_avatar: output closed early (broken pipe)")


def test_params_piped_into_head_prints_its_first_lines(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    proc = subprocess.run(f"{BIN / 'anime-avatar'} params | head -n 2", shell=True, cwd=tmp_path, env=venv_env(),
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 2
    assert "Traceback" not in proc.stderr


# --- experiments -------------------------------------------------------------------------------------


def test_experiments_outside_a_project_says_so_in_one_line(tmp_path):
    proc = cli(["experiments"], tmp_path)
    assert proc.returncode == 1
    assert error_line(proc).endswith(f"{tmp_path} has no dvc.yaml: run this in the project (or demo/), where "
                                     "`dvc repro` ran")  # fmt: skip
    assert files_in(tmp_path) == []


def test_experiments_in_a_repository_without_a_commit_says_to_commit_first(tmp_path):
    """It printed nothing (an empty header with --md) and exit 0: DVC experiments need a commit."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    proc = cli(["experiments"], tmp_path)
    assert proc.returncode == 1
    assert error_line(proc).endswith("this git repository has no commit yet, and DVC experiments are kept against "
                                     "one: commit the project first (git add -A && git commit -m 'pipeline'), then "
                                     "`dvc exp run -S key=value`")  # fmt: skip
