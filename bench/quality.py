"""Quality benchmark: FID versus training CPU-minutes on real faces (getchu-64 by default).

Trains one model on every face of the folder and stops at each of --budgets CPU-minutes (CPU time of this
process spent training: evaluation is not counted) to compute FID/KID of --n-fake samples against all real
faces. ``--model project`` is the pipeline's own loop (params.yaml, overridable with --set key=value) sampled
from its EMA generator; ``--model plain-dcgan`` is the reference of bench/plain_dcgan.py (PyTorch's DCGAN
tutorial: 32 channels, BCE, Adam 2e-4/0.5, batch 64). ``--with-reference`` runs the reference at the same
time in a second process, so both get the same machine: with --threads 1 (the default) each has a core of
its own on a 2-core machine. Each model writes ``<out>/<label>.csv``; after every evaluation the plot
``<out>/fid_vs_cpu_minutes.png`` is redrawn with every curve in the folder.

    .venv/bin/python bench/quality.py --with-reference --budgets 5,20,60 --set detect.image_size=64
"""

from __future__ import annotations

import argparse
import io
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budgets import budgets_arg, cpu_model, read_rows, refuse_to_overwrite, run_label, write_rows  # noqa: E402  (bench/ is this script's directory)
from overrides import apply_sets  # noqa: E402
from plain_dcgan import PlainDCGAN  # noqa: E402

from anime_avatar.core.fsutil import atomic_write_bytes  # noqa: E402
from anime_avatar.core.params import load_params  # noqa: E402
from anime_avatar.data.fetch import cache_dir  # noqa: E402
from anime_avatar.data.images import load_rgb  # noqa: E402
from anime_avatar.gan.inference import generate_images  # noqa: E402
from anime_avatar.gan.training import train  # noqa: E402
from anime_avatar.metrics.feature_cache import real_features  # noqa: E402
from anime_avatar.metrics.fid import compute_fid_kid  # noqa: E402
from anime_avatar.ops.data_versions import data_version  # noqa: E402

COLUMNS = ["label", "cpu_minutes", "step", "images_seen", "fid", "kid_mean"]


class Contender:
    """One model under test: ``advance(n)`` trains n steps, ``sample_generator()`` is what FID samples from."""

    def __init__(self, advance: Callable[[int], None], sample_generator: Callable[[], torch.nn.Module],
                 step: Callable[[], int], batch_size: int, z_dim: int) -> None:  # fmt: skip
        self.advance, self.sample_generator, self.step = advance, sample_generator, step
        self.batch_size, self.z_dim = batch_size, z_dim


def project_contender(params, faces: np.ndarray, checkpoint: Path, data_version: str) -> Contender:
    """The pipeline's training loop, run in chunks that resume from ``checkpoint`` (its save/load is counted)."""
    checkpoint.unlink(missing_ok=True)
    state = None

    def advance(steps: int) -> None:
        nonlocal state
        state = train(params.model, params.train, faces, checkpoint, data_version, stop_after=steps)

    return Contender(advance, lambda: state.ema.model, lambda: state.step if state else 0,
                     params.train.batch_size, params.model.z_dim)  # fmt: skip


def reference_contender(faces: np.ndarray, seed: int) -> Contender:
    gan = PlainDCGAN(faces, seed=seed)
    return Contender(gan.train, lambda: gan.generator.train(), lambda: gan.step, gan.batch_size, gan.z_dim)


