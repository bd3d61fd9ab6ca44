"""stylize_eval: every style-transfer method on a fixed content/style set -> reports/stylize.json (one entry
per method), its headline scores in metrics/stylize.json, plots/stylize_tradeoff.csv, reports/stylize.png
(the comparison sheet).

Contents: stylize_eval.n_content faces of stylize_eval.content_path, plus the face of each photo in
stylize_eval.photos (found and cropped as the photo_faces section says); styles: stylize_eval.n_styles images
of stylize_eval.style_path; every content meets every style. The numbers and the sheet are also logged to
the stylizer's MLflow run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from anime_avatar.artifacts.reports import (
    STYLIZE_DETAILS,
    STYLIZE_HEADLINE,
    STYLIZE_METRICS,
    STYLIZE_SHEET,
    STYLIZE_TRADEOFF_CSV,
    TRADEOFF_FIELDS,
    write_metrics_and_details,
)
from anime_avatar.artifacts.stylizer import STYLIZER, STYLIZER_RUN_FILE, read_stylizer
from anime_avatar.core.device import apply_threads, resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.fsutil import atomic_write_bytes, write_csv
from anime_avatar.core.params import FUSION_METHODS, Params, PhotoFacesParams, StylizeEvalParams
from anime_avatar.core.stage import run_stage
from anime_avatar.data.image_sets import load_image_set
from anime_avatar.data.images import center_square, load_rgb, png_bytes
from anime_avatar.data.photos import photo_faces
from anime_avatar.ops.stage_run import log_to_recorded_run
from anime_avatar.ops.tracking import flatten
from anime_avatar.style.evaluation import (
    MethodResult,
    Pair,
    Scorer,
    comparison_sheet,
    make_pairs,
    run_method,
    seconds_with_cached_style,
    style_at_equal_content,
    tradeoff,
    unchanged,
)
from anime_avatar.style.features import LAYERS, build_features
from anime_avatar.style.images import resize_short
from anime_avatar.style.model_file import load_stylizer
from anime_avatar.style.transfer import is_gatys, make_method

log = logging.getLogger(__name__)
SCORING_NETWORK = "inception"  # every method is scored in the same feature space


def evaluation_pairs(cfg: StylizeEvalParams, faces: PhotoFacesParams, device: torch.device) -> list[Pair]:
    # Cut to the evaluation's size as they are read (make_pairs' own crop is then a no-op): bounded memory.
    # n_content 0 (the photos only) reads no face: load_image_set's limit 0 would mean all of them.
    contents = []
    if cfg.n_content:
        contents = load_image_set(Path(cfg.content_path), "stylize_eval.content_path", cfg.n_content,
                                  prepare=lambda image: center_square(image, cfg.image_size))  # fmt: skip
    for photo in cfg.photos:
        path = Path(photo).expanduser()
        if not path.is_file():
            raise UserError(f"stylize_eval.photos: {path} does not exist")
        face = photo_faces(load_rgb(path), cfg.image_size, faces, largest=True, named=f"stylize_eval.photos: {path}",
                           remedy="crop the photo around the face, or take it out of the list")[0]  # fmt: skip
        contents.append((path.stem, face.crop))
    styles = load_image_set(Path(cfg.style_path), "stylize_eval.style_path", cfg.n_styles,
                            prepare=lambda image: resize_short(image, cfg.image_size))  # fmt: skip
    return make_pairs(contents, styles, cfg.image_size, device)


def stylize_eval(params: Params) -> None:
    cfg = params.stylize_eval
    apply_threads(cfg.threads, "stylize_eval.threads")
    device = resolve_device(cfg.device, key="stylize_eval.device")
    stored = read_stylizer(STYLIZER)  # fails first, and says which stage to run, when there is none
    trained = list(stored["nets"])
    pairs = evaluation_pairs(cfg, params.photo_faces, device)
    log.info("%d pairs at %d px, methods %s", len(pairs), cfg.image_size, ", ".join(cfg.methods))
    choice = LAYERS[SCORING_NETWORK]
    scorer = Scorer(build_features(SCORING_NETWORK, choice.content + choice.style, device), params.gatys.temperature)
    results: list[MethodResult] = []
    metrics: dict = {}
    for name in cfg.methods:
        if name in FUSION_METHODS and name not in trained:
            raise UserError(f"stylize_eval.methods names {name} but {STYLIZER} holds {', '.join(trained)}: add it "
                            "to stylize.methods")  # fmt: skip
        try:
            method = make_method(name, params.gatys, STYLIZER, device)
        except UserError as err:
            if not name.startswith("gatys-vgg19"):
                raise
            log.warning("%s skipped: %s", name, err)  # its weights cannot be had offline
            metrics[name] = {"skipped": str(err)}
            continue
        repeats = 1 if is_gatys(name) else cfg.timing_repeats
        results.append(run_method(name, method, pairs, scorer, repeats))
        metrics[name] = results[-1].summary()
    metrics["unchanged"] = unchanged(pairs, scorer).summary()
    curves = {}
    for name in (m for m in FUSION_METHODS if m in cfg.methods):
        net = load_stylizer(STYLIZER, name, device).net
        metrics[name]["seconds_cached_style"] = round(seconds_with_cached_style(net, pairs, cfg.timing_repeats), 6)
        curves[name] = tradeoff(net, pairs, scorer, cfg.alphas)
    metrics |= comparisons(metrics, curves)
    write_metrics_and_details(metrics, STYLIZE_HEADLINE, STYLIZE_METRICS, STYLIZE_DETAILS)
    write_csv(STYLIZE_TRADEOFF_CSV, [{"method": m, **p} for m, points in curves.items() for p in points],
              TRADEOFF_FIELDS)  # fmt: skip
    atomic_write_bytes(STYLIZE_SHEET, png_bytes(comparison_sheet(pairs, results)))
    log_to_training_run(metrics, str(stored.get("run_id", "")))
    print(summary_table(metrics))


def comparisons(metrics: dict, curves: dict[str, list[dict[str, float]]]) -> dict:
    """The issue's targets: attention vs AdaIN at equal content loss, attention's speed-up over Gatys."""
    found: dict = {}
    if {"attention", "adain"} <= set(curves):
        found["attention_vs_adain"] = style_at_equal_content(curves["attention"], curves["adain"])
    attention = metrics.get("attention", {})
    for gatys in ("gatys-inception-softmax", "gatys-inception"):
        if "seconds" in attention and "seconds" in metrics.get(gatys, {}):
            found[f"speedup_attention_vs_{gatys}"] = round(metrics[gatys]["seconds"] / attention["seconds"], 1)
            found[f"speedup_attention_cached_style_vs_{gatys}"] = round(
                metrics[gatys]["seconds"] / attention["seconds_cached_style"], 1
            )
    return found


def log_to_training_run(metrics: dict, stylizer_run_id: str) -> None:
    """The numbers, the sheet and the trade-off curves on the MLflow run that made the stylizer."""
    numbers = {k.replace("/", "_"): float(v) for k, v in flatten({"eval": metrics}).items() if _is_number(v)}
    log_to_recorded_run(STYLIZER_RUN_FILE, "stylize_train", (STYLIZER, stylizer_run_id), numbers,
                        (STYLIZE_SHEET, STYLIZE_TRADEOFF_CSV))  # fmt: skip


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def summary_table(metrics: dict) -> str:
    columns = ("content_loss", "style_loss", "style_gram_softmax", "structure", "colour", "seconds")
    lines = [f"{'method':26}" + "".join(f"{c:>19}" for c in columns)]
    for name, entry in metrics.items():
        if isinstance(entry, dict) and "pairs" in entry:
            lines.append(f"{name:26}" + "".join(f"{entry[c]:>19.4f}" if c in entry else f"{'':>19}" for c in columns))
        elif isinstance(entry, dict) and "skipped" in entry:
            lines.append(f"{name:26} skipped")
    lines += [f"{k}: {v}" for k, v in metrics.items() if not isinstance(v, dict) or "matched_points" in v]
    return "\n".join(lines)


if __name__ == "__main__":
    run_stage("stylize_eval", stylize_eval)
