"""Accelerated FID Inception backends: same features and FID as TorchScript on real faces, the export cache, and
the fallbacks to TorchScript.

Exporting the network to ONNX costs a few seconds on an idle CPU (up to a minute on a busy one), so it happens once
per test session in the ``export_cache`` fixture; the fallback tests that need another cache copy that file.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance

from anime_avatar.core.params import EvalParams, is_operational
from anime_avatar.metrics import features as extraction
from anime_avatar.metrics import fid, inception
from anime_avatar.metrics import inception_backends as ib
from tests.conftest import GETCHU, needs_shared

ACCELERATED = ("openvino", "onnxruntime")
N_FACES = 12  # two sets of 6 for the FID comparison


@pytest.fixture(autouse=True)
def fresh_runner_cache() -> None:
    """Runners are cached per process; every test builds its own so that it sees its own monkeypatches."""
    ib._RUNNERS.clear()


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("inception-export")
    ib.export_onnx(inception.load_inception("cpu"), ib.export_path(cache, inception.inception_path()))
    return cache


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    files = sorted(GETCHU.glob("*.jpg"))[:N_FACES]
    if len(files) < N_FACES:
        pytest.skip(f"real-image test data {GETCHU} is absent (../shared/data)")
    return torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def torchscript_features(faces: torch.Tensor) -> torch.Tensor:
    return extraction.InceptionFeatures("cpu")(faces)


def fid_of_halves(features: torch.Tensor) -> float:
    """torchmetrics' FID of the first half of the faces against the second (FID only: KID would add ~20 s)."""
    metric = FrechetInceptionDistance(feature=fid.PrecomputedFeatures())
    half = len(features) // 2
    metric.update(features[:half].double(), real=True)
    metric.update(features[half:].double(), real=False)
    return float(metric.compute())


@pytest.fixture(scope="module")
def torchscript_fid(torchscript_features: torch.Tensor) -> float:
    return fid_of_halves(torchscript_features)


def select(backend: str, cache: Path, device: str = "cpu") -> tuple[str, ib.Runner]:
    net = inception.load_inception("cpu")
    return ib.select_runner(backend, net, inception.inception_path(), cache, torch.device(device))


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@needs_shared(GETCHU)
@pytest.mark.shared_data
@pytest.mark.parametrize("backend", ACCELERATED)
def test_features_and_fid_equal_torchscript_on_real_faces(
    backend: str, export_cache: Path, faces: torch.Tensor, torchscript_features: torch.Tensor, torchscript_fid: float
) -> None:
    extractor = extraction.InceptionFeatures("cpu", backend, cache_dir=export_cache)
    assert extractor.backend == backend  # no silent fallback

    features = extractor(faces)

    assert features.shape == (N_FACES, extraction.FEATURE_DIM) and features.dtype == torch.float32
    assert ib.relative_error(features, torchscript_features) <= 1e-4
    assert torchscript_features.abs().max() > 0.1  # not a comparison of two near-zero outputs
    assert torchscript_fid > 1.0
    assert fid_of_halves(features) == pytest.approx(torchscript_fid, abs=0.1)


def test_auto_picks_an_accelerated_runtime_on_the_cpu_and_torchscript_elsewhere(
    export_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert select("auto", export_cache)[0] == "openvino"
    assert select("auto", export_cache, device="cuda")[0] == "torchscript"  # no warning: auto chose it
    assert warnings_of(caplog) == []


def test_cached_export_is_reused(export_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (exported,) = export_cache.iterdir()
    before = exported.stat().st_mtime_ns

    def no_export(*args: object) -> None:
        raise AssertionError("exported again although the cache holds the file")

    monkeypatch.setattr(ib, "export_onnx", no_export)
    for backend in ACCELERATED:
        assert select(backend, export_cache)[0] == backend
    assert list(export_cache.iterdir()) == [exported]
    assert exported.stat().st_mtime_ns == before


def test_export_is_keyed_by_weights_hash_and_library_versions(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"one")
    first = ib.export_path(tmp_path, weights)
    weights.write_bytes(b"two")
    second = ib.export_path(tmp_path, weights)

    assert first != second and first.parent == second.parent == tmp_path
    assert f"torch{torch.__version__}".replace("+", "_") in first.name
    assert f"opset{ib.OPSET}" in first.name and first.suffix == ".onnx"


def test_corrupt_cached_export_is_exported_again(
    export_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (good,) = export_cache.iterdir()
    corrupt = tmp_path / good.name
    corrupt.write_bytes(b"not an onnx model")
    exports: list[Path] = []

    def export_by_copy(net: object, path: Path) -> Path:  # the real export, from the session's cached file
        exports.append(path)
        shutil.copyfile(good, path)
        return path

    monkeypatch.setattr(ib, "export_onnx", export_by_copy)
    assert select("onnxruntime", tmp_path)[0] == "onnxruntime"
    assert exports == [corrupt]
    assert corrupt.read_bytes()[:16] == good.read_bytes()[:16]
    assert any("exporting it again" in m for m in warnings_of(caplog))


@pytest.mark.parametrize("backend", ["openvino", "auto"])
def test_missing_runtime_falls_back_to_torchscript_with_one_warning(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ACCELERATED else real_find_spec(name, *a)
    )

    name, runner = select(backend, tmp_path)

    assert name == "torchscript"
    assert list(tmp_path.iterdir()) == []  # nothing exported for a runtime that is not there
    (message,) = warnings_of(caplog)
    assert "openvino is not installed" in message and "pip install 'openvino" in message
    probe = ib.probe_batch()[:1]
    assert torch.equal(runner(probe), inception.load_inception("cpu")(probe))


def test_failed_export_falls_back_to_torchscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_export(net: object, path: Path) -> Path:
        raise RuntimeError("exporter exploded\nwith a second line")

    monkeypatch.setattr(ib, "export_onnx", broken_export)

    assert select("openvino", tmp_path)[0] == "torchscript"
    (message,) = warnings_of(caplog)
    assert "RuntimeError: exporter exploded with a second line" in message and "\n" not in message


def test_runtime_that_disagrees_with_torchscript_is_not_used(
    export_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def off_by_a_little(model: Path, threads: int) -> ib.Runner:
        net = inception.load_inception("cpu")
        return lambda x: net(x) * 1.001

    monkeypatch.setitem(ib._LOADERS, "onnxruntime", off_by_a_little)

    assert select("onnxruntime", export_cache)[0] == "torchscript"
    (message,) = warnings_of(caplog)
    assert "differ from TorchScript" in message


def test_accelerated_backend_on_a_gpu_device_uses_torchscript(
    export_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert select("openvino", export_cache, device="cuda")[0] == "torchscript"
    (message,) = warnings_of(caplog)
    assert "CPU only" in message


def test_unknown_backend_is_refused(export_cache: Path) -> None:
    with pytest.raises(ValueError, match="unknown Inception backend 'tensorrt'"):
        select("tensorrt", export_cache)


def test_params_key_lists_the_backends_and_is_operational() -> None:
    annotation = EvalParams.model_fields["inception_backend"].annotation
    assert get_args(annotation) == ib.BACKENDS
    assert is_operational(EvalParams, "inception_backend")
