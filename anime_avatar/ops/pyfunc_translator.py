"""The photo -> anime translator as an MLflow pyfunc model, logged as code (MLflow's "models from code"): no pickle.

The logged model holds this file, the ``anime_avatar`` package (``code/``) and one artifact,
``translator.pt`` (tensors and plain values, read with ``weights_only=True``).

Input: a table with a ``photo`` column of image files' bytes (PNG, JPEG...; base64 strings when served over
JSON), one avatar per row; each should be a face crop (``anime-avatar avatar`` finds and crops the face
first). Params: ``to`` (``anime``, the default, or ``photo`` for the way back) and ``size`` (the output side,
default 256). Output: uint8 images (N, size, size, 3): the picture's central square translated, the pixels
``anime-avatar translate`` writes.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from anime_avatar.data.images import center_square
from anime_avatar.ops.pyfunc_stylizer import decode_image
from anime_avatar.translate.inference import translate_picture
from anime_avatar.translate.model_file import load_translator

ARTIFACT = "translator"  # the key of translator.pt in the model's artifacts
DEFAULT_TO = "anime"
DEFAULT_SIZE = 256
MAX_SIZE = 1024


class TranslatorModel(mlflow.pyfunc.PythonModel):
    """Anime faces from face photos (or back) with the generators of the model's ``translator.pt`` artifact."""

    def load_context(self, context) -> None:  # context: mlflow.pyfunc.PythonModelContext
        path = context.artifacts[ARTIFACT]
        self.nets = {to: load_translator(path, to).net for to in ("anime", "photo")}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        params = params or {}
        to, size = str(params.get("to", DEFAULT_TO)), int(params.get("size", DEFAULT_SIZE))
        if to not in self.nets:
            raise ValueError(f"to {to!r}: choose anime or photo")
        if not 1 <= size <= MAX_SIZE:
            raise ValueError(f"size {size}: must lie in 1..{MAX_SIZE}")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "photo" not in frame.columns:
            raise ValueError("the input needs a 'photo' column (image bytes, one avatar per row)")
        side = self.nets[to].cfg.image_size
        images = [np.asarray(translate_picture(self.nets[to], center_square(decode_image(p), side), size))
                  for p in frame["photo"]]  # fmt: skip
        return np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)


mlflow.models.set_model(TranslatorModel())
