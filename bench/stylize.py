"""Style-transfer benchmark: the stylize stages on the issue's fixed evaluation set, with DVC, in a workspace of
their own (the project's outputs are left alone).

Content for training: the first --train-faces faces of ../shared/data/faces/danbooru-256 (sorted: the first
characters), through the pipeline's own download (local) and detect (none) stages at --size px. Evaluation
contents: one face of each of two characters that training never saw, plus the face of scikit-image's
``astronaut`` photo (a test-only dependency: pip install -e '.[dev]'). Styles: two illustrations of
../shared/data/illustrations (saber.png, 612989.jpg) for the evaluation, the other 16 for training.

Everything else comes from params.yaml, overridable with --set key=value (as `dvc exp run -S` would). The
eval stage times Gatys and the nets in the same process, so the speed-up it reports is a same-machine ratio.

    .venv/bin/python bench/stylize.py --set stylize.steps=600 --set stylize.threads=1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from overrides import apply_sets, set_key  # bench/ is this script's directory

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIME_AVATAR_SHARED", ROOT.parent / "shared")) / "data"
DANBOORU = SHARED / "faces/danbooru-256"
ILLUSTRATIONS = SHARED / "illustrations"
EVAL_FACES = ("mumei", "shiori")  # characters after the first ten (sorted): never in the training faces
EVAL_STYLES = ("Anime2Sketch/saber.png", "CartoonSegmentation/612989.jpg")


def prepare_sets(work: Path) -> dict:
    """The evaluation folders and the held-out training styles; the params that point at them."""
    from PIL import Image
    from skimage import data

    contents, styles, train_styles = work / "eval/contents", work / "eval/styles", work / "train_styles"
    for folder in (contents, styles, train_styles):
        folder.mkdir(parents=True, exist_ok=True)
    for character in EVAL_FACES:
        first = sorted((DANBOORU / character).glob("*.jpg"))[0]
        shutil.copy(first, contents / f"{character}-{first.name}")
    photo = work / "eval/astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    for rel in EVAL_STYLES:
        shutil.copy(ILLUSTRATIONS / rel, styles / Path(rel).name)
    for path in sorted(ILLUSTRATIONS.rglob("*")):
        if path.is_file() and path.relative_to(ILLUSTRATIONS).as_posix() not in EVAL_STYLES:
            shutil.copy(path, train_styles / f"{path.parent.name}-{path.name}")
    return {
        "stylize": {"style_path": str(train_styles)},
        "stylize_eval": {"content_path": str(contents), "photos": [str(photo)], "style_path": str(styles),
                         "n_content": len(EVAL_FACES), "n_styles": len(EVAL_STYLES)},
    }  # fmt: skip


def make_workspace(work: Path, changes: dict) -> None:
    """A copy of the project's code, dvc.yaml and params.yaml (with ``changes``) in a fresh DVC workspace."""
    for name in ("anime_avatar", "stages"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in changes.items():
        params[section] = {**params.get(section, {}), **values}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=work, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/stylize")
    parser.add_argument("--train-faces", type=int, default=1000, help="danbooru-256 faces for training (10 characters)")
    parser.add_argument("--size", type=int, default=128, help="the training faces' side (detect.image_size)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key")
    args = parser.parse_args()
    if not DANBOORU.is_dir():
        sys.exit(f"{DANBOORU} is absent: this benchmark needs ../shared/data")

    # Only this benchmark's own earlier folder is replaced (--out bench/results wiped the other benchmarks' runs).
    ours = (args.out / "summary.json").is_file() or (args.out / "project").is_dir()
    if args.out.exists() and any(args.out.iterdir()) and not ours:
        parser.error(f"--out {args.out} holds files this benchmark did not write: name a new or empty folder")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    changes = prepare_sets(args.out)
    overrides: dict = {}
    for key, value in (("data.source", "local"), ("data.path", str(DANBOORU)), ("data.max_files", args.train_faces),
                       ("detect.detector", "none"), ("detect.image_size", args.size)):  # fmt: skip
        set_key(overrides, key, yaml.safe_dump(value))
    apply_sets(overrides, args.set)
    for section, values in overrides.items():
        changes[section] = {**changes.get(section, {}), **values}
    work = args.out / "project"
    work.mkdir()
    make_workspace(work, changes)
    load = os.getloadavg()
    started = time.perf_counter()
    bin_dir = str(Path(sys.executable).parent)  # the stages run `python`: this environment's
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}  # fmt: skip
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "stylize_eval"], cwd=work, env=env, check=True)
    minutes = (time.perf_counter() - started) / 60
    metrics = json.loads((work / "reports/stylize.json").read_text())
    train = json.loads((work / "metrics/stylize_train.json").read_text())
    shutil.copy(work / "reports/stylize.png", args.out / "comparison.png")
    summary = {"minutes": round(minutes, 1), "load_before": load, "load_after": os.getloadavg(),
               "stylize_train": train, "stylize": metrics, "overrides": changes}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
