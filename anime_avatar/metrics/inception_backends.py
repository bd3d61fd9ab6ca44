"""Faster CPU runtimes for the FID Inception network: the TorchScript net exported once to ONNX, then run by
OpenVINO or ONNX Runtime instead of eager TorchScript.

Why: on the project's 2-core CPU both runtimes compute the same 2048-d features about 2.4x faster than the
TorchScript module (README, Speed), and feature extraction is most of the evaluate stage. Only the network changes:
resizing and scaling stay in torch (``features.to_network_input``), so every backend sees the identical input tensor.

Accuracy: both run in float32 and agree with TorchScript to about 2e-6 relative. OpenVINO is told so explicitly:
on CPUs with AVX-512 BF16 its CPU plugin would otherwise infer in bf16 and miss the 1e-4 tolerance by 300x.
Every runtime is checked once per process against the TorchScript net on a small probe batch; a runtime that
disagrees beyond :data:`TOLERANCE` is not used.

The ONNX file (87 MB, a few seconds to export on an idle CPU, up to a minute on a busy one) is cached in
``<cache_dir>/inception-<sha256 of the weights>-torch<ver>-onnx<ver>-opset<N>.onnx``, written atomically; a
corrupt cached file is exported again once. Exporting needs the ``onnx`` package (torch's exporter writes through
it); ``torch.onnx``'s dynamo exporter refuses a ScriptModule, so the TorchScript-based one is used.

Whatever goes wrong (runtime not installed, export or compile failure, a failed check, a non-CPU device) ends in
one warning line and the TorchScript net, so evaluation never fails because of an optional speed-up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import re
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from anime_avatar.core.fsutil import atomic_write_bytes
from anime_avatar.core.params import InceptionBackend

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = get_args(InceptionBackend)
# auto tries these in order on the CPU; OpenVINO measured a little ahead of ONNX Runtime here (README, Speed).
AUTO_ORDER: tuple[str, ...] = ("openvino", "onnxruntime")
TOLERANCE = 1e-4  # max |runtime - torchscript| / max |torchscript| on the probe batch
OPSET = 17
INPUT_SHAPE = (3, 299, 299)
INSTALL_HINTS = {
    "openvino": "pip install 'openvino>=2025.0,<2027' 'onnx>=1.16,<2'",
    "onnxruntime": "pip install 'onnxruntime>=1.20,<2' 'onnx>=1.16,<2'",
}

# float32 (N, 3, 299, 299) network input on the CPU -> float32 (N, 2048) features
Runner = Callable[[torch.Tensor], torch.Tensor]

_RUNNERS: dict[tuple[str, str, str, int], tuple[str, Runner]] = {}
_RUNNERS_LOCK = threading.Lock()
_SHA256: dict[tuple[str, int, int], str] = {}


class BackendUnavailable(Exception):
    """A runtime cannot be used here; the message is one line saying why."""


def weights_sha256(path: Path) -> str:
    """sha256 of the Inception weights file, computed once per process and file version (87 MB, ~0.3 s)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def _onnx_version() -> str:
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("the onnx package (needed to export the network) is not installed") from None
    return onnx.__version__


def export_path(cache_dir: Path, weights: Path) -> Path:
    """Where the ONNX export of ``weights`` lives: keyed by the weights' hash and the exporting libraries' versions."""
    versions = f"torch{torch.__version__}-onnx{_onnx_version()}-opset{OPSET}"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", versions)
    return Path(cache_dir) / f"inception-{weights_sha256(weights)[:16]}-{safe}.onnx"


def export_onnx(net: torch.jit.ScriptModule, path: Path) -> Path:
    """Export the TorchScript net to ONNX at ``path`` (dynamic batch), written atomically."""
    buffer = io.BytesIO()
    # inference_mode(False): callers run inside inference mode, where tracing for export is not allowed.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that it is the legacy path
        torch.onnx.export(
            net,
            (torch.zeros(2, *INPUT_SHAPE),),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=["x"],
            output_names=["features"],
            dynamic_axes={"x": {0: "n"}, "features": {0: "n"}},
        )
    atomic_write_bytes(path, buffer.getvalue())
    log.info("exported the FID Inception network to %s", path)
    return path


