"""The stylizer's training loop: every net of ``stylize.methods`` (attention, AdaIN) on the same batches.

Each step draws one batch (:class:`~anime_avatar.style.data.StyleBatches`, a pure function of the seed
and the step), encodes it once with the frozen encoder, and updates each net with its losses:

* content: attention -> MSE of the mean-variance-normalised encoder features of output and content at
  both fusion scales (SANet: normalised, so it does not fight the style's statistics); AdaIN -> MSE of the
  output's features and the AdaIN target (Huang & Belongie), the features its decoder should invert;
* style: mean/std matching over the training style layers (the same for both nets);
* identity: the net fed (content, content) must give back the content, and (style, style) the style, in
  pixels and in every encoder layer: this is what teaches the decoder to keep the face;
* adversarial (``stylize.adversarial_weight`` > 0): hinge loss (:mod:`anime_avatar.nn.losses`) of a patch
  discriminator on style images.

Exact resume: the checkpoint holds each net's weights and optimiser (and discriminator), the step and
the loss history; nothing else is random, so a resumed run gives bit-identical weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from anime_avatar.artifacts.checkpoint import Schedule, load_resumable, save_checkpoint
from anime_avatar.core.device import apply_threads, resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.loops import StopFlag, TrainingClock
from anime_avatar.core.params import StylizeParams, semantic_values
from anime_avatar.core.progress import progress_bar
from anime_avatar.nn.losses import d_loss, g_loss
from anime_avatar.nn.norm import mean_variance_norm
from anime_avatar.style.data import StyleBatches
from anime_avatar.style.features import LAYERS, FeatureMaps, FeatureNet, build_features
from anime_avatar.style.losses import mean_std_loss
from anime_avatar.style.nets import FusionHead, PatchDiscriminator, fusion_config

log = logging.getLogger(__name__)

LOSS_PARTS = ("total", "content", "style", "id_pixel", "id_feature")
ADVERSARIAL_PARTS = ("adversarial", "d_loss")  # logged too when stylize.adversarial_weight > 0


def loss_parts(cfg: StylizeParams) -> tuple[str, ...]:
    """The losses each net logs under these params."""
    return LOSS_PARTS + (ADVERSARIAL_PARTS if cfg.adversarial_weight > 0 else ())


@dataclass
class NetState:
    """One net being trained: its head, optimiser and optional discriminator."""

    head: FusionHead
    optimizer: torch.optim.Optimizer
    discriminator: PatchDiscriminator | None = None
    d_optimizer: torch.optim.Optimizer | None = None

    def state_dict(self) -> dict[str, Any]:
        state = {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.discriminator is not None and self.d_optimizer is not None:
            state |= {"discriminator": self.discriminator.state_dict(), "d_optimizer": self.d_optimizer.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.discriminator is not None and self.d_optimizer is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])


@dataclass
class StyleTrainState:
    nets: dict[str, NetState]  # by method, in stylize.methods order
    encoder: FeatureNet  # the fusion scales and the training style layers
    step: int = 0
    seconds: float = 0.0  # trained so far, over every process that resumed this run
    history: list[dict[str, float]] = field(default_factory=list)


def loss_layers(network: str) -> tuple[str, ...]:
    choice = LAYERS[network]
    return tuple(dict.fromkeys(choice.fusion_scales + choice.training_style))


def build_state(cfg: StylizeParams, encoder: FeatureNet) -> StyleTrainState:
    """Fresh nets and optimisers; each net's initial weights depend only on the seed (not on the others)."""
    scales = LAYERS[encoder.network].fusion_scales
    nets = {}
    for method in cfg.methods:
        torch.manual_seed(cfg.seed)
        head = FusionHead(fusion_config(method, encoder, scales, cfg.key_dim, cfg.max_keys, cfg.decoder_width))
        head = head.to(_device_of(encoder))
        net = NetState(head, torch.optim.Adam(head.parameters(), lr=cfg.lr))
        if cfg.adversarial_weight > 0:
            net.discriminator = PatchDiscriminator().to(_device_of(encoder))
            net.d_optimizer = torch.optim.Adam(net.discriminator.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
        nets[method] = net
    return StyleTrainState(nets, encoder)


def _device_of(encoder: FeatureNet) -> torch.device:
    return next(iter(encoder.frozen.parameters())).device


def fingerprint(cfg: StylizeParams, data_version: str) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: every output-changing key but the step count, and the data."""
    return {"stylize": {k: v for k, v in semantic_values(cfg).items() if k != "steps"}, "data": data_version}


def net_losses(net: NetState, cfg: StylizeParams, encoder: FeatureNet, content: torch.Tensor, style: torch.Tensor,
               fc: FeatureMaps, fs: FeatureMaps) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:  # fmt: skip
    """One net's total loss, its parts and its stylised batch (``fc``/``fs``: the batch's encoder features)."""
    size = (content.shape[-2], content.shape[-1])
    scales = net.head.cfg.scales
    out, fused = net.head(fc, fs, size)
    fo = encoder(out)
    if net.head.cfg.method == "attention":
        lc = sum(F.mse_loss(mean_variance_norm(fo[k]), mean_variance_norm(fc[k])) for k in scales)
    else:
        lc = sum(F.mse_loss(fo[k], fused[k].detach()) for k in scales)
    ls = mean_std_loss(fo, fs, LAYERS[encoder.network].training_style)
    from_content, _ = net.head(fc, fc, size)
    from_style, _ = net.head(fs, fs, size)
    l_pixel = F.mse_loss(from_content, content) + F.mse_loss(from_style, style)
    f_content, f_style = encoder(from_content), encoder(from_style)
    l_feature = sum(F.mse_loss(f_content[k], fc[k]) + F.mse_loss(f_style[k], fs[k]) for k in encoder.layers)
    total = (cfg.content_weight * lc + cfg.style_weight * ls + cfg.identity_pixel_weight * l_pixel
             + cfg.identity_feature_weight * l_feature)  # fmt: skip
    parts = {name: float(value.detach()) for name, value in
             (("content", lc), ("style", ls), ("id_pixel", l_pixel), ("id_feature", l_feature))}  # fmt: skip
    if net.discriminator is not None:
        l_adv = g_loss("hinge", net.discriminator(out))
        total = total + cfg.adversarial_weight * l_adv
        parts["adversarial"] = float(l_adv.detach())
    parts["total"] = float(total.detach())
    return total, parts, out


def discriminator_step(net: NetState, style: torch.Tensor, fake: torch.Tensor) -> float:
    assert net.discriminator is not None and net.d_optimizer is not None
    loss = d_loss("hinge", net.discriminator(style), net.discriminator(fake.detach()))
    net.d_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    net.d_optimizer.step()
    return float(loss.detach())


def train_step(state: StyleTrainState, cfg: StylizeParams, batches: StyleBatches) -> dict[str, float]:
    """One step: every net updated on the same batch; returns ``<method>_<part>`` losses."""
    device = _device_of(state.encoder)
    content, style = (t.to(device) for t in batches.batch(cfg.seed, state.step, cfg.batch_size))
    with torch.no_grad():
        fc, fs = state.encoder(content), state.encoder(style)
    losses: dict[str, float] = {}
    for method, net in state.nets.items():
        net.head.train()
        total, parts, out = net_losses(net, cfg, state.encoder, content, style, fc, fs)
        net.optimizer.zero_grad(set_to_none=True)
        total.backward()
        net.optimizer.step()
        if net.discriminator is not None:
            parts["d_loss"] = discriminator_step(net, style, out)
        losses |= {f"{method}_{name}": value for name, value in parts.items()}
    state.step += 1
    return losses


def write_checkpoint(path: Path, state: StyleTrainState, fp: dict[str, Any]) -> None:
    nets = {method: net.state_dict() for method, net in state.nets.items()}
    payload = {"step": state.step, "seconds": state.seconds, "history": state.history, "nets": nets}
    save_checkpoint(path, {"fingerprint": fp, **payload})


def resume(path: Path, state: StyleTrainState, fp: dict[str, Any], schedule: Schedule, device: torch.device) -> bool:
    """Restore ``state`` from ``path`` if it was made with the same params and data, at or before ``schedule.steps``."""
    payload = load_resumable(path, fp, schedule, "stylize", device)
    if payload is None:
        return False
    for method, net in state.nets.items():
        net.load_state_dict(payload["nets"][method])
    state.step = int(payload["step"])
    state.seconds = float(payload["seconds"])
    state.history = list(payload["history"])
    return True


LogHook = Callable[[int, dict[str, float]], None]


def train_stylizers(
    cfg: StylizeParams,
    batches: StyleBatches,
    checkpoint: Path,
    data_version: str = "",
    on_log: LogHook | None = None,
    stop_after: int | None = None,
) -> StyleTrainState:
    """Train every net of ``cfg.methods`` to ``cfg.steps`` (or stop early after ``stop_after`` steps),
    resuming from ``checkpoint`` when it matches."""
    apply_threads(cfg.threads, "stylize.threads")
    device = resolve_device(cfg.device, key="stylize.device")
    encoder = build_features(cfg.features, loss_layers(cfg.features), device)
    state = build_state(cfg, encoder)
    fp = fingerprint(cfg, data_version)
    if resume(checkpoint, state, fp, cfg, device):
        log.info("resumed from %s at step %d", checkpoint, state.step)
    last = cfg.steps if stop_after is None else min(cfg.steps, state.step + stop_after)
    bar = progress_bar(total=cfg.steps, initial=state.step, desc="stylizer", unit="step")
    clock = TrainingClock(state.seconds)
    with StopFlag() as stop, contextlib.closing(bar):
        while state.step < last:
            losses = train_step(state, cfg, batches)
            state.seconds = clock.seconds()
            if not all(math.isfinite(v) for v in losses.values()):
                raise UserError(f"stylizer training diverged at step {state.step} ({losses}): lower stylize.lr")
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                state.history.append({"step": state.step, **losses})
                if on_log:
                    on_log(state.step, losses)
            totals = {m: f"{losses[f'{m}_total']:.3f}" for m in state.nets}
            bar.set_postfix(totals, refresh=False)
            bar.update()
            if state.step % cfg.checkpoint_every == 0 or state.step == last:
                write_checkpoint(checkpoint, state, fp)
            stop.stop_if_signalled(state.step, checkpoint, lambda: write_checkpoint(checkpoint, state, fp))
    for net in state.nets.values():
        net.head.eval()
    return state