def draw_plot(out: Path, n_fake: int, n_real: int, faces_name: str) -> None:
    """Every ``<out>/*.csv`` as one curve of FID against CPU-minutes, written atomically (runs share the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for path in sorted(out.glob("*.csv")):
        rows = read_rows(path)
        if rows:
            ax.plot([r["cpu_minutes"] for r in rows], [r["fid"] for r in rows], marker="o", label=path.stem)
    ax.set_xlabel("training CPU-minutes")
    ax.set_ylabel(f"FID ({n_fake} generated vs {n_real} real)")
    ax.set_title(f"FID per CPU-minute, {faces_name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out / "fid_vs_cpu_minutes.png", buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared/data/faces/getchu-64")
    parser.add_argument("--model", choices=["project", "plain-dcgan"], default="project")
    parser.add_argument("--label", default="",
                        help="curve and CSV name (default: the model's); -seedN added unless --seed is 0")  # fmt: skip
    parser.add_argument("--budgets", type=budgets_arg, default=[5.0, 20.0, 60.0],
                        help="CPU-minutes of training at which FID is measured (default 5,20,60)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of the project, the seed of the reference")
    parser.add_argument("--n-fake", type=int, default=2000)
    parser.add_argument("--n-real", type=int, default=0, help="real faces for the statistics (0: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/quality")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key")
    parser.add_argument("--with-reference", action="store_true",
                        help="also train the plain DCGAN, at the same time in a second process")  # fmt: skip
    parser.add_argument("--experiment", default="", help="also log the project's FIDs to this MLflow experiment")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over a label that already has a CSV in --out, replacing it")  # fmt: skip
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        label = run_label(args.label, args.model, args.seed)
    except ValueError as err:
        parser.error(f"--label: {err}")
    reference_label = run_label("", "plain-dcgan", args.seed)
    if not args.overwrite:
        written = [label, reference_label] if args.with_reference else [label]
        refuse_to_overwrite([args.out / f"{name}.csv" for name in written], "--overwrite starts it over, another "
                            "--label keeps both")  # fmt: skip

    raw = apply_sets({}, ["train.steps=100000000", "train.checkpoint_every=100000000", f"train.threads={args.threads}",
                          f"train.seed={args.seed}", "train.device=cpu", *args.set])  # fmt: skip
    params = load_params(ROOT / "params.yaml", raw)
    if params.train.device != "cpu":  # the plain DCGAN trains on the CPU, against a CPU-time budget
        parser.error("equal CPU time: the project trains on the CPU as the reference does (no train.device)")
    torch.set_num_threads(args.threads)
    files = sorted(p for p in args.faces.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    size = params.detect.image_size
    faces = np.stack([np.asarray(load_rgb(p).resize((size, size))) for p in files])
    print(
        f"{label}: {len(faces)} real faces from {args.faces}, {size}px, {args.threads} thread(s) of {cpu_model()}",
        flush=True,
    )
    real_set = faces[np.random.default_rng(0).permutation(len(faces))[: args.n_real]] if args.n_real else faces
    # The faces are resized to detect.image_size first: features of another size are other features.
    key = f"{data_version(args.faces).replace(':', '-')}-{size}px-{len(real_set)}"
    backend = params.eval.inception_backend  # auto: OpenVINO, ~2.4x TorchScript (README, Speed)
    reals = real_features(real_set, cache_dir() / "fid-stats", key, backend=backend)

    args.out.mkdir(parents=True, exist_ok=True)
    reference = None
    if args.with_reference:  # started after the real features are cached, so it reads them instead of recomputing
        # --overwrite: its CSV was checked above, with this run's.
        same = ["--faces", str(args.faces), "--out", str(args.out), "--budgets", ",".join(map(str, args.budgets)),
                "--threads", str(args.threads), "--seed", str(args.seed), "--n-fake", str(args.n_fake),
                "--n-real", str(args.n_real), "--overwrite"]  # fmt: skip
        reference = subprocess.Popen([sys.executable, __file__, "--model", "plain-dcgan", *same,
                                      *[f"--set={s}" for s in args.set]])  # fmt: skip

    if args.model == "project":
        print(f"model {params.model}; train {params.train}", flush=True)
        contender = project_contender(params, faces, args.out / f"{label}-checkpoint.pt", args.faces.name)
    else:
        contender = reference_contender(faces, params.train.seed)
    tracker = start_tracking(args.experiment, params, args) if args.experiment and args.model == "project" else None

    rows: list[dict] = []
    cpu_used, seconds_per_step = 0.0, None
    for budget in args.budgets:
        while cpu_used < budget * 60:
            # Chunks sized to land on the budget: a few steps to measure the pace, then what is left (at most 50).
            left = budget * 60 - cpu_used
            steps = 5 if seconds_per_step is None else max(1, min(50, math.ceil(left / seconds_per_step)))
            start = time.process_time()
            contender.advance(steps)
            spent = time.process_time() - start
            cpu_used += spent
            seconds_per_step = spent / steps
        if rows and rows[-1]["step"] == contender.step():
            continue  # the last chunk already passed this budget too
        fakes = generate_images(contender.sample_generator(), args.n_fake, contender.z_dim, seed=0, batch=100)
        scores = compute_fid_kid(reals, fakes, kid_subset_size=1000, backend=backend)
        step = contender.step()
        rows.append({"label": label, "cpu_minutes": round(cpu_used / 60, 2), "step": step, "fid": scores.fid,
                     "images_seen": step * contender.batch_size, "kid_mean": scores.kid_mean})  # fmt: skip
        print(f"{label}: {cpu_used / 60:6.1f} CPU-min  step {step:6d}  FID {scores.fid:7.2f}  "
              f"KID {scores.kid_mean:.4f}", flush=True)  # fmt: skip
        if tracker:
            tracker.log_metrics({"fid": scores.fid, "kid_mean": scores.kid_mean, "cpu_minutes": cpu_used / 60},
                                step=step)  # fmt: skip
        write_rows(args.out / f"{label}.csv", rows, COLUMNS)
        draw_plot(args.out, args.n_fake, len(real_set), args.faces.name)

    if reference is not None and reference.wait() != 0:
        sys.exit(f"the plain DCGAN run failed (exit status {reference.returncode})")
    draw_plot(args.out, args.n_fake, len(real_set), args.faces.name)
    if reference is not None:
        print_comparison(rows, read_rows(args.out / f"{reference_label}.csv"), label, reference_label)
    print(f"wrote {args.out / (label + '.csv')} and {args.out / 'fid_vs_cpu_minutes.png'}")
    if tracker:
        tracker.log_artifact(str(args.out / "fid_vs_cpu_minutes.png"))
        tracker.end_run()


def print_comparison(project: list[dict], reference: list[dict], label: str, reference_label: str) -> None:
    a, b = len(label) + 4, len(reference_label) + 4
    print(f"\n{'CPU-min':>8} | {label + ' FID':>{a}} | {reference_label + ' FID':>{b}} | ahead")
    for mine, theirs in zip(project, reference, strict=False):
        ahead = "yes" if mine["fid"] < theirs["fid"] else "NO"
        print(f"{mine['cpu_minutes']:8.1f} | {mine['fid']:{a}.2f} | {theirs['fid']:{b}.2f} | {ahead}")


def start_tracking(experiment: str, params, args: argparse.Namespace):  # -> mlflow
    """An MLflow run tagged like the train stage's, so `anime-avatar runs --experiment` lists it."""
    from anime_avatar.ops.tracking import flatten, gan_tags, mlflow_client, params_dict, stage_tags

    mlflow = mlflow_client()
    mlflow.set_experiment(experiment)
    mlflow.start_run(run_name=f"quality {params.model.arch} {args.faces.name}")
    mlflow.set_tags(
        stage_tags("train", {"data/train": data_version(args.faces)}) | gan_tags(params) | {"bench": "quality"}
    )
    mlflow.log_params(flatten(params_dict(params)) | {"train.steps": "budget", "bench.budgets": str(args.budgets)})
    return mlflow


if __name__ == "__main__":
    main()
