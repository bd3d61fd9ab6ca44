"""Optimisation-based style transfer (Gatys, Ecker & Bethge 2016): the image itself is the parameter.

Starting from the content image (not noise: it keeps the face from the first step and needs far fewer
steps, which is what makes 256 px affordable on a CPU), minimise

    content_weight * sum_l a_l MSE(F_l(x), F_l(c))
  + style_weight   * sum_l b_l ||G(T(F_l(x))) - G(T(F_l(s)))||^2
  + tv_weight      * TV(x)

with relative layer weights a_l, b_l (:func:`~anime_avatar.style.losses.relative_weights`) and T the
identity or the softmax transform. The softmax is applied in the style term only: in the content term it
flattened the face's feature map so much that the face was lost (measured). ``steps`` counts network
evaluations (forward + backward), the unit of cost, for both optimisers (L-BFGS spends several per
iteration in its line search).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from anime_avatar.core.params import GatysParams
from anime_avatar.core.progress import progress_bar
from anime_avatar.style.features import LAYERS, FeatureNet
from anime_avatar.style.losses import (
    content_loss,
    gram_matrix,
    relative_weights,
    softmax_transform,
    style_loss,
    tv_loss,
)


@dataclass(frozen=True)
class GatysResult:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    history: list[dict[str, float]]  # one entry per network evaluation: total, content, style, tv
    seconds: float


def _transform(softmax: bool, temperature: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return (lambda f: softmax_transform(f, temperature)) if softmax else (lambda f: f)


def gatys_transfer(
    content: torch.Tensor,
    style: torch.Tensor,
    features: FeatureNet,
    settings: GatysParams,
    softmax: bool,
    progress: bool = True,
) -> GatysResult:
    """Stylise ``content`` (1, 3, H, W) with ``style`` (1, 3, H', W'), both float in [0, 1].

    ``features`` must return the content and style layers of its network (:data:`LAYERS`).
    """
    choice = LAYERS[features.network]
    missing = sorted(set(choice.content + choice.style) - set(features.layers))
    if missing:
        raise ValueError(f"the feature network does not return the layers {missing}")
    transform = _transform(softmax, settings.temperature)
    started = time.perf_counter()
    with torch.no_grad():
        content_maps, style_maps = features(content), features(style)
        content_targets = {name: content_maps[name] for name in choice.content}
        style_targets = {name: gram_matrix(transform(style_maps[name])) for name in choice.style}
        content_w, style_w = relative_weights(content_targets, style_targets)

    image = content.detach().clone().requires_grad_(True)
    history: list[dict[str, float]] = []
    label = f"gatys-{features.network}{'-softmax' if softmax else ''}"
    bar = progress_bar(total=settings.steps, desc=label, unit="eval", leave=False, disable=not progress)

    def objective() -> torch.Tensor:
        maps = features(image)
        lc = sum(content_w[n] * content_loss(maps[n], content_targets[n]) for n in choice.content)
        ls = style_loss({n: gram_matrix(transform(maps[n])) for n in choice.style}, style_targets, style_w)
        lt = tv_loss(image)
        total = settings.content_weight * lc + settings.style_weight * ls + settings.tv_weight * lt
        history.append(
            {k: float(v.detach()) for k, v in (("total", total), ("content", lc), ("style", ls), ("tv", lt))}
        )
        bar.update()
        return total

    if settings.optimizer == "lbfgs":
        _run_lbfgs(image, objective, settings.steps)
    else:
        _run_adam(image, objective, settings.steps, settings.lr)
    bar.close()
    return GatysResult(image.detach().clamp(0.0, 1.0), history, time.perf_counter() - started)


def _run_lbfgs(image: torch.Tensor, objective: Callable[[], torch.Tensor], evaluations: int) -> None:
    """One L-BFGS call with a strong-Wolfe line search, stopped after ``evaluations`` objective calls.

    Pixels are not clamped during the run (it would break L-BFGS's curvature pairs); starting from the
    content and the TV term keep them near [0, 1], and the result is clamped once at the end.
    """
    optimizer = torch.optim.LBFGS(
        [image], lr=1.0, max_iter=evaluations, max_eval=evaluations, history_size=20,
        tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)


def _run_adam(image: torch.Tensor, objective: Callable[[], torch.Tensor], steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam([image], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        objective().backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
