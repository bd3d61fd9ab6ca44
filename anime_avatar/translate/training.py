"""The translator's training loop: both generators, then both critics, once per step (CycleGAN's schedule).

Each step draws a batch of photos ``a`` and anime faces ``b`` (:class:`TranslateBatches`, a pure function of
the seed and the step) and

* updates ``g_ab`` and ``g_ba`` together (one Adam) on: least-squares adversarial terms from the frozen
  critics, ``translate.cycle_weight`` x the L1 of both round trips, ``translate.identity_weight`` x the L1 of
  each generator fed its own target domain, and, with CAM, ``translate.cam_weight`` x the attention
  classifiers' loss (U-GAT-IT), and, with the mask, ``translate.mask_weight`` x how far the share of each
  translation drawn (not copied from the input) falls short of ``translate.mask_min_drawn`` (the mask
  prior); each generator sees its source and target images in one batched pass (instance and layer norms
  are per image, so this is the same function, with half the calls);
* then ``d_a`` and ``d_b`` together (one Adam) on the same fakes, detached, each loss halved (CycleGAN).

With ``translate.ema`` > 0 each generator also has an exponential moving average of its weights
(:class:`~anime_avatar.nn.ema.EMA`, warmed up as the GAN's), updated after every generator step: the average
is the run's output (saved, drawn in the sample sheets), the nets keep training. The averages take no part in
the step, so the nets train exactly as without them.

bf16 autocast where :func:`~anime_avatar.gan.training.autocast_for` enables it (``translate.amp``); weights,
optimiser state and losses stay float32. Under torchrun each rank takes its slice of every step's batch and
DistributedDataParallel averages the gradients, so every rank holds the same nets.

Exact resume: the checkpoint holds the nets (with spectral norm's vectors), both optimisers, the step and
the loss history (and the averages); nothing else is random, so a resumed run gives bit-identical weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from anime_avatar.artifacts.checkpoint import Schedule, load_resumable, save_checkpoint
from anime_avatar.core.device import apply_threads, resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.loops import StopFlag, TrainingClock, step_generator
from anime_avatar.core.params import TranslateParams, semantic_values
from anime_avatar.core.progress import progress_bar
from anime_avatar.data.image_sets import spread
from anime_avatar.nn.distributed import DistInfo, init_distributed
from anime_avatar.nn.ema import EMA
from anime_avatar.nn.images import to_model_range
from anime_avatar.nn.losses import d_loss, g_loss
from anime_avatar.nn.precision import autocast_for, training_precision
from anime_avatar.translate.inference import sample_sheet
from anime_avatar.translate.losses import cam_loss, cycle_loss, identity_loss, mask_prior_loss
from anime_avatar.translate.nets import TranslatorConfig, TranslatorNets, clip_rho_

log = logging.getLogger(__name__)

NETS = ("g_ab", "g_ba", "d_a", "d_b")
GENERATORS = ("g_ab", "g_ba")
SHEET_COLUMNS = 4  # sample images per domain in the logged sheets
_BATCH = 0  # purpose of the batch's random stream (part of its seed)

LogHook = Callable[[int, dict[str, float]], None]
SampleHook = Callable[[int, Tensor], None]
Autocast = Callable[[], AbstractContextManager[Any]]


class TranslateBatches:
    """Photos (domain A) and anime faces (domain B) in memory as uint8; :meth:`batch` is a pure function of
    (seed, step): random images of each domain, each mirrored at random."""

    def __init__(self, photos: np.ndarray, anime: np.ndarray) -> None:
        for name, images in (("photos", photos), ("anime faces", anime)):
            if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or len(images) == 0:
                raise UserError(f"translation needs square RGB {name} (N, S, S, 3), got shape {images.shape}")
        if photos.shape[1] != anime.shape[1]:
            raise UserError(f"photos ({photos.shape[1]} px) and anime faces ({anime.shape[1]} px) differ in size")
        self.size = int(photos.shape[1])
        self.a = torch.from_numpy(np.ascontiguousarray(photos, dtype=np.uint8))
        self.b = torch.from_numpy(np.ascontiguousarray(anime, dtype=np.uint8))

    def batch(self, seed: int, step: int, size: int) -> tuple[Tensor, Tensor]:
        """(a, b): float (size, 3, S, S) in [-1, 1] for ``step``."""
        gen = step_generator(seed, 0, step, _BATCH)
        picks = [torch.randint(len(images), (size,), generator=gen) for images in (self.a, self.b)]
        flips = torch.randint(2, (2, size), generator=gen).bool()
        a, b = (to_model_range(images[i]) for images, i in zip((self.a, self.b), picks, strict=True))
        return _mirror(a, flips[0]), _mirror(b, flips[1])

    def fixed(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` images of each domain (fewer where a domain has fewer: the sheet's columns pair up), evenly spread:
        the same for every sample sheet of a run."""
        n = min(n, len(self.a), len(self.b))
        a = to_model_range(self.a[spread(range(len(self.a)), n)])
        b = to_model_range(self.b[spread(range(len(self.b)), n)])
        return a.contiguous(), b.contiguous()


