"""The style-transfer losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from anime_avatar.nn.norm import adain, mean_std, mean_variance_norm
from anime_avatar.style.losses import (
    content_loss,
    gram_distance,
    gram_matrix,
    mean_std_loss,
    relative_weights,
    softmax_transform,
    style_loss,
    tv_loss,
)

# One image, two channels, one row of two positions: channel 0 = [1, 2], channel 1 = [3, 4].
F2 = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])


def test_gram_matrix_is_channel_products_over_c_h_w():
    # F F^T = [[1+4, 3+8], [3+8, 9+16]] = [[5, 11], [11, 25]]; C*H*W = 4.
    assert torch.equal(gram_matrix(F2), torch.tensor([[[1.25, 2.75], [2.75, 6.25]]]))
    batch = torch.cat([F2, 2 * F2])
    assert torch.equal(gram_matrix(batch)[1], 4 * gram_matrix(F2)[0])


def test_content_loss_is_the_mean_squared_difference():
    target = torch.tensor([[[[0.0, 2.0]], [[3.0, 6.0]]]])
    assert content_loss(F2, target).item() == pytest.approx((1 + 0 + 0 + 4) / 4)


def test_style_loss_sums_weighted_squared_frobenius_distances():
    g = gram_matrix(F2)  # [[1.25, 2.75], [2.75, 6.25]]
    zero = torch.zeros(1, 2, 2)
    assert gram_distance(g, zero).item() == pytest.approx(1.25**2 + 2 * 2.75**2 + 6.25**2)
    one = torch.ones(1, 2, 2)
    # ||G - 1||^2 = 0.25^2 + 2 * 1.75^2 + 5.25^2 = 33.75; ||G||^2 = 1.25^2 + 2 * 2.75^2 + 6.25^2 = 55.75.
    loss = style_loss({"a": g, "b": g}, {"a": one, "b": zero}, {"a": 2.0, "b": 0.5})
    assert loss.item() == pytest.approx(2.0 * 33.75 + 0.5 * 55.75)
    with pytest.raises(KeyError, match="layer"):
        style_loss({"a": g}, {"a": one}, {"a": 1.0, "missing": 1.0})


def test_style_loss_broadcasts_one_target_over_a_batch():
    g = gram_matrix(torch.cat([F2, F2]))
    assert gram_distance(g, gram_matrix(F2)).item() == 0.0


def test_tv_loss_is_the_mean_squared_neighbour_difference():
    image = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    # vertical differences [2, 2] -> mean square 4; horizontal [1, 1] -> 1.
    assert tv_loss(image).item() == pytest.approx(5.0)
    assert tv_loss(torch.full((1, 3, 5, 5), 0.7)).item() == 0.0


def test_softmax_transform_has_mean_one_and_keeps_the_order():
    torch.manual_seed(0)
    f = torch.rand(2, 3, 4, 5) * 10
    t = softmax_transform(f, temperature=2.0)
    assert t.shape == f.shape and torch.allclose(t.mean(dim=(1, 2, 3)), torch.ones(2))
    assert torch.equal(t.flatten(1).argsort(dim=1), f.flatten(1).argsort(dim=1))
    # By hand: C*H*W * exp(f/T) / sum exp(f/T).
    e = torch.exp(f[0] / 2.0)
    assert torch.allclose(t[0], 60 * e / e.sum())


def test_softmax_transform_is_flatter_at_higher_temperature_and_constant_for_constant_maps():
    f = torch.tensor([[[[0.0, 0.0, 0.0, 8.0]]]])
    peaks = [softmax_transform(f, temperature).max().item() for temperature in (1.0, 4.0, 16.0)]
    assert peaks[0] > peaks[1] > peaks[2] > 1.0
    assert torch.equal(softmax_transform(torch.full((1, 2, 3, 3), 5.0), 4.0), torch.ones(1, 2, 3, 3))
    with pytest.raises(ValueError, match="temperature"):
        softmax_transform(f, 0.0)


def test_relative_weights_divide_by_the_targets_size():
    content, style = relative_weights({"c": F2}, {"s": gram_matrix(F2)}, {"s": 3.0})
    assert content["c"] == pytest.approx(1 / ((1 + 4 + 9 + 16) / 4))
    assert style["s"] == pytest.approx(3.0 / 55.75)


def test_mean_std_adain_and_normalisation():
    mean, std = mean_std(F2, eps=0.0)
    assert torch.equal(mean.flatten(), torch.tensor([1.5, 3.5])) and torch.equal(
        std.flatten(), torch.tensor([0.5, 0.5])
    )
    normed = mean_variance_norm(F2, eps=0.0)
    assert torch.equal(normed.flatten(), torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    torch.manual_seed(1)
    content, style = torch.randn(1, 3, 6, 6), torch.randn(1, 3, 5, 7) * 3 + 2
    out_mean, out_std = mean_std(adain(content, style))
    style_mean, style_std = mean_std(style)
    assert torch.allclose(out_mean, style_mean, atol=1e-5) and torch.allclose(out_std, style_std, atol=1e-4)


def test_mean_std_loss_adds_mean_and_std_errors_per_layer():
    shifted = F2 + torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)  # channel 0's mean moves by 1, stds unchanged
    loss = mean_std_loss({"a": shifted, "b": F2}, {"a": F2, "b": F2}, ("a", "b"))
    assert loss.item() == pytest.approx((1.0**2 + 0.0) / 2, abs=1e-6)
    assert math.isclose(mean_std_loss({"a": F2}, {"a": F2}, ("a",)).item(), 0.0, abs_tol=1e-12)
