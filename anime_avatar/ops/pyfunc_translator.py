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
from anime_avatar.ops.pyfunc_guard import BadRequest, frame_of, turn
from anime_avatar.ops.pyfunc_images import checked_images, checked_side, decode
from anime_avatar.translate.inference import translate_picture
from anime_avatar.translate.model_file import load_translator

ARTIFACT = "translator"  # the key of translator.pt in the model's artifacts
DEFAULT_TO = "anime"
DEFAULT_SIZE = 256


class TranslatorModel(mlflow.pyfunc.PythonModel):
    """Anime faces from face photos (or back) with the generators of the model's ``translator.pt`` artifact."""

    def load_context(self, context) -> None:  # context: mlflow.pyfunc.PythonModelContext
        path = context.artifacts[ARTIFACT]
        self.nets = {to: load_translator(path, to).net for to in ("anime", "photo")}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        params = params or {}
        to, size = str(params.get("to", DEFAULT_TO)), checked_side(params, DEFAULT_SIZE)
        if to not in self.nets:
            raise BadRequest(f"to {to!r}: choose anime or photo")
        frame = frame_of(model_input, ["photo"], "image bytes, one avatar per row")
        rows = checked_images(frame, ["photo"], size)
        side = self.nets[to].cfg.image_size
        images = []
        with turn() as deadline:
            for i, (photo,) in enumerate(rows):
                deadline.check(i, len(rows))
                square = center_square(decode(photo, f"row {i} photo image"), side)
                images.append(np.asarray(translate_picture(self.nets[to], square, size)))
        return np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)


mlflow.models.set_model(TranslatorModel())