def _mirror(images: Tensor, flip: Tensor) -> Tensor:
    return torch.where(flip[:, None, None, None], images.flip(-1), images).contiguous()


@dataclass
class TranslateTrainState:
    config: TranslatorConfig
    nets: TranslatorNets
    opt_g: torch.optim.Optimizer  # g_ab and g_ba
    opt_d: torch.optim.Optimizer  # d_a and d_b
    step: int = 0
    seconds: float = 0.0  # trained so far, over every process that resumed this run
    history: list[dict[str, float]] = field(default_factory=list)
    info: DistInfo = field(default_factory=DistInfo)
    wrapped: dict[str, nn.Module] = field(default_factory=dict)  # DDP wrappers by net name, under torchrun
    averages: dict[str, EMA] = field(default_factory=dict)  # the generators' weight averages (translate.ema > 0)

    def trained(self, name: str) -> nn.Module:
        """The net ``name`` as the step trains it: its DDP wrapper under torchrun, else the net itself."""
        return self.wrapped[name] if name in self.wrapped else getattr(self.nets, name)

    def output(self, name: str) -> nn.Module:
        """The generator ``name`` ("g_ab" or "g_ba") as the run's result: its weight average where translate.ema
        keeps one, else the net as trained."""
        return self.averages[name].model if name in self.averages else getattr(self.nets, name)


