"""Translation benchmark: KID and FID of photo -> anime translation versus training CPU-minutes on selfie2anime.

Trains one model on selfie2anime's trainA (3,400 selfies) and trainB (3,400 anime faces), both at
--image-size px, and stops at each of --budgets CPU-minutes (cumulative CPU time of this process spent
training: loading and evaluation are not counted) to evaluate it as the translate_eval stage does
(:func:`anime_avatar.translate.evaluation.evaluate_translator`): the 100 testA photos translated, scored at
128 px against the 100 testB anime faces (KID x100 with subsets of 50, FID), the anime face detector's rate on
the translations (AnimefaceDetector, min_score 0, faces of at least 24 px), the edge-SSIM structure score
against the photo, and seconds per avatar (one photo, median of 5). The untranslated photos and a 100-image
evenly spread sample of trainB are scored the same way once: the ceiling of doing nothing and the real-vs-real
floor (``<out>/references.json``, dashed lines on the plot). Inception features of those fixed sets are
computed once per process; each budget computes only the translations'.

Models, fed the same batches (random images of each domain, mirrored at random; a pure function of --seed
and the step):

* ``--model project``: the pipeline's translator and training step
  (:mod:`anime_avatar.translate.training`) with params.yaml's ``translate`` section, overridden by
  ``--set translate.key=value``; translate.photos/anime are set to trainA/trainB.
* ``--model plain-cyclegan``: the reference of bench/plain_cyclegan.py (the paper's ResNet generator, 70x70
  PatchGAN, least squares, cycle 10, identity 5, Adam 2e-4/0.5, pool of 50 fakes), at the light setting
  for 64 px used here by default: ngf 32 with 6 residual blocks (the paper's 128 px depth at half its
  width), critics of the paper's width (ndf 64), batch 1 as in the paper (--ngf, --n-blocks, --batch-size).

Each run writes ``<out>/<label>.csv`` (one row per budget: label, cpu_minutes, step, images_seen,
kid_x100, fid, face_rate, structure, seconds_per_avatar), ``<out>/<label>-<budget>min.png`` (the first 8
test photos over their translations, at the model's size) and redraws ``<out>/kid_vs_cpu_minutes.png`` with
every CSV of the folder as one curve. After each budget the run's progress (model, optimisers, the plain
CycleGAN's pools, CPU clock, rows) goes to ``<out>/checkpoints/<label>.pt``; the same command with
``--resume`` continues from there, exactly, so a 180 CPU-minute curve can be made in several sittings (a
run stopped between budgets loses the training since the last one); without ``--resume`` a label that has a
checkpoint or CSV in ``<out>`` is refused unless ``--overwrite``. Runs of one experiment under other seeds
(labels that differ only by the ``-seedN`` that --seed adds) are drawn as their mean, with the range between
them shaded, and summed up per budget after the table (mean KID x100, its range, mean face rate): one run per
curve cannot tell a lead from luck. ``--redraw`` trains nothing: it redraws ``<out>``'s plot and prints its
tables. One run per core, one thread each:

    OMP_NUM_THREADS=1 .venv/bin/python bench/translate.py --model project --label project-cam-mask-floor \\
        --budgets 5,15,30,60,90 --image-size 64 --set translate.channels=16 --set translate.batch_size=4 \\
        --set translate.attention=cam+mask
    # later, the same curve on to 180 CPU-minutes:
    OMP_NUM_THREADS=1 .venv/bin/python bench/translate.py --model project --label project-cam-mask-floor \\
        --budgets 120,150,180 --image-size 64 --set translate.channels=16 --set translate.batch_size=4 \\
        --set translate.attention=cam+mask --resume
    OMP_NUM_THREADS=1 .venv/bin/python bench/translate.py --model project --label project-no-attention \\
        --budgets 5,15 --image-size 64 --set translate.channels=16 --set translate.batch_size=4 \\
        --set translate.attention=none
    OMP_NUM_THREADS=1 .venv/bin/python bench/translate.py --model plain-cyclegan --label plain-cyclegan \\
        --budgets 5,15 --image-size 64
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from budgets import SEED_SUFFIX, budgets_arg, cpu_model, read_rows, refuse_to_overwrite, run_label, write_rows  # noqa: E402  (bench/ is this script's directory)
from overrides import apply_sets  # noqa: E402
from plain_cyclegan import PlainCycleGAN  # noqa: E402

from anime_avatar.artifacts.checkpoint import save_checkpoint  # noqa: E402
from anime_avatar.artifacts.torchfile import load_tensors  # noqa: E402
from anime_avatar.core.device import resolve_device  # noqa: E402
from anime_avatar.core.errors import UserError  # noqa: E402
from anime_avatar.core.fsutil import atomic_write_bytes, atomic_write_json  # noqa: E402
from anime_avatar.core.params import TranslateParams, load_params, semantic_values  # noqa: E402
from anime_avatar.nn.images import grid_png, resize_images  # noqa: E402
from anime_avatar.translate.data import load_domain  # noqa: E402
from anime_avatar.translate.evaluation import (  # noqa: E402
    FaceFinder,
    Scorer,
    Translator,
    evaluate_translator,
    net_translator,
)
from anime_avatar.translate.training import (  # noqa: E402
    TranslateBatches,
    build_state,
    restore_state,
    state_payload,
    train_step,
)

COLUMNS = ["label", "cpu_minutes", "step", "images_seen", "kid_x100", "fid", "face_rate", "structure",
           "seconds_per_avatar"]  # fmt: skip
EVAL_SIZE = 128  # the selfie2anime protocol
N_REFERENCE = 100  # trainB images in the real-vs-real floor
SHEET_PHOTOS = 8
PLOT = "kid_vs_cpu_minutes.png"
REFERENCES = "references.json"


# --------------------------------------------------------------------------- the models under test


@dataclass
class Contender:
    """One model under test: ``advance(n)`` trains n steps and returns their losses; ``translating()`` is a
    context in which the model is one or more :data:`Translator` s of photos at ``image_size`` px, by variant
    ("" for the model itself, "ema" for its weight average where it keeps one: :func:`variant_label`);
    ``snapshot()`` is everything training changed (tensors and plain values), which ``restore`` puts back
    exactly."""

    advance: Callable[[int], list[dict[str, float]]]
    translating: Callable[[], AbstractContextManager[dict[str, Translator]]]
    step: Callable[[], int]
    snapshot: Callable[[], dict[str, Any]]
    restore: Callable[[dict[str, Any]], None]
    batch_size: int
    image_size: int
    history: list[dict[str, float]] = field(default_factory=list)


def project_contender(cfg: TranslateParams, batches: TranslateBatches) -> Contender:
    """The pipeline's nets and training step, driven one step at a time. With translate.ema > 0 both the net
    as trained and its weight average are evaluated: one training run, so their difference is the average's
    alone (the average takes no part in training)."""
    state = build_state(cfg, resolve_device(cfg.device, key="translate.device"))

    def advance(steps: int) -> list[dict[str, float]]:
        return [train_step(state, cfg, batches) for _ in range(steps)]

    @contextlib.contextmanager
    def translating() -> Iterator[dict[str, Translator]]:
        state.nets.eval()
        try:
            yield {"": net_translator(state.nets.g_ab)} | (
                {"ema": net_translator(state.output("g_ab"))} if state.averages else {}
            )
        finally:
            state.nets.train()

    return Contender(advance, translating, lambda: state.step, lambda: state_payload(state),
                     lambda payload: restore_state(state, payload), cfg.batch_size, cfg.image_size)  # fmt: skip


def reference_contender(gan: PlainCycleGAN, batches: TranslateBatches, seed: int) -> Contender:
    """The plain CycleGAN on the same batches as the project (same seed, same step: same images)."""

    def advance(steps: int) -> list[dict[str, float]]:
        return [gan.step(*batches.batch(seed, gan.n_steps, gan.batch_size)) for _ in range(steps)]

    return Contender(advance, lambda: contextlib.nullcontext({"": gan.translate}), lambda: gan.n_steps, gan.state_dict,
                     gan.load_state_dict, gan.batch_size, gan.image_size)  # fmt: skip


@dataclass
class Clock:
    """Training CPU seconds spent so far, and the last measured pace (CPU seconds per step)."""

    cpu_used: float = 0.0
    seconds_per_step: float | None = None


def train_until(contender: Contender, budget_s: float, clock: Clock) -> None:
    """Train until ``clock`` has spent ``budget_s`` CPU seconds in training, in chunks sized to land on it: a
    few steps to measure the pace, then what is left (at most 50 steps between looks at the clock)."""
    while clock.cpu_used < budget_s:
        left = budget_s - clock.cpu_used
        steps = 5 if clock.seconds_per_step is None else max(1, min(50, math.ceil(left / clock.seconds_per_step)))
        start = time.process_time()
        losses = contender.advance(steps)
        spent = time.process_time() - start
        clock.cpu_used += spent
        clock.seconds_per_step = spent / steps
        contender.history.extend(losses)
        if not all(math.isfinite(v) for v in losses[-1].values()):
            raise SystemExit(f"training diverged at step {contender.step()}: {losses[-1]}")


# --------------------------------------------------------------------------- evaluation


def digest(images: np.ndarray) -> str:
    array = np.ascontiguousarray(images)
    return f"{array.dtype}{array.shape}" + hashlib.sha1(array.data).hexdigest()


class CachedFeatures:
    """Inception features by image content: each distinct image set goes through ``extract`` once per process,
    so the fixed real sets (test anime faces, the trainB sample, the untranslated photos) are computed at the
    first budget only. :meth:`scorer` is the evaluation's (real, fake) -> (KID, FID); the scores of a pair of
    sets already scored (the references, at every budget) are remembered too."""

    def __init__(self, extract: Callable[[np.ndarray], np.ndarray], kid_subset_size: int = 50) -> None:
        self.extract, self.kid_subset_size = extract, kid_subset_size
        self.cache: dict[str, np.ndarray] = {}
        self.scores: dict[tuple[str, str], tuple[float, float]] = {}

    def features(self, images: np.ndarray, key: str = "") -> np.ndarray:
        key = key or digest(images)
        if key not in self.cache:
            self.cache[key] = self.extract(images)
        return self.cache[key]

    def scorer(self, real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
        from anime_avatar.metrics.fid import compute_fid_kid

        pair = (digest(real), digest(fake))
        if pair not in self.scores:
            scores = compute_fid_kid(self.features(real, pair[0]), self.features(fake, pair[1]), progress=False,
                                     kid_subset_size=self.kid_subset_size, backend="auto")  # fmt: skip
            self.scores[pair] = (scores.kid_mean, scores.fid)
        return self.scores[pair]


def cached_faces(finds_face: FaceFinder) -> FaceFinder:
    """``finds_face`` remembered by image content: the fixed sets are searched at the first budget only."""
    seen: dict[str, bool] = {}

    def find(image: np.ndarray) -> bool:
        key = digest(image)
        if key not in seen:
            seen[key] = bool(finds_face(image))
        return seen[key]

    return find


def anime_face_finder() -> FaceFinder:
    """The detect stage's anime face detector, as translate_eval uses it."""
    from PIL import Image

    from anime_avatar.data.detection import AnimefaceDetector

    detector = AnimefaceDetector(min_score=0.0, min_face=24)
    return lambda image: bool(detector.detect(Image.fromarray(image)))


