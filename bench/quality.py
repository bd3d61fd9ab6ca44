"""Quality benchmark: FID versus training CPU-minutes on real faces (getchu-64 by default).

Trains with the pipeline's own loop (params.yaml, overridable with --set key=value) on
every face of the folder, stops every --eval-every CPU-minutes to compute FID/KID of
--n-fake EMA samples against all real faces, and writes a CSV and a FID-versus-minutes
plot. Evaluation time is not counted in the budget. The reference printed beside each
FID is the first evaluation of the same run (ratio < 1: improving).

    .venv/bin/python bench/quality.py --minutes 60 --eval-every 10
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anime_avatar.core.params import load_params  # noqa: E402
from anime_avatar.data.fetch import cache_dir  # noqa: E402
from anime_avatar.data.images import load_rgb  # noqa: E402
from anime_avatar.gan.inference import generate_images  # noqa: E402
from anime_avatar.gan.training import train  # noqa: E402
from anime_avatar.metrics.fid import compute_fid_kid, real_features  # noqa: E402
from anime_avatar.ops.data_versions import folder_digest  # noqa: E402


def set_key(tree: dict, dotted: str, value: str) -> None:
    """Set one dotted key of a nested mapping (``--set model.channels=32``), the value read as YAML."""
    *path, last = dotted.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[last] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared/data/faces/getchu-64")
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget in CPU-minutes of this process")
    parser.add_argument("--eval-every", type=float, default=10.0, help="CPU-minutes between evaluations")
    parser.add_argument("--n-fake", type=int, default=2000)
    parser.add_argument("--n-real", type=int, default=0, help="real faces for the statistics (0: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/quality")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key")
    parser.add_argument("--experiment", default="", help="also log to this MLflow experiment (FID at each step)")
    args = parser.parse_args()

    raw: dict = {}
    set_key(raw, "train.steps", "100000000")
    set_key(raw, "train.checkpoint_every", "100000000")
    for item in args.set:
        key, _, value = item.partition("=")
        set_key(raw, key, value)
    params = load_params(ROOT / "params.yaml", raw)
    files = sorted(p for p in args.faces.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    size = params.detect.image_size
    faces = np.stack([np.asarray(load_rgb(p).resize((size, size))) for p in files])
    print(f"{len(faces)} real faces from {args.faces}, {size}px; model {params.model}; train {params.train}")
    real_set = faces[np.random.default_rng(0).permutation(len(faces))[: args.n_real]] if args.n_real else faces
    key = f"{folder_digest(args.faces).replace(':', '-')}-{len(real_set)}"
    backend = params.eval.inception_backend  # auto: OpenVINO, ~2.4x TorchScript (README, Speed)
    reals = real_features(real_set, cache_dir() / "fid-stats", key, backend=backend)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "checkpoint.pt"
    checkpoint.unlink(missing_ok=True)
    rows: list[dict[str, float]] = []
    tracker = start_tracking(args.experiment, params, args) if args.experiment else None
    cpu_used = 0.0
    steps_per_chunk = 20
    while cpu_used < args.minutes * 60:
        target = min(args.minutes * 60, (len(rows) + 1) * args.eval_every * 60)
        while cpu_used < target:
            start = time.process_time()
            state = train(params.model, params.train, faces, checkpoint, args.faces.name, stop_after=steps_per_chunk)
            cpu_used += time.process_time() - start
        fakes = generate_images(state.ema.model, args.n_fake, state.config.z_dim, seed=0, batch=100)
        scores = compute_fid_kid(reals, fakes, kid_subset_size=1000, backend=backend)
        rows.append({"cpu_minutes": round(cpu_used / 60, 2), "step": state.step, "fid": scores.fid,
                     "kid_mean": scores.kid_mean})  # fmt: skip
        if tracker:
            tracker.log_metrics({"fid": scores.fid, "kid_mean": scores.kid_mean, "cpu_minutes": cpu_used / 60},
                                step=state.step)  # fmt: skip
        ratio = scores.fid / rows[0]["fid"]
        print(f"{cpu_used / 60:6.1f} CPU-min  step {state.step:6d}  FID {scores.fid:7.2f} "
              f"(x{ratio:.2f} of the first)  KID {scores.kid_mean:.4f}", flush=True)  # fmt: skip
        with open(args.out / "fid.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["cpu_minutes"] for r in rows], [r["fid"] for r in rows], marker="o")
    ax.set_xlabel("training CPU-minutes")
    ax.set_ylabel(f"FID ({args.n_fake} generated vs {len(real_set)} real)")
    ax.set_title(f"{params.model.arch}, {size}px, {args.faces.name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "fid_vs_minutes.png", dpi=120)
    print(f"wrote {args.out / 'fid.csv'} and {args.out / 'fid_vs_minutes.png'}")
    if tracker:
        tracker.log_artifact(str(args.out / "fid_vs_minutes.png"))
        tracker.end_run()


def start_tracking(experiment: str, params, args: argparse.Namespace):  # -> mlflow
    """An MLflow run tagged like the train stage's, so `anime-avatar runs --experiment` lists it."""
    from anime_avatar.ops.tracking import flatten, mlflow_client, params_dict, run_tags

    mlflow = mlflow_client()
    mlflow.set_experiment(experiment)
    mlflow.start_run(run_name=f"quality {params.model.arch} {args.faces.name}")
    mlflow.set_tags(run_tags(params, "train", {"data/train": folder_digest(args.faces)}) | {"bench": "quality"})
    mlflow.log_params(flatten(params_dict(params)) | {"train.steps": "budget", "bench.minutes": args.minutes})
    return mlflow


if __name__ == "__main__":
    main()
