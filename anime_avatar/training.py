"""The GAN training loop: one D and one G update per step, EMA, DiffAugment, checkpoints, DDP.

Reproducibility: every random draw of a step (latents, DiffAugment, gradient-penalty
mixing) comes from generators seeded by (train.seed, rank, step), and the data order
from a DistributedSampler seeded by train.seed and the epoch. So a run interrupted
at any step and resumed from its checkpoint gives the same weights as an
uninterrupted one, on one process or many.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import parametrize
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from anime_avatar.diffaugment import diff_augment
from anime_avatar.ema import EMA
from anime_avatar.errors import UserError
from anime_avatar.fsutil import atomic_write_bytes
from anime_avatar.losses import d_loss, g_loss, gradient_penalty
from anime_avatar.nets import NetConfig, build_discriminator, build_generator
from anime_avatar.params import Params

log = logging.getLogger(__name__)

# Purposes of the per-step random streams (part of their seeds).
_LATENT_D, _LATENT_G, _AUGMENT, _PENALTY = range(4)
CHECKPOINT_VERSION = 1


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device is {spec!r} but no CUDA device is available (use auto or cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"train.device is {spec!r} but MPS is not available (use auto or cpu)")
    return device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistInfo:
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )


def init_distributed(info: DistInfo, device_spec: str) -> torch.device:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs) and pick this rank's device."""
    device = resolve_device(device_spec)
    if info.world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def step_generator(seed: int, rank: int, step: int, purpose: int, device: torch.device) -> torch.Generator:
    state = np.random.SeedSequence([seed, rank, step, purpose]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


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


def to_model_range(images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    return images_uint8_nhwc.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> uint8, same layout."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


@dataclass
class TrainState:
    generator: nn.Module
    discriminator: nn.Module
    ema: EMA
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def build_state(params: Params, device: torch.device) -> TrainState:
    torch.manual_seed(params.train.seed)  # the same initial weights on every rank
    cfg = params.net_config()
    g = build_generator(cfg).to(device)
    d = build_discriminator(cfg).to(device)
    t = params.train
    return TrainState(
        generator=g,
        discriminator=d,
        ema=EMA(g, warmup=True),
        opt_g=torch.optim.Adam(g.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2)),
        opt_d=torch.optim.Adam(d.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2)),
    )


def fingerprint(params: Params, data_version: str) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the model, the optimisation, the data."""
    keep = params.train.model_dump(exclude={"steps", "checkpoint_every", "sample_every", "log_every", "device",
                                            "threads"})  # fmt: skip
    return {"model": asdict(params.net_config()), "train": keep, "data": data_version}


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save through a temporary file, so a crash never leaves a truncated file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path: Path, state: TrainState, fp: dict[str, Any]) -> None:
    payload = {
        "version": CHECKPOINT_VERSION,
        "fingerprint": fp,
        "step": state.step,
        "generator": state.generator.state_dict(),
        "discriminator": state.discriminator.state_dict(),
        "ema": state.ema.state_dict(),
        "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(),
        "history": state.history,
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    atomic_torch_save(path, payload)


def load_checkpoint(path: Path, state: TrainState, fp: dict[str, Any], device: torch.device) -> bool:
    """Restore ``state`` from ``path`` if it exists and matches ``fp``; say why when it does not."""
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a damaged file must not stop training: start over, and say so
        log.warning("ignoring unreadable checkpoint %s (%s): starting from step 0", path, err)
        return False
    if payload.get("version") != CHECKPOINT_VERSION or payload.get("fingerprint") != fp:
        log.info("checkpoint %s was made with other params or data: starting from step 0", path)
        return False
    state.generator.load_state_dict(payload["generator"])
    state.discriminator.load_state_dict(payload["discriminator"])
    state.ema.load_state_dict(payload["ema"])
    state.opt_g.load_state_dict(payload["opt_g"])
    state.opt_d.load_state_dict(payload["opt_d"])
    state.step = int(payload["step"])
    state.history = list(payload["history"])
    rng = payload["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return True


class StopFlag:
    """Turns SIGINT/SIGTERM into a request to stop after the current step (and checkpoint)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingInterrupted(UserError):
    pass


