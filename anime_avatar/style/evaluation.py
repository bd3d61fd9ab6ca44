"""Every style-transfer method on one fixed set of (content, style) pairs, measured the same way.

Scores of one output, whichever loss its method optimised, all in the FID Inception's feature space:

* ``content_loss``: MSE of the mean-variance-normalised content-layer features of output and content
  (insensitive to the colour shift that stylising should cause; the attention net's content loss);
* ``style_loss``: feature mean/std distance to the style over the style layers (the nets' style loss);
* ``style_gram`` / ``style_gram_softmax``: relative Gram distance to the style, plain and after the
  softmax transform, averaged over the same layers (what the gatys-* methods minimise);
* ``structure`` (edge SSIM with the content, higher = better) and ``colour`` (Lab mean/std distance to
  the style, lower = closer): optimised by no method (:mod:`anime_avatar.metrics.stylize`).

The losses favour the methods that optimise them in the same network (gatys-inception* directly);
structure and colour are the unbiased ones. ``seconds`` is the wall time per image (Gatys: one
optimisation; nets: the median of repeated runs, style encoding included).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from anime_avatar.core.device import wait_for
from anime_avatar.core.progress import progress_bar
from anime_avatar.data.images import center_square
from anime_avatar.metrics.stylize import colour_distance, structure_score
from anime_avatar.nn.norm import mean_variance_norm
from anime_avatar.style.features import LAYERS, FeatureNet
from anime_avatar.style.images import resize_short, to_image, to_tensor
from anime_avatar.style.losses import gram_matrix, mean_std_loss, softmax_transform
from anime_avatar.style.nets import Stylizer
from anime_avatar.style.transfer import Method

SCORES = ("content_loss", "style_loss", "style_gram", "style_gram_softmax", "structure", "colour")


@dataclass(frozen=True)
class Pair:
    content_name: str
    style_name: str
    content: torch.Tensor  # (1, 3, S, S) in [0, 1]
    style: torch.Tensor  # (1, 3, S, S') in [0, 1], shorter side S

    @property
    def name(self) -> str:
        return f"{self.content_name}/{self.style_name}"


def make_pairs(contents: Sequence[tuple[str, Image.Image]], styles: Sequence[tuple[str, Image.Image]], size: int,
               device: torch.device | str = "cpu") -> list[Pair]:  # fmt: skip
    """Every content (square, ``size`` px) with every style (shorter side ``size`` px)."""

    content_tensors = [(name, to_tensor(center_square(image, size)).to(device)) for name, image in contents]
    style_tensors = [(name, to_tensor(resize_short(image, size)).to(device)) for name, image in styles]
    return [Pair(c, s, ct, st) for c, ct in content_tensors for s, st in style_tensors]


class Scorer:
    """The fixed yardstick: scores of one output against its pair, in the Inception's feature space."""

    def __init__(self, features: FeatureNet, temperature: float) -> None:
        choice = LAYERS[features.network]
        missing = sorted(set(choice.content + choice.style) - set(features.layers))
        if missing:
            raise ValueError(f"the scoring network does not return the layers {missing}")
        self.features, self.temperature = features, temperature
        self.content_layers, self.style_layers = choice.content, choice.style

    @torch.no_grad()
    def losses(self, output: torch.Tensor, pair: Pair) -> dict[str, float]:
        fo, fc, fs = self.features(output.clamp(0, 1)), self.features(pair.content), self.features(pair.style)
        content = sum(F.mse_loss(mean_variance_norm(fo[k]), mean_variance_norm(fc[k])) for k in self.content_layers)
        return {
            "content_loss": float(content),
            "style_loss": float(mean_std_loss(fo, fs, self.style_layers)),
            "style_gram": self._relative_gram(fo, fs, lambda f: f),
            "style_gram_softmax": self._relative_gram(fo, fs, lambda f: softmax_transform(f, self.temperature)),
        }

    def _relative_gram(self, fo: dict, fs: dict, transform: Callable[[torch.Tensor], torch.Tensor]) -> float:
        distances = []
        for name in self.style_layers:
            go, gs = gram_matrix(transform(fo[name])), gram_matrix(transform(fs[name]))
            distances.append(float((go - gs).square().sum() / gs.square().sum().clamp_min(1e-12)))
        return sum(distances) / len(distances)

    def scores(self, output: torch.Tensor, pair: Pair) -> dict[str, float]:
        output = output.clamp(0, 1)
        return {
            **self.losses(output, pair),
            "structure": float(structure_score(pair.content, output)[0]),
            "colour": float(colour_distance(output, pair.style)[0]),
        }


@dataclass
class MethodResult:
    """One method over every pair: its outputs, mean scores and seconds per image."""

    name: str
    outputs: list[torch.Tensor] = field(default_factory=list)
    per_pair: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        keys = [k for k in (*SCORES, "seconds") if self.per_pair and k in self.per_pair[0]]
        summary = {k: round(statistics.fmean(p[k] for p in self.per_pair), 6) for k in keys}
        return {**summary, "pairs": len(self.per_pair)}


