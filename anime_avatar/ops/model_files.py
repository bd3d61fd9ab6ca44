"""The weights file of a model logged to MLflow, fetched once and kept in the download cache."""

from __future__ import annotations

import tempfile
from pathlib import Path

from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.fsutil import atomic_write_bytes, sha256_file
from anime_avatar.data.fetch import cache_dir

# MLflow's answer to an alias that does not exist is INVALID_PARAMETER_VALUE ("Registered model alias X not found").
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST",)


class ModelNotFound(UserError):
    """The tracking store has no such model, version, alias or run, or there is no store: a command may fall back
    on a default. Any other failure (a store that does not answer, files missing) is a plain UserError."""


class NoModelFiles(Exception):
    """The store knows the model, but nothing is where it keeps its files."""


def model_file(uri: str, filename: str) -> Path | None:
    """The ``artifacts/<filename>`` of the logged MLflow model ``uri`` (e.g. ``runs:/ID/stylizer``), kept in the
    download cache under its sha256; None when the model holds no such file. MLflow downloads the whole model
    folder: into a temporary folder, removed once the file is kept (each use once left its copy in /tmp). MLflow's
    own errors (no such run, model or version; a store that does not answer) go to the caller, and so does
    :class:`NoModelFiles` for a model whose files are not where the store says (MLflow returns an empty folder)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="anime-avatar-model-") as scratch:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=scratch))
        if folder.is_dir() and not any(folder.iterdir()):
            raise NoModelFiles(uri)
        weights = folder / "artifacts" / filename
        if not weights.is_file():
            return None
        kept = cache_dir() / "models" / f"{sha256_file(weights)}-{filename}"
        if not kept.is_file():
            atomic_write_bytes(kept, weights.read_bytes())
    return kept


def logged_model_file(uri: str, filename: str, what: str, stage: str, hint: str = "") -> Path:
    """The ``artifacts/<filename>`` of the logged model ``uri``, a ``what`` (``generator``, ``stylizer``,
    ``translator``) that ``stage`` logs: :func:`model_file` with what every kind of model shares. MLflow's HTTP
    retries are off (a server that does not answer is one refused connection), no empty database is created, and
    MLflow's many exception types are one line, ``cannot load the <what> <uri>: …``: :class:`ModelNotFound` when
    the store has no such model (or there is no store), a plain UserError for anything else, ``hint`` added when
    the model is not a ``what``."""
    from anime_avatar.ops.tracking import missing_tracking_db, mlflow_client, tracking_uri
    from anime_avatar.ops.tracking_store import fail_fast_http

    fail_fast_http()
    if missing := missing_tracking_db(tracking_uri()):  # MLflow would create an empty one
        raise ModelNotFound(f"cannot load the {what} {uri}: no MLflow database at {missing}")
    mlflow_client()
    try:
        weights = model_file(uri, filename)
    except NoModelFiles:
        raise UserError(
            f"cannot load the {what} {uri}: the tracking store knows it, but no files are where it keeps "
            "them (a moved or copied project? MLflow records each experiment's artifact folder as an "
            "absolute path)"
        ) from None
    except Exception as err:  # MLflow raises many types for a missing model, version or alias
        error = ModelNotFound if not_found(err) else UserError
        raise error(f"cannot load the {what} {uri}: {first_line(err)}") from None
    if weights is None:
        raise UserError(f"{uri} holds no artifacts/{filename}: not a {what} logged by the {stage} stage{hint}")
    return weights


def chosen_model_file(model: str, filename: str, what: str, stage: str, examples: str, hint: str = "") -> Path:
    """The weights file a ``--model`` names: a file, or the ``artifacts/<filename>`` of an MLflow model URI
    (:func:`logged_model_file`); anything else is one line with the URIs it could be (``examples``)."""
    if Path(model).is_file():
        return Path(model)
    if ":/" not in model:
        raise UserError(f"--model {model!r} is neither a file nor an MLflow model URI ({examples})")
    return logged_model_file(model, filename, what, stage, hint)


def not_found(err: Exception) -> bool:
    """Whether MLflow's ``err`` says the store has no such model, version, alias or run."""
    code = getattr(err, "error_code", "")
    text = str(err)
    return code in NOT_FOUND_CODES or (code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text)
