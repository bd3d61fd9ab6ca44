"""Saving and loading tensor files without pickle's ability to run code.

``torch.save`` writes a pickle; ``torch.load(weights_only=True)`` reads it with an
unpickler that builds only tensors and plain containers (dict, list, tuple, str, int,
float, bool, None), so a crafted file cannot execute anything. Every model and
checkpoint file of the project goes through these two functions.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.fsutil import atomic_write_bytes


def save_tensors(path: Path, obj: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file, so a crash never leaves a truncated file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_tensors(path: Path, what: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_tensors`; anything else raises UserError naming ``what`` it should be."""
    try:
        _check_crcs(path, what)
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(str(err))
        if reason.startswith("Unsupported operand"):  # not a pickle at all: text, an image, a truncated download
            raise UserError(f"{path}: not a readable {what} (not a file written by torch.save)") from None
        raise UserError(
            f"{path}: refused to load: not a {what} (it holds objects other than tensors: {reason})"
        ) from None
    except (IndexError, KeyError, struct.error):  # the unpickler's stack, memo or a length on bytes that are no pickle
        raise UserError(f"{path}: not a readable {what} (not a file written by torch.save)") from None
    except RuntimeError as err:  # torch's zip reader: its first sentence; the rest is advice
        raise UserError(f"{path}: not a readable {what} (damaged or truncated: {str(err).split('. ', 1)[0]})") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable {what} ({first_line(err) or type(err).__name__})") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: not a {what}")
    return payload


def _check_crcs(path: Path, what: str) -> None:
    """torch.load does not check the zip's CRCs: a file with damaged tensor bytes loads as other weights. Check
    them (a read of the file, which torch.load reads anyway); a file that is no zip is left to torch.load."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise UserError(f"{path}: not a readable {what} (damaged: its {bad} fails the zip's CRC check)")


def _unpickler_reason(message: str) -> str:
    """The line of torch's weights-only refusal that names what it refused (``Unsupported global: GLOBAL
    print``, ``Trying to load unsupported GLOBAL os.system whose module os is blocked``), without the paragraphs
    of advice around it (which suggest loading the file unsafely)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    named = next((line for line in lines if "GLOBAL" in line or "Unsupported operand" in line), "")
    reason = named.removeprefix("WeightsUnpickler error:").strip().split(" was not an allowed global", 1)[0]
    return reason.rstrip(".") or "unsupported content"


def mismatched_tensors(expected: dict[str, torch.Size], state: dict[str, Any]) -> str:
    """What differs between the tensor shapes a net needs (``expected``, e.g. from a net built on the ``meta``
    device, which allocates nothing) and the tensors of a saved state dict; "" when they match.

    Checked before a net is built for real, so a file whose config asks for a huge net is refused without
    allocating it."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    for name, shape in expected.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            return f"{name} is {got}, the config needs {tuple(shape)}"
    return ""


def build_loaded(build, state: dict[str, Any]):  # (Callable[[], nn.Module], state dict) -> nn.Module
    """``build()`` with ``state`` loaded, after checking on the ``meta`` device (no allocation) that the state's
    tensors fit the net ``build`` makes: a file whose config asks for a huge net is refused (ValueError) unbuilt."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in build().state_dict().items()}
    if problem := mismatched_tensors(expected, state):
        raise ValueError(f"its weights do not fit its config: {problem}")
    net = build()
    net.load_state_dict(state)
    return net
