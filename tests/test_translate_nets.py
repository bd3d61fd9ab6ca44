"""The translator's nets, losses and inference: shapes per attention mode, the mask blend, CAM and AdaLIN by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anime_avatar.nn.layers import count_parameters
from anime_avatar.nn.losses import d_loss, g_loss
from anime_avatar.translate.inference import heatmap_image, sample_sheet, translate
from anime_avatar.translate.losses import cam_loss, cycle_loss, identity_loss, mask_prior_loss
from anime_avatar.translate.nets import (
    ATTENTION_MODES,
    LIN,
    AdaLIN,
    CamAttention,
    Generator,
    TranslatorConfig,
    TranslatorNets,
    clip_rho_,
)


def tiny(attention: str = "cam+mask", size: int = 16) -> TranslatorConfig:
    return TranslatorConfig(image_size=size, channels=4, n_blocks=2, attention=attention, disc_channels=4,
                            disc_layers=2)  # fmt: skip


def images(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("attention", ATTENTION_MODES)
def test_every_attention_mode_has_the_documented_outputs(attention):
    torch.manual_seed(0)
    nets = TranslatorNets(tiny(attention, 32))
    x = images(3, 32)
    out = nets.g_ab(x)
    assert out.image.shape == (3, 3, 32, 32) and out.image.abs().max() <= 1.0
    assert (out.cam_logit is not None) == (out.heatmap is not None) == ("cam" in attention)
    assert (out.mask is not None) == ("mask" in attention)
    if out.cam_logit is not None:
        assert out.cam_logit.shape == (3, 2) and out.heatmap.shape == (3, 1, 8, 8) and out.heatmap.min() >= 0
    if out.mask is not None:
        assert out.mask.shape == (3, 1, 32, 32) and out.mask.min() >= 0 and out.mask.max() <= 1
        torch.testing.assert_close(out.image, out.mask * out.content + (1 - out.mask) * x)
    assert nets.d_a(x).shape == (3, 1, 32 // 4 - 2, 32 // 4 - 2)  # 2 stride-2 layers, then two 4x4 convs


def _force_mask(g: Generator, logit: float) -> None:
    with torch.no_grad():
        conv = g.head[1]
        conv.weight[3].zero_()
        conv.bias[3] = logit


def test_the_mask_chooses_between_drawn_content_and_the_input():
    torch.manual_seed(0)
    g = Generator(tiny("mask"))
    x = images()
    _force_mask(g, 60.0)  # mask = 1: all content
    out = g(x)
    torch.testing.assert_close(out.mask, torch.ones_like(out.mask))
    torch.testing.assert_close(out.image, out.content)
    _force_mask(g, -60.0)  # mask = 0: the input itself
    torch.testing.assert_close(g(x).image, x)
    _force_mask(g, 0.0)  # mask = 1/2 everywhere
    out = g(x)
    torch.testing.assert_close(out.image, 0.5 * out.content + 0.5 * x)
    assert not torch.allclose(out.content, x)


def test_cam_reweights_features_by_the_classifier_weights():
    torch.manual_seed(0)
    cam = CamAttention(5)
    x = torch.rand(2, 5, 4, 4)
    weighted, logit = cam.reweight(x)
    w_gap, w_gmp = cam.gap_fc.weight[0], cam.gmp_fc.weight[0]
    torch.testing.assert_close(weighted[:, :5], x * w_gap[None, :, None, None])
    torch.testing.assert_close(weighted[:, 5:], x * w_gmp[None, :, None, None])
    torch.testing.assert_close(logit[:, 0], x.mean(dim=(2, 3)) @ w_gap)
    torch.testing.assert_close(logit[:, 1], x.amax(dim=(2, 3)) @ w_gmp)
    features, _, heatmap = cam(x)
    torch.testing.assert_close(heatmap[:, 0], features.sum(dim=1))
    with torch.no_grad():  # a classifier that looks at nothing attends to nothing
        cam.gap_fc.weight.zero_()
        cam.gmp_fc.weight.zero_()
        cam.merge.bias.zero_()
    weighted, logit = cam.reweight(x)
    features, _, heatmap = cam(x)
    assert weighted.abs().max() == 0 and logit.abs().max() == 0 and heatmap.abs().max() == 0


def test_adalin_mixes_instance_and_layer_norm_by_rho():
    x = torch.randn(2, 3, 5, 5) * 3 + 1
    ones, zeros = torch.ones(2, 3), torch.zeros(2, 3)
    norm = AdaLIN(3)
    with torch.no_grad():
        norm.rho.fill_(1.0)
    torch.testing.assert_close(norm(x, ones, zeros), F.instance_norm(x), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        norm.rho.fill_(0.0)
    torch.testing.assert_close(norm(x, ones, zeros), F.layer_norm(x, x.shape[1:]), rtol=1e-4, atol=1e-4)
    gamma, beta = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    torch.testing.assert_close(norm(x, gamma, beta), 2 * F.layer_norm(x, x.shape[1:]) - 1, rtol=1e-4, atol=1e-4)
    lin = LIN(3)
    with torch.no_grad():
        lin.rho.fill_(0.25)
        lin.rho[1] = 7.0
        norm.rho.fill_(-3.0)
    clip_rho_(lin)
    clip_rho_(norm)
    assert lin.rho.flatten().tolist() == [0.25, 1.0, 0.25] and norm.rho.max() == 0.0


def test_the_layer_instance_mix_matches_its_statistics_written_out_forward_and_backward():
    # torch's fused norms compute it; here the formula by hand, on a channels_last input as in training.
    torch.manual_seed(0)
    x = (torch.randn(2, 4, 6, 6) * 3 + 1).contiguous(memory_format=torch.channels_last)
    rho = torch.tensor([0.0, 0.25, 0.9, 1.0])
    upstream = torch.randn(2, 4, 6, 6)

    def by_hand(x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        mean_in, mean_ln = x.mean(dim=(2, 3), keepdim=True), x.mean(dim=(1, 2, 3), keepdim=True)
        var_in = ((x - mean_in) ** 2).mean(dim=(2, 3), keepdim=True)
        var_ln = ((x - mean_ln) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        r = rho[None, :, None, None]
        return r * (x - mean_in) / torch.sqrt(var_in + 1e-5) + (1 - r) * (x - mean_ln) / torch.sqrt(var_ln + 1e-5)

    lin = LIN(4)
    with torch.no_grad():
        lin.rho.copy_(rho)
    x_lin, x_hand, rho_hand = x.clone().requires_grad_(), x.clone().requires_grad_(), rho.clone().requires_grad_()
    out_lin, out_hand = lin(x_lin), by_hand(x_hand, rho_hand)
    torch.testing.assert_close(out_lin, out_hand, rtol=1e-5, atol=1e-5)
    (out_lin * upstream).sum().backward()
    (out_hand * upstream).sum().backward()
    torch.testing.assert_close(x_lin.grad, x_hand.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lin.rho.grad, rho_hand.grad, rtol=1e-4, atol=1e-5)


def test_the_ablation_has_no_attention_parameters():
    torch.manual_seed(0)
    full, plain = Generator(tiny("cam+mask")), Generator(tiny("none"))
    assert plain.cam is None and plain.gamma_beta is None and plain.head[1].out_channels == 3
    assert not any(isinstance(m, AdaLIN | LIN) for m in plain.modules())
    assert full.head[1].out_channels == 4 and any(isinstance(m, AdaLIN) for m in full.modules())
    assert count_parameters(plain) < count_parameters(Generator(tiny("mask"))) < count_parameters(full)
    assert count_parameters(plain) < count_parameters(Generator(tiny("cam"))) < count_parameters(full)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"attention": "both"}, "attention"), ({"image_size": 30}, "image_size"), ({"channels": 0}, "channels"),
     ({"n_blocks": 0}, "n_blocks"), ({"disc_layers": 3}, "disc_layers"), ({"image_size": 8}, "image_size")],
)  # fmt: skip
def test_bad_configs_name_their_field(changes, field):
    with pytest.raises(ValueError, match=field):
        TranslatorConfig(**{**tiny().as_dict(), **changes})


def test_config_round_trips_through_a_dict():
    cfg = tiny("mask", 32)
    assert TranslatorConfig.from_dict(cfg.as_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys \\['width'\\]"):
        TranslatorConfig.from_dict({**cfg.as_dict(), "width": 3})
    with pytest.raises(ValueError, match="missing keys \\['n_down'\\]"):
        TranslatorConfig.from_dict({k: v for k, v in cfg.as_dict().items() if k != "n_down"})


def test_losses_match_hand_computed_values():
    real, fake = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, -1.0])
    # real: (0 + 1 + 1) / 3; fake: (0.25 + 1) / 2
    assert d_loss("lsgan", real, fake).item() == pytest.approx(2 / 3 + 0.625)
    assert g_loss("lsgan", fake).item() == pytest.approx((0.25 + 4.0) / 2)
    a, b = torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert cycle_loss(a, b).item() == pytest.approx((1 + 0 + 2 + 1) / 4)
    assert identity_loss(b, a).item() == pytest.approx(1.0)
    src, tgt = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, -3.0]])
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x)
    expected = (np.log(2) + np.log1p(np.exp(-2))) / 2 + (np.log(2) + np.log1p(np.exp(-3))) / 2
    assert cam_loss(src, tgt).item() == pytest.approx(expected)
    assert cam_loss(torch.tensor([[30.0]]), torch.tensor([[-30.0]])).item() == pytest.approx(0.0, abs=1e-9)
    mask = torch.tensor([[[[1.0, 0.0], [0.25, 0.75]]]])  # draws 1, copies 1, copies 3/4, copies 1/4
    assert mask_prior_loss(mask).item() == pytest.approx((0 + 1 + 0.75 + 0.25) / 4)
    assert mask_prior_loss(torch.ones(2, 1, 3, 3)).item() == 0.0
    halves = torch.stack([torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.9)])  # drawn 0.5 and 0.9
    assert mask_prior_loss(halves, min_drawn=0.75).item() == pytest.approx((0.25 + 0.0) / 2)


def test_translate_returns_uint8_images_and_normalised_maps():
    torch.manual_seed(0)
    g = Generator(tiny("cam+mask"))
    batch = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    out, heat, mask = translate(g, batch, batch_size=2)
    assert out.shape == batch.shape and out.dtype == np.uint8
    assert heat.shape == mask.shape == (5, 16, 16)
    assert np.allclose(heat.min(axis=(1, 2)), 0) and np.allclose(heat.max(axis=(1, 2)), 1)
    expected = ((g(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1).image + 1) * 127.5).round()
    assert np.abs(out.astype(int) - expected.permute(0, 2, 3, 1).detach().numpy()).max() <= 1
    out, heat, mask = translate(Generator(tiny("none")), batch)
    assert heat is None and mask is None
    with pytest.raises(ValueError, match="uint8"):
        translate(g, batch.astype(np.float32))


def test_heatmap_image_is_min_max_normalised_per_image():
    heat = torch.tensor([[[[0.0, 2.0], [4.0, 4.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    maps = heatmap_image(heat, 2)
    torch.testing.assert_close(maps[0], torch.tensor([[0.0, 0.5], [1.0, 1.0]]))
    assert maps[1].abs().max() == 0  # a flat map stays flat (no division by zero)


@pytest.mark.parametrize(("attention", "rows"), [("cam+mask", 10), ("none", 6)])
def test_sample_sheet_has_a_row_per_view(attention, rows):
    torch.manual_seed(0)
    nets = TranslatorNets(tiny(attention))
    sheet = sample_sheet(nets.g_ab, nets.g_ba, images(3), images(3, seed=1))
    assert sheet.dtype == torch.uint8 and sheet.shape == (3, rows * 18 + 2, 3 * 18 + 2)