def _openvino_runner(model: Path, threads: int) -> Runner:
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable("openvino is not installed") from None
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    compiled = openvino.Core().compile_model(str(model), "CPU", config)
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one infer request, reused: calls must not overlap

    def run(x: torch.Tensor) -> torch.Tensor:
        with lock:
            out = request.infer([np.ascontiguousarray(x.numpy())])[0]
            return torch.from_numpy(np.array(out, dtype=np.float32))  # copy: the request reuses its buffer

    return run


def _onnxruntime_runner(model: Path, threads: int) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed") from None
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.numpy())})[0])

    return run


_LOADERS: dict[str, Callable[[Path, int], Runner]] = {
    "openvino": _openvino_runner,
    "onnxruntime": _onnxruntime_runner,
}


def torchscript_runner(net: torch.jit.ScriptModule) -> Runner:
    return lambda x: net(x)


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| / max |reference|: the tolerance measure of the feature tests."""
    return float((ours.double() - reference.double()).abs().max() / reference.double().abs().max())


def probe_batch() -> torch.Tensor:
    """Two fixed network inputs in [-1, 1): a smooth gradient and seeded noise."""
    ramp = torch.linspace(-1.0, 0.99, INPUT_SHAPE[2]).expand(*INPUT_SHAPE)
    noise = torch.rand(INPUT_SHAPE, generator=torch.Generator().manual_seed(0)) * 1.99 - 1.0
    return torch.stack([ramp, noise])


def _load_checked(name: str, net: torch.jit.ScriptModule, weights: Path, cache_dir: Path) -> Runner:
    """The runtime's runner on the cached export (exported on a miss, re-exported once if the file is corrupt),
    checked against the TorchScript net on :func:`probe_batch`."""
    if importlib.util.find_spec(name) is None:  # before exporting: a missing runtime should cost nothing
        raise BackendUnavailable(f"{name} is not installed")
    loader = _LOADERS[name]
    loader_threads = torch.get_num_threads()
    path = export_path(cache_dir, weights)
    if not path.is_file():
        export_onnx(net, path)
    try:
        runner = loader(path, loader_threads)
    except BackendUnavailable:
        raise
    except Exception as err:  # noqa: BLE001 - any loader error on a cached file: export again once
        log.warning("cannot load the cached Inception export %s (%s); exporting it again", path, _one_line(err))
        export_onnx(net, path)
        runner = loader(path, loader_threads)
    probe = probe_batch()
    with torch.no_grad():
        error = relative_error(runner(probe), net(probe))
    if not error <= TOLERANCE:
        raise BackendUnavailable(f"its features differ from TorchScript's by {error:.1e} relative (> {TOLERANCE})")
    return runner


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def select_runner(
    backend: str, net: torch.jit.ScriptModule, weights: Path, cache_dir: Path, device: torch.device
) -> tuple[str, Runner]:
    """(name of the backend in use, its runner) for the requested ``backend``, cached per process.

    ``auto`` means the first of :data:`AUTO_ORDER` that works on the CPU, and TorchScript on a GPU. Anything that
    keeps a requested runtime from working logs one warning line and falls back to TorchScript.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown Inception backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torchscript":
        return "torchscript", torchscript_runner(net)
    if device.type != "cpu":
        if backend != "auto":
            log.warning("Inception backend %s runs on the CPU only; using TorchScript on %s", backend, device)
        return "torchscript", torchscript_runner(net)
    key = (backend, str(Path(cache_dir).resolve()), str(device), torch.get_num_threads())
    with _RUNNERS_LOCK:
        if key not in _RUNNERS:
            _RUNNERS[key] = _first_working(backend, net, weights, Path(cache_dir))
        return _RUNNERS[key]


def _first_working(backend: str, net: torch.jit.ScriptModule, weights: Path, cache_dir: Path) -> tuple[str, Runner]:
    candidates = AUTO_ORDER if backend == "auto" else (backend,)
    reasons = []
    for name in candidates:
        try:
            return name, _load_checked(name, net, weights, cache_dir)
        except BackendUnavailable as err:
            reasons.append(f"{name}: {err} ({INSTALL_HINTS[name]})" if "installed" in str(err) else f"{name}: {err}")
        except Exception as err:  # noqa: BLE001 - an optional speed-up must never stop the evaluation
            reasons.append(f"{name}: {type(err).__name__}: {_one_line(err)}")
    log.warning("Inception backend %s unavailable (%s); using TorchScript", backend, "; ".join(reasons))
    return "torchscript", torchscript_runner(net)
