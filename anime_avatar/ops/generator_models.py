"""The generator in MLflow: logged as a pyfunc model (registered as ``anime-avatar-generator``)."""

from __future__ import annotations

from pathlib import Path

from anime_avatar.artifacts.generator import read_generator
from anime_avatar.ops.tracking import log_code_model

# What the logged model imports (pyfunc_generator.py and its closure in anime_avatar), by distribution;
# tests/test_mlflow_model.py checks that the closure imports nothing else.
MODEL_DISTRIBUTIONS = ("mlflow", "torch", "numpy", "pandas", "pillow", "torchvision")


def log_generator_model(mlflow, generator_file: Path, model_name: str | None) -> str:
    """Log ``generator_file`` as an MLflow pyfunc model (code + tensors, no pickle) with a signature and an
    input example; registered as ``model_name`` unless that is None."""
    import pandas as pd

    from anime_avatar.ops import pyfunc_generator

    signature = generator_signature(int(read_generator(generator_file).config["resolution"]))
    example = pd.DataFrame({"seed": [0, 1], "truncation": [0.0, 0.7]})
    return log_code_model(mlflow, "generator", pyfunc_generator, (pyfunc_generator.ARTIFACT, generator_file), signature,
                   example, MODEL_DISTRIBUTIONS, model_name)  # fmt: skip


def generator_signature(resolution: int):  # -> mlflow.models.ModelSignature
    """Input: one row per avatar, ``seed`` (int) and optional ``truncation`` (float). Output: uint8 images."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs = Schema([ColSpec("long", "seed"), ColSpec("double", "truncation", required=False)])
    outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, resolution, resolution, 3))])
    return ModelSignature(inputs=inputs, outputs=outputs)
