"""The generator as an MLflow pyfunc model, logged as code (MLflow's "models from code"): no pickle.

The logged model holds this file, the ``anime_avatar`` package (``code/``) and one artifact,
``generator.pt`` (tensors and plain values, read with ``weights_only=True``). Loading it runs this
file, which hands MLflow a :class:`GeneratorModel`; its ``load_context`` rebuilds the network
from the artifact. So ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work without
unpickling anything.

Input: a table with a ``seed`` column (int) and an optional ``truncation`` column (float, 0 = off),
one avatar per row. Output: uint8 images (N, H, W, 3), the same pixels ``anime-avatar generate``
writes for those seeds.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from anime_avatar.core.limits import LimitError, check_rows, check_seed, check_truncation
from anime_avatar.gan.inference import latent, sample
from anime_avatar.gan.model_file import load_generator
from anime_avatar.ops.pyfunc_guard import frame_of, refuse, turn

ARTIFACT = "generator"  # the key of generator.pt in the model's artifacts


def seeds_and_truncations(model_input: Any, side: int) -> tuple[list[int], list[float]]:
    """The seeds and per-row truncations of a pyfunc input (a DataFrame, or a dict of columns), checked against
    :mod:`anime_avatar.core.limits` (rows of ``side`` px, seeds, truncations), or BadRequest naming the problem."""
    frame = frame_of(model_input, ["seed"], "a whole number per row, one avatar per row")
    truncation = frame["truncation"] if "truncation" in frame else pd.Series(0.0, index=frame.index)
    try:
        check_rows(len(frame), side)
        seeds = [check_seed(s, f"row {i} seed") for i, s in enumerate(frame["seed"])]
        truncations = [0.0 if pd.isna(t) else check_truncation(t, f"row {i} truncation")  # missing: off
                       for i, t in enumerate(truncation)]  # fmt: skip
    except LimitError as err:
        raise refuse(err) from None
    return seeds, truncations


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Avatars by seed from the generator in the model's ``generator.pt`` artifact."""

    def load_context(self, context) -> None:  # context: mlflow.pyfunc.PythonModelContext
        self.generator = load_generator(context.artifacts[ARTIFACT]).net

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        side = self.generator.cfg.resolution
        seeds, truncations = seeds_and_truncations(model_input, side)
        if not seeds:
            return np.zeros((0, side, side, 3), dtype=np.uint8)
        z_dim = self.generator.z_dim
        with turn() as deadline:
            z = []
            for i, (s, t) in enumerate(zip(seeds, truncations, strict=True)):
                deadline.check(i, len(seeds))
                z.append(latent(s, z_dim, t))
            return sample(self.generator, torch.stack(z)).permute(0, 2, 3, 1).numpy()


mlflow.models.set_model(GeneratorModel())
