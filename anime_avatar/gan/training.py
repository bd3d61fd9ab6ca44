"""The GAN training loop: one D and one G update per step, EMA, DiffAugment, checkpoints, DDP.

Reproducibility: every random draw of a step (latents, DiffAugment, gradient-penalty
mixing) comes from generators seeded by (train.seed, rank, step), and the data order
from a DistributedSampler seeded by train.seed and the epoch. So a run interrupted
at any step and resumed from its checkpoint gives the same weights as an
uninterrupted one, on one process or many.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from anime_avatar.artifacts.checkpoint import Schedule, load_resumable, save_checkpoint
from anime_avatar.core.device import apply_threads
from anime_avatar.core.errors import UserError
from anime_avatar.core.loops import StopFlag, TrainingClock, step_generator
from anime_avatar.core.params import ModelParams, TrainParams, semantic_values
from anime_avatar.core.progress import progress_bar
from anime_avatar.gan.diffaugment import diff_augment
from anime_avatar.gan.inference import sample
from anime_avatar.gan.nets import NetConfig, build_discriminator, build_generator, net_config
from anime_avatar.nn.distributed import DistInfo, init_distributed
from anime_avatar.nn.ema import EMA
from anime_avatar.nn.images import to_model_range
from anime_avatar.nn.losses import d_loss, g_loss, gradient_penalty
from anime_avatar.nn.precision import autocast_for, training_precision

if TYPE_CHECKING:
    from anime_avatar.artifacts.trainset import TrainImages

log = logging.getLogger(__name__)

# Purposes of the per-step random streams (part of their seeds).
_LATENT_D, _LATENT_G, _AUGMENT, _PENALTY = range(4)


def step_generators(seed: int, rank: int, step: int, device: torch.device) -> list[torch.Generator]:
    """The random streams of one training step, in ``train_step``'s order: latents for D, latents for G,
    DiffAugment, gradient penalty. Each depends only on (seed, rank, step), so a resumed run draws what an
    uninterrupted one draws."""
    return [step_generator(seed, rank, step, purpose, device) for purpose in (_LATENT_D, _LATENT_G, _AUGMENT, _PENALTY)]


def batch_reader(images: np.ndarray | TrainImages, device: torch.device) -> Callable[[list[int]], torch.Tensor]:
    """Each step's real images by index. On a GPU the set goes to the device once (no host copy per step);
    elsewhere each batch is gathered from ``images`` where they are (a memory-mapped training set is never all
    copied into the process: before, a 60,000-face set at 128 px took 2.9 GB in each process)."""
    if device.type == "cuda":
        on_device = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        return lambda indices: on_device[indices]
    return lambda indices: torch.from_numpy(images.take(indices, axis=0)).to(device)


def batch_indices(n: int, batch: int, seed: int, info: DistInfo, start_step: int) -> Iterator[list[int]]:
    """This rank's image indices for each step from ``start_step`` on (epochs reshuffled by seed)."""
    sampler = DistributedSampler(
        range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True
    )
    per_epoch = len(sampler) // batch
    if per_epoch == 0:
        raise UserError(f"train.batch_size ({batch * info.world_size}) is larger than the training set ({n} images)")
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        order = list(sampler)
        for b in range(offset, per_epoch):
            yield order[b * batch : (b + 1) * batch]
        epoch, offset = epoch + 1, 0


@dataclass
class TrainState:
    config: NetConfig
    generator: nn.Module
    discriminator: nn.Module
    ema: EMA
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0
    seconds: float = 0.0  # trained so far, over every process that resumed this run
    history: list[dict[str, float]] = field(default_factory=list)


def build_state(config: NetConfig, t: TrainParams, device: torch.device) -> TrainState:
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    # channels_last: with NHWC weights and activations oneDNN (CPU) and cuDNN pick faster convolution kernels
    # (x1.28 per step here, README Speed). It changes float rounding, not the maths: runs stay deterministic and
    # exactly resumable. The training batches are NHWC arrays permuted to NCHW, so they already have this layout.
    g = build_generator(config).to(device, memory_format=torch.channels_last)
    d = build_discriminator(config).to(device, memory_format=torch.channels_last)
    return TrainState(
        config=config,
        generator=g,
        discriminator=d,
        ema=EMA(g, warmup=True),
        # foreach: one multi-tensor kernel per Adam operation instead of a Python loop over the parameters; the
        # same arithmetic (bit-identical results), but PyTorch uses it by default only for CUDA tensors.
        opt_g=torch.optim.Adam(g.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), foreach=True),
        opt_d=torch.optim.Adam(d.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), foreach=True),
    )


