"""Exponential moving average of the generator's weights (Karras et al. 2018; Yazici et al. 2019).

Samples from the averaged generator are usually smoother and better (lower FID) than
from the live one, at no training cost. After every generator step::

    ema.update(G, decay)        # p_ema <- decay * p_ema + (1 - decay) * p

Buffers (BatchNorm running statistics, spectral norm's u/v vectors) are copied, not
averaged, so the copy is always in a state the module can use.

Warm-up: early weights are poor, and a decay of 0.999 would keep their trace for
thousands of steps. With ``warmup=True`` the decay actually used is
``min(decay, (1 + step) / (10 + step))`` (0.1 on the first update, 0.5 after 8, 0.9
after 80, ...), where ``step`` counts the updates so far (saved in the state dict).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn


class EMA:
    """A frozen, eval-mode deep copy of a model whose weights trail the live model's."""

    def __init__(self, model: nn.Module, warmup: bool = False) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.warmup = warmup
        self.step = 0

    def decay_at(self, decay: float) -> float:
        """The decay the next ``update`` will use (warm-up applied)."""
        if self.warmup:
            return min(decay, (1 + self.step) / (10 + self.step))
        return decay

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> float:
        """Blend ``model``'s parameters into the average, copy its buffers; returns the decay used."""
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1] (got {decay})")
        decay = self.decay_at(decay)
        ema_params = dict(self.model.named_parameters())
        params = dict(model.named_parameters())
        if ema_params.keys() != params.keys():
            raise ValueError("EMA.update: the model's parameters do not match the averaged copy's")
        averaged = [ema_params[name] for name in params]
        # mul + add rather than lerp: decay 0 copies p exactly, decay 1 leaves p_ema exactly. The _foreach_ forms
        # do the same arithmetic on all tensors in one call each, instead of two Python-dispatched ops per tensor.
        torch._foreach_mul_(averaged, decay)
        torch._foreach_add_(averaged, [p.detach() for p in params.values()], alpha=1.0 - decay)
        ema_buffers = dict(self.model.named_buffers())
        buffers = dict(model.named_buffers())
        if ema_buffers.keys() != buffers.keys():
            raise ValueError("EMA.update: the model's buffers do not match the averaged copy's")
        if buffers:
            torch._foreach_copy_([ema_buffers[name] for name in buffers], list(buffers.values()))
        self.step += 1
        return decay

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """Run the averaged model (in eval mode)."""
        return self.model(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "step": self.step, "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.step = int(state.get("step", 0))
        self.warmup = bool(state.get("warmup", self.warmup))