@dataclass(frozen=True)
class EvalSets:
    photos: np.ndarray  # testA, at least EVAL_SIZE px
    anime: np.ndarray  # testB at EVAL_SIZE
    reference: np.ndarray  # the trainB sample at EVAL_SIZE


def load_eval_sets(data: Path, model_size: int) -> EvalSets:
    return EvalSets(
        photos=load_domain(str(data / "testA"), "testA", max(model_size, EVAL_SIZE), 0),
        anime=load_domain(str(data / "testB"), "testB", EVAL_SIZE, 0),
        reference=load_domain(str(data / "trainB"), "trainB", EVAL_SIZE, N_REFERENCE),
    )


@dataclass(frozen=True)
class Progress:
    """Where a run keeps its progress (``<out>/checkpoints/<label>.pt``, rewritten after each budget's
    evaluation) and what a run must match to continue from it: the model, its settings, the data, threads and
    the CPU's model (its CPU-minutes are another CPU's work elsewhere)."""

    path: Path
    fingerprint: dict[str, Any]

    def save(self, contender: Contender, clock: Clock, rows: list[dict]) -> None:
        save_checkpoint(self.path, {"fingerprint": self.fingerprint, "cpu_used": clock.cpu_used,
                                    "seconds_per_step": clock.seconds_per_step, "rows": rows,
                                    "history": contender.history, "model": contender.snapshot()})  # fmt: skip

    def restore(self, contender: Contender) -> tuple[Clock, list[dict]]:
        """Put ``contender`` back where the saved run stopped; its clock and rows. Exits with the reason when
        there is nothing to resume or the saved run is another experiment."""
        if not self.path.is_file():
            raise SystemExit(f"--resume: no checkpoint at {self.path}: a run of this label and --out writes it at "
                             "its first budget")  # fmt: skip
        try:
            payload = load_tensors(self.path, "benchmark checkpoint")
        except UserError as err:
            raise SystemExit(f"--resume: {err}") from None
        saved = payload.get("fingerprint", {})
        unrecorded = sorted(k for k in self.fingerprint if k not in saved)
        if unrecorded:  # an older file: a match cannot be checked, so it is not assumed
            raise SystemExit(f"--resume: {self.path} was saved before runs recorded their {', '.join(unrecorded)}, "
                             "so it cannot be told whether this run matches it; "
                             "run without --resume to start over")  # fmt: skip
        if saved != self.fingerprint:
            differ = sorted(k for k in {*saved, *self.fingerprint} if saved.get(k) != self.fingerprint.get(k))
            raise SystemExit(f"--resume: {self.path} was made by another run (it differs in {', '.join(differ)}); "
                             "run without --resume to start over")  # fmt: skip
        contender.restore(payload["model"])
        contender.history[:] = payload["history"]
        return Clock(payload["cpu_used"], payload["seconds_per_step"]), list(payload["rows"])