def fingerprint(
    config: NetConfig, t: TrainParams, data_version: str, precision: str, processes: int = 1
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the model, the optimisation (all but the step count), the
    arithmetic it ran in (``training_precision``: the same train.amp is bf16 on one machine, float32 on another),
    the data, and the number of processes (each draws its own part of a batch and its own random streams, and a
    dcgan's BatchNorm keeps statistics per process: a run resumed on another count would be neither run)."""
    optimisation = {k: v for k, v in semantic_values(t).items() if k != "steps"}
    return {"model": config.to_dict(), "train": optimisation, "precision": precision, "data": data_version,
            "processes": processes}  # fmt: skip


def _rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain values (a checkpoint holds nothing else)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }  # fmt: skip


def _set_rng_state(rng: dict[str, Any]) -> None:
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


def write_checkpoint(path: Path, state: TrainState, fp: dict[str, Any]) -> None:
    save_checkpoint(
        path,
        {
            "fingerprint": fp,
            "step": state.step,
            "seconds": state.seconds,
            "generator": state.generator.state_dict(),
            "discriminator": state.discriminator.state_dict(),
            "ema": state.ema.state_dict(),
            "opt_g": state.opt_g.state_dict(),
            "opt_d": state.opt_d.state_dict(),
            "history": state.history,
            "rng": _rng_state(),
        },
    )


def resume(path: Path, state: TrainState, fp: dict[str, Any], schedule: Schedule, device: torch.device) -> bool:
    """Restore ``state`` from the checkpoint at ``path`` if it matches ``fp``, at or before ``schedule.steps``."""
    payload = load_resumable(path, fp, schedule, "train", device)
    if payload is None:
        return False
    state.generator.load_state_dict(payload["generator"])
    state.discriminator.load_state_dict(payload["discriminator"])
    state.ema.load_state_dict(payload["ema"])
    state.opt_g.load_state_dict(payload["opt_g"])
    state.opt_d.load_state_dict(payload["opt_d"])
    state.step = int(payload["step"])
    state.seconds = float(payload["seconds"])
    state.history = list(payload["history"])
    _set_rng_state(payload["rng"])
    return True


@dataclass
class Hooks:
    """Callbacks of the main process: losses every log_every steps, sample grids."""

    on_log: Callable[[int, dict[str, float]], None] = lambda step, losses: None
    on_sample: Callable[[int, torch.Tensor], None] = lambda step, images: None


def fixed_latents(seed: int, z_dim: int, n: int = 64) -> torch.Tensor:
    """The latents of the sample grids: the same for every grid of a run."""
    gen = torch.Generator().manual_seed(seed + 12345)
    return torch.randn(n, z_dim, generator=gen)


def train_step(
    state: TrainState,
    t: TrainParams,
    real: torch.Tensor,
    generators: list[torch.Generator],
    nets: tuple[nn.Module, nn.Module] | None = None,
    world_size: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One discriminator update, one generator update and the EMA update on the batch ``real`` (model range).

    ``generators`` are the step's random streams (latents for D, latents for G, DiffAugment, penalty); ``nets`` the
    (generator, discriminator) to train through, e.g. their DDP wrappers. Returns (loss_d, loss_g) as detached
    tensors: reading them (``float``) makes the host wait for the device, so the loop does it only when it logs.
    """
    g, d = state.generator, state.discriminator
    g_train, d_train = nets or (g, d)
    gen_zd, gen_zg, gen_aug, gen_gp = generators
    per_rank, z_dim, device = len(real), state.config.z_dim, real.device
    # Discriminator: real and fake in one forward pass (one DDP reduction per backward).
    with torch.no_grad(), autocast_for(device, t.amp):
        fake = g(torch.randn(per_rank, z_dim, device=device, generator=gen_zd)).float()
    d.requires_grad_(True)
    with autocast_for(device, t.amp):
        both = diff_augment(torch.cat([real, fake]), t.diffaugment, gen_aug)
        logits = d_train(both).float()
        loss_d = d_loss(t.loss, logits[:per_rank], logits[per_rank:])
    if t.loss == "wgan-gp":
        loss_d = loss_d + gradient_penalty(d, both[:per_rank], both[per_rank:], t.gp_weight, generator=gen_gp)
    state.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_d.step()
    # Generator: D frozen and unwrapped (its grads are not needed, nor synchronised).
    d.requires_grad_(False)
    with autocast_for(device, t.amp):
        # float32 fakes, as in the D step: DiffAugment treats real and fake images at one precision.
        fake = g_train(torch.randn(per_rank, z_dim, device=device, generator=gen_zg)).float()
        loss_g = g_loss(t.loss, d(diff_augment(fake, t.diffaugment, gen_aug)).float())
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    if world_size > 1:
        # BatchNorm statistics are updated from each rank's own batch: keep rank 0's everywhere,
        # so that every rank holds the same model (and the EMA copies the same buffers).
        for buffer in [*g.buffers(), *d.buffers()]:
            dist.broadcast(buffer, src=0)
    state.ema.update(g, t.ema)
    return loss_d.detach(), loss_g.detach()


def train(
    model: ModelParams,
    t: TrainParams,
    images: np.ndarray,
    checkpoint: Path,
    data_version: str = "",
    info: DistInfo | None = None,
    hooks: Hooks | None = None,
    stop_after: int | None = None,
) -> TrainState:
    """Train on uint8 (N, S, S, 3) ``images`` to ``train.steps`` (or stop early after ``stop_after`` steps).

    The nets' resolution is the images' side S.
    """
    hooks = hooks or Hooks()
    info = info or DistInfo()
    apply_threads(t.threads, "train.threads")
    if t.batch_size % info.world_size:
        raise UserError(f"train.batch_size ({t.batch_size}) must divide evenly over {info.world_size} processes")
    try:
        config = net_config(model, images.shape[1], key="the training images' side")
    except ValueError as err:
        raise UserError(str(err)) from None
    device = init_distributed(info, t.device)
    state = build_state(config, t, device)
    fp = fingerprint(config, t, data_version, training_precision(device, t.amp), info.world_size)
    if resume(checkpoint, state, fp, t, device):
        log.info("resumed from %s at step %d", checkpoint, state.step)
    if info.world_size > 1:
        ddp_ids = [device.index] if device.type == "cuda" else None
        g_train: nn.Module = DistributedDataParallel(state.generator, device_ids=ddp_ids)
        d_train: nn.Module = DistributedDataParallel(state.discriminator, device_ids=ddp_ids)
    else:
        g_train, d_train = state.generator, state.discriminator
    d = state.discriminator
    real_batch = batch_reader(images, device)
    per_rank = t.batch_size // info.world_size
    order = batch_indices(len(images), per_rank, t.seed, info, state.step)
    z_fixed = fixed_latents(t.seed, config.z_dim)
    last = t.steps if stop_after is None else min(t.steps, state.step + stop_after)
    bar = progress_bar(total=t.steps, initial=state.step, desc="train", unit="step", disable=not info.is_main)
    clock, started, images_seen = TrainingClock(state.seconds), time.perf_counter(), 0

    with StopFlag() as stop, contextlib.closing(bar):
        while state.step < last:
            real = to_model_range(real_batch(next(order)))
            streams = step_generators(t.seed, info.rank, state.step, device)
            with stop.step_of_rank(info.is_main, state.step, checkpoint):
                loss_d, loss_g = train_step(state, t, real, streams, (g_train, d_train), info.world_size)
            state.step += 1
            state.seconds = clock.seconds()
            images_seen += t.batch_size

            if info.is_main:
                logs = state.step % t.log_every == 0 or state.step == t.steps
                checkpoints = state.step % t.checkpoint_every == 0 or state.step == last
                # The losses are read (a host sync on a GPU) only when they are logged or a checkpoint is due; a
                # divergence is caught there, before any checkpoint could keep non-finite weights.
                if logs or checkpoints:
                    losses = {"loss_d": float(loss_d), "loss_g": float(loss_g)}
                    if not all(math.isfinite(v) for v in losses.values()):
                        raise UserError(f"training diverged by step {state.step} ({losses}): lower train.lr_g/lr_d")
                if logs:
                    state.history.append({"step": state.step, **losses})
                    hooks.on_log(state.step, losses)
                    rate = images_seen / max(time.perf_counter() - started, 1e-9)
                    # refresh=False: the bar redraws at its own pace (every 30 s in a log), not at every step.
                    bar.set_postfix(loss_d=f"{losses['loss_d']:.3f}", loss_g=f"{losses['loss_g']:.3f}",
                                    img_s=f"{rate:.0f}", refresh=False)  # fmt: skip
                bar.update()
                if state.step % t.sample_every == 0 or state.step == t.steps:
                    hooks.on_sample(state.step, sample(state.ema.model, z_fixed))
                if checkpoints:
                    write_checkpoint(checkpoint, state, fp)
            save = (lambda: write_checkpoint(checkpoint, state, fp)) if info.is_main else None
            stop.stop_if_signalled(state.step, checkpoint, save)
    d.requires_grad_(True)
    state.history and log.info("step %d: %s", state.step, state.history[-1])
    return state
