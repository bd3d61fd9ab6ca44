"""The quality benchmark's reference (bench/plain_dcgan.py) is the PyTorch DCGAN tutorial's model and loop."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from plain_dcgan import PlainDCGAN, build_discriminator, build_generator  # noqa: E402


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_the_nets_have_the_tutorials_shapes_and_sizes():
    # At the tutorial's 64 feature maps the layer sizes add up to its G of 3,576,704 and D of 2,765,568 weights
    # (e.g. G: 100*512*16 + 512*256*16 + 256*128*16 + 128*64*16 + 64*3*16 convolution weights + BatchNorm scales).
    assert count(build_generator(64)) == 3_576_704
    assert count(build_discriminator(64)) == 2_765_568
    g, d = build_generator(32), build_discriminator(32)
    images = g(torch.randn(5, 100))
    assert images.shape == (5, 3, 64, 64) and images.abs().max() <= 1
    assert d(images).shape == (5,)


def faces(n: int = 130) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)


def test_training_is_seeded_and_moves_both_nets():
    a, b = PlainDCGAN(faces()), PlainDCGAN(faces())
    before = [p.clone() for p in [*a.generator.parameters(), *a.discriminator.parameters()]]
    losses = a.train(3)
    assert losses == b.train(3) and a.step == 3
    assert all(np.isfinite(list(losses.values())))
    after = [*a.generator.parameters(), *a.discriminator.parameters()]
    assert all(not torch.equal(x, y) for x, y in zip(before, after, strict=True))


def test_batches_cover_each_epoch_once():
    gan = PlainDCGAN(faces(130))
    seen = torch.cat([gan._next_batch() for _ in range(2)])  # 130 faces: 2 full batches of 64, 2 dropped
    assert seen.shape == (128, 3, 64, 64)
    rows = {tuple(x.flatten()[:16].tolist()) for x in seen}
    assert len(rows) == 128  # no face twice within the epoch


def test_wrong_faces_are_refused():
    with pytest.raises(ValueError, match="64, 64, 3"):
        PlainDCGAN(np.zeros((100, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="fewer than one batch"):
        PlainDCGAN(faces(10))