def autocast_for(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA GPUs that support it; full precision elsewhere (CPU, MPS)."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Hooks:
    """Callbacks of the main process: losses every log_every steps, sample grids, checkpoints."""

    on_log: Callable[[int, dict[str, float]], None] = lambda step, losses: None
    on_sample: Callable[[int, torch.Tensor], None] = lambda step, images: None


def fixed_latents(params: Params, n: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(params.train.seed + 12345)
    return torch.randn(n, params.model.z_dim, generator=gen)


def grid_png(images: torch.Tensor, nrow: int = 8) -> bytes:
    """A PNG grid of uint8 (N, 3, H, W) images."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    buf = io.BytesIO()
    to_pil_image(make_grid(images, nrow=nrow, padding=2)).save(buf, format="PNG")
    return buf.getvalue()


@torch.no_grad()
def sample(generator: nn.Module, z: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """uint8 (N, 3, H, W) images from latents, in batches, on the generator's device."""
    device = next(generator.parameters()).device
    out = [to_uint8(generator(z[i : i + batch].to(device))).cpu() for i in range(0, len(z), batch)]
    return torch.cat(out)


def train(
    params: Params,
    images: np.ndarray,
    checkpoint: Path,
    data_version: str = "",
    info: DistInfo = DistInfo(),
    hooks: Hooks | None = None,
    stop_after: int | None = None,
) -> TrainState:
    """Train to ``train.steps`` (or stop early after ``stop_after`` steps, checkpointing)."""
    t = params.train
    hooks = hooks or Hooks()
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.batch_size % info.world_size:
        raise UserError(f"train.batch_size ({t.batch_size}) must divide evenly over {info.world_size} processes")
    device = init_distributed(info, t.device)
    state = build_state(params, device)
    fp = fingerprint(params, data_version)
    if load_checkpoint(checkpoint, state, fp, device):
        log.info("resumed from %s at step %d", checkpoint, state.step)
    if info.world_size > 1:
        ddp_ids = [device.index] if device.type == "cuda" else None
        g_train: nn.Module = DistributedDataParallel(state.generator, device_ids=ddp_ids)
        d_train: nn.Module = DistributedDataParallel(state.discriminator, device_ids=ddp_ids)
    else:
        g_train, d_train = state.generator, state.discriminator
    g, d = state.generator, state.discriminator
    data = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    per_rank = t.batch_size // info.world_size
    order = batch_indices(len(data), per_rank, t.seed, info, state.step)
    z_dim = params.model.z_dim
    z_fixed = fixed_latents(params)
    last = t.steps if stop_after is None else min(t.steps, state.step + stop_after)
    bar = tqdm(total=t.steps, initial=state.step, desc="train", unit="step", disable=not info.is_main)
    started, images_seen = time.perf_counter(), 0

    def generators(step: int) -> list[torch.Generator]:
        return [step_generator(t.seed, info.rank, step, p, device) for p in (_LATENT_D, _LATENT_G, _AUGMENT, _PENALTY)]

    with StopFlag() as stop:
        while state.step < last:
            step = state.step
            gen_zd, gen_zg, gen_aug, gen_gp = generators(step)
            real = to_model_range(data[next(order)])
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
                fake = g_train(torch.randn(per_rank, z_dim, device=device, generator=gen_zg))
                loss_g = g_loss(t.loss, d(diff_augment(fake, t.diffaugment, gen_aug)).float())
            state.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            state.opt_g.step()
            if info.world_size > 1:
                # BatchNorm statistics are updated from each rank's own batch: keep rank 0's everywhere,
                # so that every rank holds the same model (and the EMA copies the same buffers).
                for buffer in [*g.buffers(), *d.buffers()]:
                    dist.broadcast(buffer, src=0)
            state.ema.update(g, t.ema)
            state.step += 1
            images_seen += t.batch_size

            if info.is_main:
                losses = {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}
                if not all(math.isfinite(v) for v in losses.values()):
                    raise UserError(f"training diverged at step {state.step} ({losses}): lower train.lr_g/lr_d")
                if state.step % t.log_every == 0 or state.step == t.steps:
                    state.history.append({"step": state.step, **losses})
                    hooks.on_log(state.step, losses)
                rate = images_seen / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss_d=f"{losses['loss_d']:.3f}", loss_g=f"{losses['loss_g']:.3f}", img_s=f"{rate:.0f}")
                bar.update()
                if state.step % t.sample_every == 0 or state.step == t.steps:
                    hooks.on_sample(state.step, sample(state.ema.model, z_fixed))
                if state.step % t.checkpoint_every == 0 or state.step == last:
                    save_checkpoint(checkpoint, state, fp)
            if stop.signal is not None:
                if info.is_main:
                    save_checkpoint(checkpoint, state, fp)
                bar.close()
                raise TrainingInterrupted(
                    f"stopped by signal {stop.signal} at step {state.step}; checkpoint {checkpoint} saved, "
                    "run the stage again to resume"
                )
    bar.close()
    d.requires_grad_(True)
    state.history and log.info("step %d: %s", state.step, state.history[-1])
    return state


def generator_payload(state: TrainState, cfg: NetConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """What models/generator.pt holds: the config to rebuild the net, EMA and raw weights."""
    return {
        "config": asdict(cfg),
        "ema": state.ema.model.state_dict(),
        "generator": state.generator.state_dict(),
        "step": state.step,
        **extra,
    }


def plain_generator(generator: nn.Module) -> nn.Module:
    """A copy with spectral-norm parametrizations baked into plain weights: the same function in
    eval mode, and picklable (parametrized modules are not), for MLflow's model format."""
    # A fresh build, not a deepcopy: copies of parametrized modules do not survive un-parametrizing.
    plain = build_generator(generator.cfg)
    plain.load_state_dict({k: v.cpu() for k, v in generator.state_dict().items()})
    plain.eval()
    targets = [(m, list(m.parametrizations.keys())) for m in plain.modules() if parametrize.is_parametrized(m)]
    for module, names in targets:  # listed first: removal swaps each module's class
        for name in names:
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return plain.requires_grad_(False)


def load_generator(path: Path, device: torch.device | str = "cpu", use_ema: bool = True) -> nn.Module:
    """Rebuild a generator saved by the train stage (EMA weights by default), in eval mode."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such generator file (run the train stage first: dvc repro train)")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
        cfg = NetConfig(**payload["config"])
    except Exception as err:
        raise UserError(f"{path}: not a generator saved by the train stage ({err})") from None
    g = build_generator(cfg).to(device)
    g.load_state_dict(payload["ema" if use_ema else "generator"])
    g.trained_steps = int(payload.get("step", 0))  # the step FID is logged at
    return g.eval().requires_grad_(False)