def timed(method: Method, pair: Pair, repeats: int) -> tuple[torch.Tensor, float]:
    """The method's output on ``pair`` and its median wall time over ``repeats`` runs (on a GPU, until its work
    is done)."""
    seconds, output = [], None
    for _ in range(repeats):
        wait_for(pair.content.device)
        started = time.perf_counter()
        output = method(pair.content, pair.style)
        wait_for(output.device)
        seconds.append(time.perf_counter() - started)
    assert output is not None
    return output, statistics.median(seconds)


def run_method(name: str, method: Method, pairs: Sequence[Pair], scorer: Scorer, repeats: int) -> MethodResult:
    """Run one method on every pair (``repeats`` times each, for its timing) and score its outputs."""
    result = MethodResult(name)
    for pair in progress_bar(iterable=pairs, desc=name, unit="pair", leave=False):
        output, seconds = timed(method, pair, repeats)
        result.outputs.append(output.clamp(0, 1).cpu())
        result.per_pair.append({**scorer.scores(output, pair), "seconds": seconds})
    return result


def unchanged(pairs: Sequence[Pair], scorer: Scorer) -> MethodResult:
    """The content itself scored as an output: the do-nothing baseline every method should beat on style."""
    result = MethodResult("unchanged")
    for pair in pairs:
        result.outputs.append(pair.content.cpu())
        result.per_pair.append(scorer.scores(pair.content, pair))
    return result


def tradeoff(net: Stylizer, pairs: Sequence[Pair], scorer: Scorer, alphas: Sequence[float]) -> list[dict[str, float]]:
    """Mean content and style loss over the pairs at each style strength ``alpha`` (fused features blended
    with the content's): the net's content/style trade-off curve."""
    points = []
    for alpha in alphas:
        losses = []
        for pair in pairs:
            with torch.no_grad():
                output = net(pair.content, pair.style, alpha=alpha).clamp(0, 1)
            losses.append(scorer.losses(output, pair))
        points.append({"alpha": alpha, "content_loss": statistics.fmean(x["content_loss"] for x in losses),
                       "style_loss": statistics.fmean(x["style_loss"] for x in losses)})  # fmt: skip
    return points


def style_at_equal_content(candidate: list[dict[str, float]], baseline: list[dict[str, float]]) -> dict[str, float]:
    """The candidate's style loss relative to the baseline's at equal content loss.

    Each baseline point whose content loss lies within the candidate curve's content range is compared
    with the candidate's style loss interpolated (linearly, in content loss) at that content loss:
    ``style_loss_ratio`` is the mean ratio candidate/baseline (< 1: the candidate stylises more for the same
    content kept) over ``matched_points`` such points (0 when the curves' content ranges do not overlap).
    Always given: the pair of points closest in content loss, one per curve (``nearest_*``), and the ratio of
    their style losses, so a comparison exists even without overlap.
    """
    ordered = sorted(candidate, key=lambda p: p["content_loss"])
    xs = np.array([p["content_loss"] for p in ordered])
    ys = np.array([p["style_loss"] for p in ordered])
    near_c, near_b = min(((c, b) for c in candidate for b in baseline),
                         key=lambda cb: abs(cb[0]["content_loss"] - cb[1]["content_loss"]))  # fmt: skip
    found = {
        "nearest_candidate_alpha": near_c["alpha"], "nearest_candidate_content_loss": near_c["content_loss"],
        "nearest_baseline_alpha": near_b["alpha"], "nearest_baseline_content_loss": near_b["content_loss"],
        "nearest_style_loss_ratio": round(near_c["style_loss"] / near_b["style_loss"], 4),
    }  # fmt: skip
    matched = [p for p in baseline if xs[0] <= p["content_loss"] <= xs[-1]]
    if not matched:
        return {"matched_points": 0, **found}
    ratios = [float(np.interp(p["content_loss"], xs, ys)) / p["style_loss"] for p in matched]
    return {"matched_points": len(matched), "style_loss_ratio": round(statistics.fmean(ratios), 4), **found}


def seconds_with_cached_style(net: Stylizer, pairs: Sequence[Pair], repeats: int) -> float:
    """A net's median seconds per image when the style's features are computed once beforehand (as when
    many contents share one style): the encoder then runs on the content only."""
    seconds = []
    for pair in pairs:
        style_features = net.encode(pair.style)
        for _ in range(repeats):
            wait_for(pair.content.device)
            started = time.perf_counter()
            with torch.no_grad():
                output = net(pair.content, style_features=style_features)
            wait_for(output.device)
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def comparison_sheet(pairs: Sequence[Pair], results: Sequence[MethodResult], cell: int = 192) -> Image.Image:
    """One row per pair: content | style | each method's output, labelled at the top."""
    labels = ["content", "style", *(r.name for r in results)]
    top = 16
    sheet = Image.new("RGB", (len(labels) * cell, top + len(pairs) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(labels):
        draw.text((j * cell + 4, 2), label, fill="black")
    for i, pair in enumerate(pairs):
        row = [pair.content, pair.style, *(r.outputs[i] for r in results)]
        for j, tensor in enumerate(row):
            image = to_image(tensor)
            scale = cell / max(image.size)  # fit the cell, up or down
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.LANCZOS)  # fmt: skip
            sheet.paste(image, (j * cell + (cell - image.width) // 2, top + i * cell + (cell - image.height) // 2))
    return sheet
