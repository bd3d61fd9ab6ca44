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

from anime_avatar.gan.inference import latent, sample
from anime_avatar.gan.model_file import load_generator

ARTIFACT = "generator"  # the key of generator.pt in the model's artifacts


def seeds_and_truncations(model_input: Any) -> tuple[list[int], list[float]]:
    """The seeds and per-row truncations of a pyfunc input (a DataFrame, or a dict of columns)."""
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    if "seed" not in frame:
        raise ValueError("the input needs a 'seed' column (one avatar per row)")
    truncation = frame["truncation"] if "truncation" in frame else pd.Series(0.0, index=frame.index)
    return [int(s) for s in frame["seed"]], [float(t) for t in truncation.fillna(0.0)]


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Avatars by seed from the generator in the model's ``generator.pt`` artifact."""

    def load_context(self, context) -> None:  # context: mlflow.pyfunc.PythonModelContext
        self.generator = load_generator(context.artifacts[ARTIFACT]).net

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        seeds, truncations = seeds_and_truncations(model_input)
        if not seeds:
            side = self.generator.cfg.resolution
            return np.zeros((0, side, side, 3), dtype=np.uint8)
        z_dim = self.generator.z_dim
        z = torch.stack([latent(s, z_dim, t) for s, t in zip(seeds, truncations, strict=True)])
        return sample(self.generator, z).permute(0, 2, 3, 1).numpy()


mlflow.models.set_model(GeneratorModel())
