"""Precision benchmark: what bf16 autocast (``train.amp``) costs or gains in quality, against float32.

Trains the pipeline's default configuration (params.yaml, overridable with --set key=value) on data/train in
both precisions for each seed, and scores the EMA generator at each of --eval-at steps exactly as the evaluate
stage does (eval.n_samples samples against data/faces). Each row also gives the training CPU time spent to
that step, so the runs can be compared at equal steps and at equal CPU time (float32 steps cost more: pass
the step float32 reaches in bf16's time to --eval-at). Runs go --jobs at a time, one process each, with
--threads torch threads (1 and 2 on a 2-core machine: one core per run). Needs a CPU with bf16 instructions
(or a GPU): elsewhere ``train.amp`` trains in float32 and there is nothing to compare.

    .venv/bin/python bench/precision.py --seeds 0,1,2,3 --eval-at 1960

Writes ``<out>/precision.csv`` (one row per run and step, rewritten as each run finishes) and prints the FIDs
side by side.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budgets import write_rows  # noqa: E402  (bench/ is this script's directory)
from overrides import apply_sets  # noqa: E402

from anime_avatar.artifacts.faces import FACES_DIR, load_faces  # noqa: E402
from anime_avatar.artifacts.trainset import TRAIN_DIR, load_train_images  # noqa: E402
from anime_avatar.core.device import resolve_device  # noqa: E402
from anime_avatar.core.params import Params, load_params  # noqa: E402
from anime_avatar.gan.evaluation import score_generator  # noqa: E402
from anime_avatar.gan.training import train  # noqa: E402
from anime_avatar.metrics.feature_cache import eval_real_features  # noqa: E402
from anime_avatar.nn.precision import training_precision  # noqa: E402
from anime_avatar.ops.data_versions import data_version  # noqa: E402

COLUMNS = ["seed", "precision", "step", "train_cpu_s", "fid", "kid_mean"]
PRECISIONS = {"bfloat16": True, "float32": False}  # the train.amp value that trains in each


def in_row_order(rows: list[dict]) -> list[dict]:
    """Rows by seed, precision, step: how the CSV and the table list them."""
    return sorted(rows, key=lambda r: (r["seed"], r["precision"], r["step"]))


def earlier_rows(path: Path, seeds: set[int]) -> list[dict]:
    """The rows an earlier run wrote for other seeds: a run of more seeds adds to the table (it replaced it, and
    the reported CSV had to be merged by hand); a seed run again replaces its own rows."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if int(row["seed"]) not in seeds]
    return [{**row, "seed": int(row["seed"]), "step": int(row["step"])} for row in rows]


def int_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas (0,1,2), got {text!r}") from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def real_set(params: Params, device: torch.device) -> np.ndarray:
    """data/faces' Inception features, cached as the evaluate stage caches them (computed once, read by every run)."""
    reals, _ = load_faces(FACES_DIR)
    return eval_real_features(reals, data_version(FACES_DIR), params.eval, device)


def run_one(params: Params, seed: int, precision: str, eval_at: list[int], threads: int) -> list[dict]:
    """Train one seed in one precision, stopping at each of ``eval_at`` (and train.steps) to score the EMA."""
    torch.set_num_threads(threads)
    t = params.train.model_copy(update={"seed": seed, "amp": PRECISIONS[precision], "threads": threads})
    images = np.asarray(load_train_images(TRAIN_DIR, mmap=False))
    device = resolve_device(params.eval.device, key="eval.device")
    real = real_set(params, device)
    rows, cpu = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoint.pt"
        done = 0
        for stop in [s for s in eval_at if s < t.steps] + [t.steps]:
            start = time.process_time()
            # Each chunk resumes from the checkpoint the last one wrote; stop_after counts from there.
            state = train(params.model, t, images, checkpoint, "precision-bench", stop_after=stop - done)
            done = state.step
            cpu += time.process_time() - start
            scores, _ = score_generator(state.ema.model, params.model.z_dim, real, params.eval, device)
            rows.append({"seed": seed, "precision": precision, "step": state.step, "train_cpu_s": round(cpu, 1),
                         "fid": scores.fid, "kid_mean": scores.kid_mean})  # fmt: skip
            print(f"seed {seed} {precision:8s} step {state.step:6d}: FID {scores.fid:7.2f}  KID {scores.kid_mean:.4f}"
                  f"  ({cpu:.0f} s training CPU)", flush=True)  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'seed':>4} {'precision':9} {'step':>6} {'CPU s':>7} {'FID':>7} {'KID':>7}")
    for r in in_row_order(rows):
        print(f"{r['seed']:>4} {r['precision']:9} {r['step']:>6} {r['train_cpu_s']:>7.0f} {r['fid']:>7.2f} "
              f"{r['kid_mean']:>7.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="train.seed values (default 0,1,2)")
    parser.add_argument("--eval-at", type=int_list, default=[],
                        help="steps before train.steps at which to score too (e.g. 1960)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one process each (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key")
    args = parser.parse_args()
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    params = load_params(ROOT / "params.yaml", apply_sets({}, args.set))
    device = resolve_device(params.train.device, key="train.device")
    if training_precision(device, amp=True) != "bfloat16":
        sys.exit(f"train.amp trains in float32 on this {device.type} (no bf16 instructions): nothing to compare")
    real_set(params, resolve_device(params.eval.device, key="eval.device"))  # cached before the runs start

    runs = [(seed, precision) for seed in args.seeds for precision in PRECISIONS]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    earlier = earlier_rows(args.out / "precision.csv", set(args.seeds))
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_one, params, seed, precision, args.eval_at, args.threads) for seed, precision in runs
        ]
        for future in as_completed(futures):  # the CSV grows run by run: a later failure keeps the finished ones
            rows += future.result()
            write_rows(args.out / "precision.csv", in_row_order(earlier + rows), COLUMNS)
    print_table(rows)
    print(f"wrote {args.out / 'precision.csv'}")


if __name__ == "__main__":
    main()
