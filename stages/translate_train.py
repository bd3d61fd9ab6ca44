"""translate_train: photos (translate.photos) + anime faces (translate.anime) -> models/translator.pt (both
directions), models/translator_checkpoints/, metrics/translate_train.json, plots/translate_losses.csv,
plots/translate_samples/ (photo | anime | cycle | attention sheets).

Runs alone (``python -m stages.translate_train``) or on several processes
(``torchrun --nproc_per_node N -m stages.translate_train``); only rank 0 logs and writes. Resumes from its
checkpoint when the params and data match; logged to MLflow and registered as the translator model
(tracking.translator_model_name).
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from anime_avatar.artifacts.raw import synthetic_only
from anime_avatar.artifacts.reports import (
    TRANSLATE_LOSS_FIELDS,
    TRANSLATE_LOSSES_CSV,
    TRANSLATE_SAMPLES_DIR,
    TRANSLATE_TRAIN_METRICS,
    sample_steps,
)
from anime_avatar.artifacts.translator import TRANSLATOR, TRANSLATOR_CHECKPOINT, TRANSLATOR_RUN_FILE
from anime_avatar.core.fsutil import atomic_write_bytes, atomic_write_json, write_csv
from anime_avatar.core.params import Params, TranslateParams
from anime_avatar.core.stage import run_stage
from anime_avatar.nn.distributed import DistInfo
from anime_avatar.nn.images import grid_png
from anime_avatar.nn.layers import count_parameters
from anime_avatar.ops.data_versions import path_version
from anime_avatar.ops.stage_run import keep_and_log_sample_sheets, training_run
from anime_avatar.translate.data import load_domain
from anime_avatar.translate.model_file import save_translator
from anime_avatar.translate.training import TranslateBatches, TranslateTrainState, train_translator

log = logging.getLogger(__name__)


def domain_versions(cfg: TranslateParams) -> dict[str, str]:
    """The version of each domain by its path: its dvc.lock hash (a pipeline folder) or a content hash."""
    return {path: path_version(Path(path)) for path in (cfg.photos, cfg.anime)}


def translate_train(params: Params) -> None:
    cfg = params.translate
    info = DistInfo.from_env()
    photos = load_domain(cfg.photos, "translate.photos", cfg.image_size, cfg.max_images)
    anime = load_domain(cfg.anime, "translate.anime", cfg.image_size, cfg.max_images)
    log.info("%d photos and %d anime faces at %d px", len(photos), len(anime), cfg.image_size)
    batches = TranslateBatches(photos, anime)
    versions = domain_versions(cfg)
    version = ";".join(f"{k}={v}" for k, v in versions.items())
    if not info.is_main:
        train_translator(cfg, batches, TRANSLATOR_CHECKPOINT, version, info=info)
        return

    TRANSLATE_SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    name = f"translator-{cfg.attention}-{cfg.image_size}px-{cfg.steps}"
    logged = {"translate": cfg.model_dump(mode="json")}
    with training_run("translate_train", name, params.tracking.experiment, logged, versions,
                      {"attention": cfg.attention}, TRANSLATOR_RUN_FILE) as run:  # fmt: skip
        for images, path in ((photos, cfg.photos), (anime, cfg.anime)):
            run.log_input(images, Path(path).expanduser(), versions[path])
        logged_sheets: set[int] = set()

        def on_sample(step: int, sheet) -> None:
            path = TRANSLATE_SAMPLES_DIR / f"step-{step:07d}.png"
            atomic_write_bytes(path, grid_png(sheet[None], nrow=1))
            run.log_artifact(path, "translate_samples")
            logged_sheets.add(step)

        state = train_translator(cfg, batches, TRANSLATOR_CHECKPOINT, version, info=info, on_sample=on_sample,
                                 on_log=lambda step, losses: run.log_metrics(losses, step))  # fmt: skip
        # The sheets persist: a resumed run keeps those of the process it resumes, and logs them to its run too.
        keep_and_log_sample_sheets(run, sample_steps(cfg.steps, cfg.sample_every), TRANSLATE_SAMPLES_DIR,
                                   "translate_samples", logged_sheets)  # fmt: skip
        # synthetic_photos: `avatar` then prefers the shipped translator (artifacts.translator.read_chosen_translator)
        synthetic = synthetic_only(Path(cfg.photos).expanduser())
        facts = {"params": logged["translate"], "domains": versions, "synthetic_photos": synthetic}
        save_translator(TRANSLATOR, state.output("g_ab"), state.output("g_ba"), state.step, run.run_id, version, facts)
        atomic_write_json(TRANSLATE_TRAIN_METRICS, train_metrics(state))
        write_csv(TRANSLATE_LOSSES_CSV, [{k: h.get(k) for k in TRANSLATE_LOSS_FIELDS} for h in state.history],
                  TRANSLATE_LOSS_FIELDS)  # fmt: skip
        run.log_metrics({"train_seconds": state.seconds})
        tracking = params.tracking
        run.log_model("translator", TRANSLATOR, tracking.translator_model_name if tracking.register_model else None)
    log.info("translator saved to %s (MLflow run %s)", TRANSLATOR, run.run_id)


def train_metrics(state: TranslateTrainState) -> dict:
    """The losses averaged over the last ten logged steps, and each net's parameters."""
    recent = state.history[-10:]
    losses = {k: round(statistics.fmean(h[k] for h in recent), 5) for k in TRANSLATE_LOSS_FIELDS[1:]
              if recent and all(k in h for h in recent)}  # fmt: skip
    nets = {name: count_parameters(getattr(state.nets, name)) for name in ("g_ab", "d_b")}
    return {"steps": state.step, "seconds": round(state.seconds, 1), **losses, "params_generator": nets["g_ab"],
            "params_critic": nets["d_b"]}  # fmt: skip


if __name__ == "__main__":
    run_stage("translate_train", translate_train)