def translator_config(cfg: TranslateParams) -> TranslatorConfig:
    """The nets of ``cfg``: critics as wide as the generator, with 70x70 patches (3 stride-2 layers) where the
    image allows a patch map of at least 1x1, fewer below 24 px."""
    disc_layers = max(n for n in (1, 2, 3) if cfg.image_size // 2**n >= 3)
    return TranslatorConfig(image_size=cfg.image_size, channels=cfg.channels, n_blocks=cfg.n_blocks, n_down=2,
                            attention=cfg.attention, disc_channels=cfg.channels, disc_layers=disc_layers)  # fmt: skip


def build_state(cfg: TranslateParams, device: torch.device) -> TranslateTrainState:
    """Fresh nets (initial weights depend only on translate.seed) and their optimisers."""
    config = translator_config(cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    # channels_last: faster convolutions on oneDNN and cuDNN (see gan/training.py); the same maths.
    nets = TranslatorNets(config).to(device, memory_format=torch.channels_last)
    betas = (cfg.beta1, cfg.beta2)
    return TranslateTrainState(
        config=config,
        nets=nets,
        opt_g=torch.optim.Adam(nets.generator_parameters(), lr=cfg.lr, betas=betas, foreach=True),
        opt_d=torch.optim.Adam(nets.discriminator_parameters(), lr=cfg.lr, betas=betas, foreach=True),
        averages={name: EMA(getattr(nets, name), warmup=True) for name in GENERATORS} if cfg.ema > 0 else {},
    )


def fingerprint(cfg: TranslateParams, data_version: str, precision: str) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: every output-changing key but the step count, the nets they
    build, the arithmetic (``training_precision``), the data."""
    optimisation = {k: v for k, v in semantic_values(cfg).items() if k != "steps"}
    return {"translate": optimisation, "nets": translator_config(cfg).as_dict(), "precision": precision,
            "data": data_version}  # fmt: skip


def _set_critics_trainable(nets: TranslatorNets, trainable: bool) -> None:
    nets.d_a.requires_grad_(trainable)
    nets.d_b.requires_grad_(trainable)


def train_step(
    state: TranslateTrainState, cfg: TranslateParams, batches: TranslateBatches, autocast: Autocast | None = None
) -> dict[str, float]:
    """One generator update and one critic update; returns the losses (loss_g, loss_d, adv, cycle, identity,
    cam with CAM, and mask with a weighted mask prior). ``autocast``: a factory of the context the forward
    passes run in (default: bf16 where :func:`autocast_for` enables ``translate.amp``)."""
    nets, config, info = state.nets, state.config, state.info
    device = next(nets.parameters()).device
    amp = autocast or (lambda: autocast_for(device, cfg.amp))
    a, b = batches.batch(cfg.seed, state.step, cfg.batch_size)
    per_rank = cfg.batch_size // info.world_size
    a, b = (t[info.rank * per_rank : (info.rank + 1) * per_rank] for t in (a, b))
    a, b = (t.to(device, memory_format=torch.channels_last) for t in (a, b))
    g_ab, g_ba, d_a, d_b = (state.trained(name) for name in NETS)
    nets.train()
    with_identity = cfg.identity_weight > 0 or config.cam  # the identity pass also gives the CAM's target logits

    # Generators: critics frozen and unwrapped (their gradients are neither needed nor synchronised).
    _set_critics_trainable(nets, False)
    with amp():
        ab = g_ab(torch.cat([a, b]) if with_identity else a)  # a -> anime (and b -> b, the identity), one pass
        ba = g_ba(torch.cat([b, a]) if with_identity else b)
        fake_b, fake_a = ab.image[:per_rank], ba.image[:per_rank]
        rec_a, rec_b = g_ba(fake_b).image, g_ab(fake_a).image
        adv = g_loss("lsgan", nets.d_b(fake_b)) + g_loss("lsgan", nets.d_a(fake_a))
    cycle = cycle_loss(rec_a, a) + cycle_loss(rec_b, b)
    losses = {"adv": adv, "cycle": cycle}
    loss_g = adv + cfg.cycle_weight * cycle
    if with_identity:
        losses["identity"] = identity_loss(ab.image[per_rank:], b) + identity_loss(ba.image[per_rank:], a)
        loss_g = loss_g + cfg.identity_weight * losses["identity"]
    if config.cam:
        assert ab.cam_logit is not None and ba.cam_logit is not None
        losses["cam"] = (cam_loss(ab.cam_logit[:per_rank], ab.cam_logit[per_rank:])
                         + cam_loss(ba.cam_logit[:per_rank], ba.cam_logit[per_rank:]))  # fmt: skip
        loss_g = loss_g + cfg.cam_weight * losses["cam"]
    if config.mask and cfg.mask_weight > 0:
        assert ab.mask is not None and ba.mask is not None
        losses["mask"] = (mask_prior_loss(ab.mask[:per_rank], cfg.mask_min_drawn)
                          + mask_prior_loss(ba.mask[:per_rank], cfg.mask_min_drawn))  # fmt: skip
        loss_g = loss_g + cfg.mask_weight * losses["mask"]
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    clip_rho_(nets.g_ab)
    clip_rho_(nets.g_ba)
    for name, average in state.averages.items():
        average.update(getattr(nets, name), cfg.ema)

    # Critics: real and fake of a domain in one pass (one DDP reduction per critic).
    _set_critics_trainable(nets, True)
    fake_a, fake_b = fake_a.detach(), fake_b.detach()
    with amp():
        logits_a = d_a(torch.cat([a, fake_a]))
        logits_b = d_b(torch.cat([b, fake_b]))
    loss_d = 0.5 * (d_loss("lsgan", logits_a[:per_rank], logits_a[per_rank:])
                    + d_loss("lsgan", logits_b[:per_rank], logits_b[per_rank:]))  # fmt: skip
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()
    state.step += 1
    return {"loss_g": float(loss_g.detach()), "loss_d": float(loss_d.detach()),
            **{name: float(value.detach()) for name, value in losses.items()}}  # fmt: skip


def state_payload(state: TranslateTrainState) -> dict[str, Any]:
    """Everything training changes (tensors and plain values): what :func:`restore_state` puts back."""
    return {"step": state.step, "seconds": state.seconds, "config": state.config.as_dict(),
            "nets": state.nets.state_dict(), "opt_g": state.opt_g.state_dict(), "opt_d": state.opt_d.state_dict(),
            "history": state.history,
            # Only where kept: without averages the checkpoint is the one a run before translate.ema wrote.
            **({"averages": {name: average.state_dict() for name, average in state.averages.items()}}
               if state.averages else {})}  # fmt: skip


def restore_state(state: TranslateTrainState, payload: dict[str, Any]) -> None:
    state.nets.load_state_dict(payload["nets"])
    state.opt_g.load_state_dict(payload["opt_g"])
    state.opt_d.load_state_dict(payload["opt_d"])
    state.step = int(payload["step"])
    state.seconds = float(payload["seconds"])
    state.history = list(payload["history"])
    for name, average in state.averages.items():
        average.load_state_dict(payload["averages"][name])


def write_checkpoint(path: Path, state: TranslateTrainState, fp: dict[str, Any]) -> None:
    save_checkpoint(path, {"fingerprint": fp, **state_payload(state)})


def resume(
    path: Path, state: TranslateTrainState, fp: dict[str, Any], schedule: Schedule, device: torch.device
) -> bool:
    """Restore ``state`` from ``path`` if it was made with the same params and data, at or before ``schedule.steps``."""
    payload = load_resumable(path, fp, schedule, "translate", device)
    if payload is None:
        return False
    restore_state(state, payload)
    return True


def _device(cfg: TranslateParams, info: DistInfo) -> torch.device:
    device = resolve_device(cfg.device, key="translate.device")
    return init_distributed(info, device.type) if info.world_size > 1 else device


def train_translator(
    cfg: TranslateParams,
    batches: TranslateBatches,
    checkpoint: Path,
    data_version: str = "",
    on_log: LogHook | None = None,
    on_sample: SampleHook | None = None,
    stop_after: int | None = None,
    info: DistInfo | None = None,
) -> TranslateTrainState:
    """Train both directions to ``cfg.steps`` (or stop early after ``stop_after`` steps), resuming from
    ``checkpoint`` when it matches. ``on_log(step, losses)`` every log_every steps, ``on_sample(step, sheet)``
    (a uint8 (3, H, W) :func:`~anime_avatar.translate.inference.sample_sheet`) every sample_every steps and at
    the end; both, the history and the checkpoint only in the main process under torchrun."""
    info = info or DistInfo()
    apply_threads(cfg.threads, "translate.threads")
    if cfg.batch_size % info.world_size:
        raise UserError(f"translate.batch_size ({cfg.batch_size}) must divide evenly over {info.world_size} "
                        "processes")  # fmt: skip
    if batches.size != cfg.image_size:
        raise UserError(f"the translation images are {batches.size} px but translate.image_size is {cfg.image_size}")
    device = _device(cfg, info)
    state = build_state(cfg, device)
    state.info = info
    fp = fingerprint(cfg, data_version, training_precision(device, cfg.amp))
    if resume(checkpoint, state, fp, cfg, device):
        log.info("resumed from %s at step %d", checkpoint, state.step)
    if info.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        state.wrapped = {name: DistributedDataParallel(getattr(state.nets, name), device_ids=ids) for name in NETS}
    sheet_a, sheet_b = batches.fixed(SHEET_COLUMNS)
    last = cfg.steps if stop_after is None else min(cfg.steps, state.step + stop_after)
    bar = progress_bar(total=cfg.steps, initial=state.step, desc="translator", unit="step", disable=not info.is_main)
    clock = TrainingClock(state.seconds)
    with StopFlag() as stop, contextlib.closing(bar):
        while state.step < last:
            with stop.step_of_rank(info.is_main, state.step, checkpoint):
                losses = train_step(state, cfg, batches)
            state.seconds = clock.seconds()
            if not all(math.isfinite(v) for v in losses.values()):
                raise UserError(f"translator training diverged at step {state.step} ({losses}): lower translate.lr")
            if info.is_main:
                if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                    state.history.append({"step": state.step, **losses})
                    if on_log:
                        on_log(state.step, losses)
                bar.set_postfix(loss_g=f"{losses['loss_g']:.3f}", loss_d=f"{losses['loss_d']:.3f}", refresh=False)
                bar.update()
                if on_sample and (state.step % cfg.sample_every == 0 or state.step == cfg.steps):
                    on_sample(state.step, sample_sheet(state.output("g_ab"), state.output("g_ba"), sheet_a, sheet_b))
                if state.step % cfg.checkpoint_every == 0 or state.step == last:
                    write_checkpoint(checkpoint, state, fp)
            save = (lambda: write_checkpoint(checkpoint, state, fp)) if info.is_main else None
            stop.stop_if_signalled(state.step, checkpoint, save)
    state.nets.eval()
    return state
