"""``make demo``: the whole pipeline on small params, in its own workspace ``demo/``.

A copy of the project's code and ``dvc.yaml`` with ``params.yaml`` shrunk by :data:`DEMO` (fewer,
smaller synthetic illustrations, a short training, a small FID sample), in a git repository of its own
(one commit) so that ``dvc exp run``, ``exp show``, ``metrics diff`` and ``plots diff`` work there, run with
``dvc repro`` and committed again. Then the pictures a newcomer can judge: the demo generator's 16 avatars
beside the committed grid of a full ``make run`` (``avatars.png``, each labelled with its steps), and the
shipped photo -> anime translator on scikit-image's public-domain astronaut (``astronaut-anime.png``). The
project's own workspace is left alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from anime_avatar.core.params import load_params, merge
from pipelines import offline_plots

if TYPE_CHECKING:
    from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Changes to params.yaml: small enough for minutes on two CPU cores (7 measured under load: README), big enough to
# pass validation (100 illustrations give about 150 faces) and to show the first face-like blobs.
# The data are the offline ones whatever the project's params.yaml reads (its own folder, a URL, a dataset): the
# demo is small and needs nothing outside it, and a relative path would not resolve from demo/.
DEMO = {
    "data": {"source": "synthetic", "synthetic": {"count": 100}},
    "photos": {"source": "synthetic"},
    # The offline detector: a project's lbp cascade_path is relative to the project, not to demo/.
    "detect": {"detector": "animeface"},
    "validate": {"min_count": 50},
    "train": {"steps": 300, "sample_every": 100, "checkpoint_every": 100},
    "eval": {"n_samples": 100, "kid_subset_size": 50},
    # The stylizer: a short run at 64 px (its outputs are barely stylised; `make run` trains longer).
    "stylize": {"image_size": 64, "steps": 30, "style_path": "data/raw"},
    "gatys": {"steps": 30},
    "stylize_eval": {"image_size": 128, "content_path": "data/faces", "photos": [], "style_path": "data/raw"},
    # The translator on the synthetic photo set: checks the stage, makes no avatars worth keeping (the shipped
    # translator does that).
    "translate": {"steps": 60, "photos": "data/photos", "anime": "data/faces"},
    "translate_eval": {
        "n_images": 50,
        "kid_subset_size": 25,
        "photos": "data/photos",
        "anime": "data/faces",
        "reference": "data/faces",
    },
}
COPIED = ("anime_avatar", "stages", "dvc.yaml", ".gitignore")
FULL_RUN_GRID = ROOT / "plots" / "samples" / "step-0003000.png"  # committed by the default `dvc repro`
PICTURES = ("avatars.png", "avatars-grid.png", "astronaut.png", "astronaut-anime.png")  # made after the run
IDENTITY = ("-c", "user.name=anime-avatar demo", "-c", "user.email=demo@localhost")  # these commits only
MARKER = ".anime-avatar-demo"  # in every demo workspace: the one kind of folder the demo replaces


def replaceable(dest: Path) -> str | None:
    """Why ``dest`` must not be replaced by a fresh demo workspace (None: it may be)."""
    target = dest.resolve()
    if target == ROOT or target in ROOT.parents:
        return "it holds the project itself"
    if not dest.exists() or (dest / MARKER).is_file():
        return None  # absent, or an earlier demo workspace
    if not dest.is_dir():
        return "it is not a folder"
    if any(dest.iterdir()):
        # The default demo/ too: it is git-ignored, so a folder of the user's there would go unnoticed. (A demo/
        # made before workspaces were marked, on 2026-12-07, is refused once: remove it by hand.)
        return f"it is not a demo workspace (no {MARKER} in it; an old demo's folder: remove it yourself)"
    return None


def prepare(dest: Path) -> Path:
    """A fresh DVC workspace at ``dest``: the code, dvc.yaml and the demo params (validated). An earlier demo
    workspace there is replaced; any other folder with files in it is refused, never removed."""
    if reason := replaceable(dest):
        sys.exit(f"demo: --dir {dest}: {reason}; name a new or empty folder")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / MARKER).write_text("made by `make demo` (python -m pipelines.demo); the next demo here replaces this\n")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, dest / name)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), DEMO)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(dest / "params.yaml")  # the demo's values pass the schema
    tool = Path(sys.executable).parent
    dvc = str(tool / "dvc")
    with open(dest / ".gitignore", "a") as ignore:  # the pictures made after the run are not part of it
        ignore.write("\n# make demo's pictures\n" + "".join(f"/{name}\n" for name in PICTURES))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=dest, check=True)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=dest, check=True)
    if offline_plots.TEMPLATE.is_file():  # dvc plots pages that draw offline, as in the project (make setup)
        offline_plots.install(dest)
    commit(dest, "demo workspace: the project's code, dvc.yaml and the demo params")
    return dest


def commit(work: Path, message: str) -> None:
    """Commit everything git does not ignore (DVC's outputs are ignored; dvc.lock, metrics and plots are not)."""
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", *IDENTITY, "commit", "-q", "--allow-empty", "-m", message], cwd=work, check=True)


def labelled_row(panels: list[tuple[Image.Image, str]], height: int = 256) -> Image.Image:
    """The panels side by side at ``height`` px (nearest-neighbour: small samples stay sharp), each with its label
    above it."""
    from PIL import Image, ImageDraw

    scaled = [image.convert("RGB").resize((round(image.width * height / image.height), height), Image.NEAREST)
              for image, _ in panels]  # fmt: skip
    gap, top = 12, 22
    row = Image.new("RGB", (sum(im.width for im in scaled) + gap * (len(scaled) + 1), height + top + gap), "white")
    draw, x = ImageDraw.Draw(row), gap
    for image, (_, label) in zip(scaled, panels, strict=True):
        draw.text((x, 5), label, fill="black")
        row.paste(image, (x, top))
        x += image.width + gap
    return row


def pictures(work: Path, steps: int) -> list[Path]:
    """avatars.png (this demo's avatars beside the full run's committed grid) and astronaut.png with
    astronaut-anime.png (the shipped translator's avatar of her); returns the files written."""
    from PIL import Image
    from skimage import data

    from anime_avatar.artifacts.translator import SHIPPED_TRANSLATOR

    panels = [(Image.open(work / "avatars-grid.png"), f"this demo: {steps} steps")]
    if FULL_RUN_GRID.is_file():
        panels.append((Image.open(FULL_RUN_GRID), "make run: 3,000 steps (committed grid)"))
    labelled_row(panels).save(work / "avatars.png")
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    tool = Path(sys.executable).parent
    subprocess.run([str(tool / "anime-avatar"), "avatar", "--photo", "astronaut.png", "--out", "astronaut-anime.png",
                    "--model", str(SHIPPED_TRANSLATOR), "--largest"], cwd=work, check=True)  # fmt: skip
    return [work / "avatars.png", work / "astronaut-anime.png"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "demo", help="the demo workspace (default: demo/)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    work = prepare(args.dir)
    tool = Path(sys.executable).parent
    commands = [
        [str(tool / "dvc"), "repro"],
        [str(tool / "anime-avatar"), "generate", "--model", "models/generator.pt", "--n", "16", "--grid",
         "avatars-grid.png"],
    ]  # fmt: skip
    # dvc.yaml's `python -m stages.X` must be this environment's python.
    env = {**os.environ, "PATH": f"{tool}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in commands:
        if subprocess.run(cmd, cwd=work, env=env).returncode != 0:
            sys.exit(f"demo: `{Path(cmd[0]).name} {' '.join(cmd[1:])}` failed in {work}")
    commit(work, "demo run: dvc.lock, metrics and plots")
    pictures(work, DEMO["train"]["steps"])
    print(
        f"\ndemo done in {time.perf_counter() - started:.0f} s, in {work}:\n"
        f"  avatars.png                   16 avatars (seeds 0-15) of the demo generator beside a full run's grid\n"
        f"  astronaut-anime.png           the shipped translator's avatar of astronaut.png (public domain)\n"
        f"  reports/samples.png           64 samples; metrics/eval.json has their FID/KID\n"
        f"  plots/samples/                the fixed-seed grids every 100 steps\n"
        f"  reports/data_docs/index.html  the data validation report\n"
        f"  MLflow: cd {work} && anime-avatar ui\n"
        f"  DVC experiments: cd {work} && dvc exp run -S train.steps=600 && anime-avatar experiments"
    )


if __name__ == "__main__":
    main()
