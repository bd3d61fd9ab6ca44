"""Train the translator where the tracking stack is not installed (a borrowed GPU), within a wall-clock budget.

It makes the translate_train stage's library calls (load_domain, TranslateBatches, train_translator,
save_translator) without MLflow, so the file it writes is the stage's model file (with an empty run id):

    python bench/train_translator.py --photos trainA --anime trainB --minutes 7 --out OUT \\
        --set translate.image_size=128 --set translate.channels=32 --set translate.batch_size=8

It first trains --probe-steps steps (the first of them warm the device up and are not timed), sets
translate.steps to what fits in the rest of --minutes, rounded down to a hundred, and trains on from the
checkpoint, which does not depend on translate.steps: batches are a pure function of (seed, step) and resume
is exact, so the file equals a stage run with those steps from the start on the same device. It writes
OUT/translator.pt, OUT/translate_losses.csv, OUT/samples.png (the last photo | anime | cycle | attention
sheet) and OUT/train.json (steps, seconds, seconds per step, device, torch version, the data's digests).
Its only needs beyond torch are pydantic, numpy, Pillow, PyYAML, tqdm and ImageHash (the image reader's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budgets import cpu_model  # noqa: E402  (bench/ is this script's directory)
from overrides import apply_sets  # noqa: E402

from anime_avatar.artifacts.reports import TRANSLATE_LOSS_FIELDS  # noqa: E402
from anime_avatar.core.fsutil import atomic_write_bytes, atomic_write_json, write_csv  # noqa: E402
from anime_avatar.core.params import TranslateParams, load_params  # noqa: E402
from anime_avatar.nn.images import grid_png  # noqa: E402
from anime_avatar.ops.data_versions import path_version  # noqa: E402
from anime_avatar.translate.data import load_domain  # noqa: E402
from anime_avatar.translate.model_file import save_translator  # noqa: E402
from anime_avatar.translate.training import TranslateBatches, train_translator  # noqa: E402

WARM_UP_STEPS = 20  # not timed: cuDNN's algorithm search and the allocator's first growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="domain A: folder or archive of photos")
    parser.add_argument("--anime", required=True, help="domain B: folder or archive of anime faces")
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget for training")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--probe-steps", type=int, default=200, help="steps timed to size the run (default 200)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key")
    args = parser.parse_args()
    if args.minutes <= 0 or args.probe_steps <= WARM_UP_STEPS:
        parser.error(f"--minutes must be positive and --probe-steps more than {WARM_UP_STEPS}")
    started = time.perf_counter()
    raw = apply_sets({}, [f"translate.photos={args.photos}", f"translate.anime={args.anime}", *args.set])
    probing = load_params(ROOT / "params.yaml", apply_sets(raw, ["translate.steps=10000000"])).translate
    batches = TranslateBatches(load_domain(probing.photos, "translate.photos", probing.image_size, 0),
                               load_domain(probing.anime, "translate.anime", probing.image_size, 0))  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(batches.a)} photos, {len(batches.b)} anime faces at {batches.size} px "
          f"({time.perf_counter() - started:.0f} s to load)", flush=True)  # fmt: skip
    # A checkpoint of its own, removed at the end: two runs can share a machine (and a GPU).
    with tempfile.TemporaryDirectory(prefix="train_translator_") as work:
        train_within_budget(args, probing, batches, Path(work) / "checkpoint.pt", started)


def train_within_budget(
    args: argparse.Namespace, probing: TranslateParams, batches: TranslateBatches, checkpoint: Path, started: float
) -> None:
    """Time --probe-steps steps, train to what fits in the rest of --minutes, write the run's files."""
    versions = {path: path_version(Path(path)) for path in (probing.photos, probing.anime)}
    version = ";".join(f"{k}={v}" for k, v in versions.items())
    train_translator(probing, batches, checkpoint, version, stop_after=WARM_UP_STEPS)
    timed = time.perf_counter()
    state = train_translator(probing, batches, checkpoint, version, stop_after=args.probe_steps - WARM_UP_STEPS)
    per_step = (time.perf_counter() - timed) / (args.probe_steps - WARM_UP_STEPS)
    left = args.minutes * 60 - (time.perf_counter() - started)
    steps = max(state.step, (state.step + int(left / per_step)) // 100 * 100)
    print(f"{per_step * 1000:.1f} ms per step: training to step {steps}", flush=True)

    cfg = probing.model_copy(update={"steps": steps})

    def on_sample(step: int, sheet: torch.Tensor) -> None:
        atomic_write_bytes(args.out / "samples.png", grid_png(sheet[None], nrow=1))

    train_start = time.perf_counter()
    first_step = state.step
    state = train_translator(cfg, batches, checkpoint, version, on_sample=on_sample)
    run_seconds = time.perf_counter() - train_start
    seconds = run_seconds + per_step * args.probe_steps
    facts = {"params": cfg.model_dump(mode="json"), "domains": versions}
    generators = state.output("g_ab"), state.output("g_ba")
    save_translator(args.out / "translator.pt", *generators, state.step, "", version, facts)
    write_csv(args.out / "translate_losses.csv",
              [{k: h.get(k) for k in TRANSLATE_LOSS_FIELDS} for h in state.history], TRANSLATE_LOSS_FIELDS)  # fmt: skip
    device = next(state.nets.parameters()).device
    atomic_write_json(args.out / "train.json", {
        # ms_per_step: the probe's pace, which sized the run; ms_per_step_run: the run's own (it was quoted as the
        # run's: 154 ms where the shipped run took 123)
        "steps": state.step, "train_seconds": round(seconds, 1), "ms_per_step": round(per_step * 1000, 2),
        "ms_per_step_run": round(run_seconds / max(state.step - first_step, 1) * 1000, 2),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch": torch.__version__, "domains": versions, "params": facts["params"]})  # fmt: skip
    print(f"step {state.step} in {seconds / 60:.1f} min: {args.out / 'translator.pt'}", flush=True)


if __name__ == "__main__":
    main()
