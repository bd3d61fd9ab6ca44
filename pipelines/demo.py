"""``make demo``: the whole pipeline in about two minutes, in its own workspace ``demo/``.

A copy of the project's code and ``dvc.yaml`` with ``params.yaml`` shrunk by :data:`DEMO` (fewer,
smaller synthetic illustrations, a short training, a small FID sample), run with ``dvc repro``;
then 16 avatars from the trained generator. The project's own workspace is left alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from anime_avatar.core.params import load_params, merge

ROOT = Path(__file__).resolve().parents[1]
# Changes to params.yaml: small enough for two minutes on two CPU cores, big enough to pass validation
# (100 illustrations give about 150 faces) and to show the first face-like blobs.
DEMO = {
    "data": {"synthetic": {"count": 100}},
    "validate": {"min_count": 50},
    "train": {"steps": 300, "sample_every": 100, "checkpoint_every": 100},
    "eval": {"n_samples": 100, "kid_subset_size": 50},
    # The stylizer: a short run at 64 px (its outputs are barely stylised; `make run` trains longer).
    "stylize": {"image_size": 64, "steps": 30},
    "gatys": {"steps": 30},
    "stylize_eval": {"image_size": 128},
    # The translator on the synthetic photo set: checks the stage, makes no avatars worth keeping (the shipped
    # translator does that).
    "translate": {"steps": 60},
    "translate_eval": {"n_images": 50, "kid_subset_size": 25},
}
COPIED = ("anime_avatar", "stages", "dvc.yaml")


def prepare(dest: Path) -> Path:
    """A fresh DVC workspace at ``dest``: the code, dvc.yaml and the demo params (validated)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
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
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=dest, check=True)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=dest, check=True)
    return dest


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
         "avatars.png"],
    ]  # fmt: skip
    # dvc.yaml's `python -m stages.X` must be this environment's python.
    env = {**os.environ, "PATH": f"{tool}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in commands:
        if subprocess.run(cmd, cwd=work, env=env).returncode != 0:
            sys.exit(f"demo: `{Path(cmd[0]).name} {' '.join(cmd[1:])}` failed in {work}")
    print(
        f"\ndemo done in {time.perf_counter() - started:.0f} s, in {work}:\n"
        f"  avatars.png                   16 avatars (seeds 0-15) from the trained generator\n"
        f"  reports/samples.png           64 samples; metrics/eval.json has their FID/KID\n"
        f"  plots/samples/                the fixed-seed grids every 100 steps\n"
        f"  reports/data_docs/index.html  the data validation report\n"
        f"  MLflow: cd {work} && anime-avatar ui"
    )


if __name__ == "__main__":
    main()