def measure(
    label: str,
    contender: Contender,
    budgets: list[float],
    sets: EvalSets,
    out: Path,
    scorer: Scorer,
    finds_face: FaceFinder,
    eval_size: int = EVAL_SIZE,
    timing_repeats: int = 5,
    progress: Progress | None = None,
    resume: bool = False,
) -> list[dict]:
    """Train ``contender`` to each of ``budgets`` (CPU-minutes, ascending) and evaluate each of its variants
    there; after each evaluation write a CSV per variant (:func:`variant_label`), the sample sheets, the
    references, the plot and ``progress``. With ``resume`` the run continues from ``progress`` (budgets it had
    passed keep their rows). Returns the rows, of every variant."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    clock = Clock()
    if resume:
        if progress is None:
            raise ValueError("resume needs a progress file")
        clock, rows = progress.restore(contender)
        print(f"{label}: resumed at {clock.cpu_used / 60:.1f} CPU-min, step {contender.step()}", flush=True)
    photos = resize_images(sets.photos[:SHEET_PHOTOS], contender.image_size)  # the sheets' top row, every time
    for budget in budgets:
        train_until(contender, budget * 60, clock)
        step = contender.step()
        if rows and rows[-1]["step"] == step:
            continue  # the last chunk already passed this budget too
        with contender.translating() as translators:
            for variant, translator in translators.items():
                start = time.perf_counter()
                metrics, outputs = evaluate_translator(
                    translator, contender.image_size, sets.photos, sets.anime, sets.reference, eval_size, scorer,
                    finds_face, timing_repeats,
                )  # fmt: skip
                name = variant_label(label, variant)
                scores = metrics["translated"]
                rows.append({"label": name, "cpu_minutes": round(clock.cpu_used / 60, 2), "step": step,
                             "images_seen": step * contender.batch_size, "kid_x100": scores["kid_x100"],
                             "fid": scores["fid"], "face_rate": scores["face_rate"], "structure": scores["structure"],
                             "seconds_per_avatar": metrics["seconds_per_avatar"]})  # fmt: skip
                print(f"{name}: {clock.cpu_used / 60:6.1f} CPU-min  step {step:6d}  KIDx100 "
                      f"{scores['kid_x100']:6.2f}  FID {scores['fid']:6.1f}  faces {scores['face_rate']:.2f}  "
                      f"structure {scores['structure']:.3f}  ({time.perf_counter() - start:.0f} s to evaluate)",
                      flush=True)  # fmt: skip
                write_rows(out / f"{name}.csv", [row for row in rows if row["label"] == name], COLUMNS)
                sheet = torch.from_numpy(np.concatenate([photos, outputs[:SHEET_PHOTOS]])).permute(0, 3, 1, 2)
                atomic_write_bytes(out / f"{name}-{budget:g}min.png", grid_png(sheet, nrow=len(photos)))
        atomic_write_json(out / REFERENCES, {"untranslated": metrics["untranslated"],
                                             "real_anime": metrics["real_anime"], "image_size": eval_size,
                                             "n_photos": metrics["n_photos"], "n_anime": metrics["n_anime"],
                                             "n_reference": metrics["n_reference"]})  # fmt: skip
        draw_plot(out)
        if progress is not None:
            progress.save(contender, clock, rows)
    return rows


# --------------------------------------------------------------------------- files


def curve_files(out: Path) -> list[Path]:
    """The CSVs of ``out`` that this benchmark wrote (other benchmarks' tables may sit beside them)."""
    header = ",".join(COLUMNS)
    return [path for path in sorted(out.glob("*.csv")) if path.read_text().split("\n", 1)[0] == header]


# --------------------------------------------------------------------------- seeds


def variant_label(label: str, variant: str) -> str:
    """The curve of one variant of a run: the run's label for the model itself, ``-<variant>`` inserted before
    a ``-seedN`` suffix otherwise (``project-seed2`` -> ``project-ema-seed2``), so seeds still group."""
    if not variant:
        return label
    seed = SEED_SUFFIX.search(label)
    return f"{label[: seed.start()]}-{variant}{seed.group()}" if seed else f"{label}-{variant}"


def curve_group(label: str) -> str:
    """The experiment a run belongs to: its label without the ``-seedN`` that :func:`run_label` gives every
    seed but 0 (so ``plain-cyclegan`` and ``plain-cyclegan-seed1`` are two seeds of one experiment)."""
    return SEED_SUFFIX.sub("", label)


@dataclass(frozen=True)
class SeedSpread:
    """One experiment's runs at one budget: how many seeds reached it, their mean KID x100 and its range, and
    their mean face rate. One run per curve cannot tell a real lead from luck; the range says how far apart
    runs of the same settings land."""

    group: str
    cpu_minutes: float
    seeds: int
    kid_mean: float
    kid_min: float
    kid_max: float
    face_rate_mean: float


def seed_groups(labels: Iterable[str]) -> dict[str, list[str]]:
    """The runs' labels by experiment (:func:`curve_group`), sorted."""
    groups: dict[str, list[str]] = defaultdict(list)
    for label in sorted(labels):
        groups[curve_group(label)].append(label)
    return dict(groups)


def seed_spreads(runs: dict[str, list[dict]]) -> list[SeedSpread]:
    """The runs (label -> rows) of every experiment with at least two seeds, budget by budget: rows are matched
    on their CPU-minutes rounded down to 0.1 (a run stops just past its budget, never before it)."""
    spreads = []
    for group, labels in seed_groups(runs).items():
        if len(labels) < 2:
            continue
        by_budget: dict[float, list[dict]] = defaultdict(list)
        for row in (row for label in labels for row in runs[label]):
            by_budget[math.floor(row["cpu_minutes"] * 10 + 1e-6) / 10].append(row)
        for minutes, rows in sorted(by_budget.items()):
            kids = [r["kid_x100"] for r in rows]
            spreads.append(SeedSpread(group, minutes, len(rows), round(float(np.mean(kids)), 3), min(kids), max(kids),
                                      round(float(np.mean([r["face_rate"] for r in rows])), 3)))  # fmt: skip
    return spreads


def read_runs(out: Path) -> dict[str, list[dict]]:
    """Every run of ``out``: its label (the CSV's name) and its rows."""
    return {path.stem: read_rows(path) for path in curve_files(out)}


def draw_plot(out: Path) -> None:
    """Every ``<out>/*.csv`` as one curve of KID x100 against CPU-minutes, with the references as dashed lines;
    an experiment run with several seeds is drawn as their mean, its seeds as thin lines of the same colour and
    the range between them shaded. Written atomically (runs share the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    runs = {label: rows for label, rows in read_runs(out).items() if rows}
    spreads = defaultdict(list)
    for spread in seed_spreads(runs):
        spreads[spread.group].append(spread)

    def curve(label: str) -> tuple[list[float], list[float]]:
        return [r["cpu_minutes"] for r in runs[label]], [r["kid_x100"] for r in runs[label]]

    for group, labels in seed_groups(runs).items():
        if group not in spreads:
            ax.plot(*curve(labels[0]), marker="o", label=labels[0])
            continue
        points = spreads[group]
        minutes = [p.cpu_minutes for p in points]
        fewest, most = min(p.seeds for p in points), max(p.seeds for p in points)  # late budgets may have fewer
        seeds = f"{most}" if fewest == most else f"{fewest}-{most}"
        (mean_line,) = ax.plot(minutes, [p.kid_mean for p in points], marker="o", linewidth=2,
                               label=f"{group}: mean of {seeds} seeds")  # fmt: skip
        colour = mean_line.get_color()
        ax.fill_between(minutes, [p.kid_min for p in points], [p.kid_max for p in points], color=colour, alpha=0.15)
        for label in labels:
            ax.plot(*curve(label), color=colour, linewidth=0.7, alpha=0.5)
    if (out / REFERENCES).exists():
        references = json.loads((out / REFERENCES).read_text())
        for name, text, style in (("untranslated", "photos untranslated", "--"),
                                  ("real_anime", "real anime (trainB sample)", ":")):  # fmt: skip
            kid = references[name]["kid_x100"]
            ax.axhline(kid, color="grey", linestyle=style, label=f"{text}: {kid:.2f}")
    ax.set_xlabel("training CPU-minutes")
    ax.set_ylabel("KID x100, translated testA vs testB (128 px)")
    ax.set_title("photo -> anime: KID per training CPU-minute (selfie2anime)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out / PLOT, buf.getvalue())


def seed_table(runs: dict[str, list[dict]]) -> str:
    """The experiments among ``runs`` (label -> rows) run with several seeds: per budget, the seeds' mean KID, its
    range and the mean face rate (empty when no experiment has two seeds)."""
    spreads = seed_spreads(runs)
    if not spreads:
        return ""
    w = max([24, *(len(s.group) + 2 for s in spreads)])
    lines = [f"{'experiment (seeds)':{w}}{'CPU-min':>8}{'seeds':>6}{'KIDx100 mean':>13}{'range':>16}{'faces':>7}"]
    for s in spreads:
        lines.append(f"{s.group:{w}}{s.cpu_minutes:8.1f}{s.seeds:6d}{s.kid_mean:13.2f}"
                     f"{f'{s.kid_min:.2f} - {s.kid_max:.2f}':>16}{s.face_rate_mean:7.2f}")  # fmt: skip
    return "\n".join(lines)


def table(out: Path, runs: dict[str, list[dict]]) -> str:
    """Every run (label -> rows), one line per budget, and the references of the folder ``out``."""
    w = max([24, *(len(label) + 2 for label in runs)])
    lines = [f"{'label':{w}}{'CPU-min':>8}{'step':>7}{'images':>8}{'KIDx100':>9}{'FID':>8}{'faces':>7}"
             f"{'structure':>10}{'s/avatar':>9}"]  # fmt: skip
    for rows in runs.values():
        for r in rows:
            lines.append(f"{r['label']:{w}}{r['cpu_minutes']:8.1f}{r['step']:7.0f}{r['images_seen']:8.0f}"
                         f"{r['kid_x100']:9.2f}{r['fid']:8.1f}{r['face_rate']:7.2f}{r['structure']:10.3f}"
                         f"{r['seconds_per_avatar']:9.3f}")  # fmt: skip
    if (out / REFERENCES).exists():
        references = json.loads((out / REFERENCES).read_text())
        for name in ("untranslated", "real_anime"):
            m = references[name]
            structure = "" if m["structure"] is None else f"{m['structure']:10.3f}"
            lines.append(f"{name:{w}}{'':23}{m['kid_x100']:9.2f}{m['fid']:8.1f}{m['face_rate']:7.2f}{structure}")
    return "\n".join(lines)


def report(out: Path) -> str:
    """The runs of the folder ``out`` (read once): :func:`table`, then :func:`seed_table` where some experiment
    has several seeds."""
    runs = read_runs(out)
    seeds = seed_table(runs)
    return table(out, runs) + (f"\n\n{seeds}" if seeds else "")


# --------------------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/photos/selfie2anime",
                        help="selfie2anime: trainA, trainB, testA, testB")  # fmt: skip
    parser.add_argument("--model", choices=["project", "plain-cyclegan"], default="project")
    parser.add_argument("--label", default="",
                        help="curve and CSV name (default: the model's); -seedN added unless --seed is 0")  # fmt: skip
    parser.add_argument("--budgets", type=budgets_arg, default=[15.0, 30.0],
                        help="training CPU-minutes at which the model is evaluated (default 15,30)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=64, help="training side in pixels (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="translate.seed of the project, the reference's seed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/translate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a params key")
    parser.add_argument("--ngf", type=int, default=32, help="plain CycleGAN: generator width (default 32)")
    parser.add_argument("--n-blocks", type=int, default=6, help="plain CycleGAN: residual blocks (default 6)")
    parser.add_argument("--batch-size", type=int, default=1, help="plain CycleGAN: batch (default 1)")
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run of this label from <out>/checkpoints/<label>.pt (written after "
                             "each budget) instead of starting over")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="start over a label that already has results in --out, replacing them")  # fmt: skip
    parser.add_argument("--redraw", action="store_true",
                        help="train nothing: redraw <out>'s plot from its CSVs and print its tables")  # fmt: skip
    args = parser.parse_args()
    if args.redraw:
        if not curve_files(args.out):
            parser.error(f"--redraw: no benchmark CSV in {args.out}")
        draw_plot(args.out)
        print(report(args.out))
        print(f"\nwrote {args.out / PLOT}")
        return
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite starts it over: choose one")
    try:
        label = run_label(args.label, args.model, args.seed)
    except ValueError as err:
        parser.error(f"--label: {err}")
    checkpoint = args.out / "checkpoints" / f"{label}.pt"
    if not (args.resume or args.overwrite):
        remedy = "--resume continues that run, --overwrite starts it over, another --label keeps both"
        refuse_to_overwrite([checkpoint, args.out / f"{label}.csv"], remedy)
    torch.set_num_threads(args.threads)
    cpu = cpu_model()

    raw = apply_sets({}, [f"translate.photos={args.data / 'trainA'}", f"translate.anime={args.data / 'trainB'}",
                          f"translate.image_size={args.image_size}", f"translate.threads={args.threads}",
                          f"translate.seed={args.seed}", "translate.device=cpu", *args.set])  # fmt: skip
    cfg = load_params(ROOT / "params.yaml", raw).translate
    if cfg.device != "cpu":  # the plain CycleGAN trains on the CPU, against a CPU-time budget
        parser.error("equal CPU time: the project trains on the CPU as the reference does (no translate.device)")
    start = time.perf_counter()
    batches = TranslateBatches(load_domain(cfg.photos, "translate.photos", cfg.image_size, cfg.max_images),
                               load_domain(cfg.anime, "translate.anime", cfg.image_size, cfg.max_images))  # fmt: skip
    sets = load_eval_sets(args.data, cfg.image_size)
    print(f"{label}: {len(batches.a)} photos, {len(batches.b)} anime faces at {cfg.image_size} px; test "
          f"{len(sets.photos)} + {len(sets.anime)}, reference {len(sets.reference)} "
          f"({time.perf_counter() - start:.0f} s to load); {args.threads} thread(s) of {cpu}",
          flush=True)  # fmt: skip

    if args.model == "project":
        print(f"translate {cfg}", flush=True)
        contender = project_contender(cfg, batches)
        settings = {k: v for k, v in semantic_values(cfg).items() if k != "steps"}  # the budgets stop it
    else:
        gan = PlainCycleGAN(cfg.image_size, args.ngf, args.n_blocks, args.seed, batch_size=args.batch_size)
        print(f"plain CycleGAN: ngf {args.ngf}, {args.n_blocks} blocks, batch {args.batch_size}, "
              f"{sum(p.numel() for p in gan.g_ab.parameters()):,} weights per generator", flush=True)  # fmt: skip
        contender = reference_contender(gan, batches, args.seed)
        settings = {"image_size": cfg.image_size, "seed": args.seed, "ngf": args.ngf, "n_blocks": args.n_blocks,
                    "batch_size": args.batch_size}  # fmt: skip
    progress = Progress(checkpoint, {"model": args.model, "settings": settings, "data": str(args.data.resolve()),
                                     "threads": args.threads, "cpu": cpu})  # fmt: skip

    from anime_avatar.metrics.features import extract_features

    features = CachedFeatures(lambda images: extract_features(images, batch_size=50, progress=False, backend="auto"))
    start = time.perf_counter()
    measure(label, contender, args.budgets, sets, args.out, features.scorer, cached_faces(anime_face_finder()),
            timing_repeats=args.timing_repeats, progress=progress, resume=args.resume)  # fmt: skip
    print(f"\n{label}: done in {(time.perf_counter() - start) / 60:.1f} min of wall time\n")
    print(report(args.out))
    print(f"\nwrote {args.out / (label + '.csv')} and {args.out / PLOT}")


if __name__ == "__main__":
    main()
