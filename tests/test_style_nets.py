"""The fusion nets: attention is a convex combination of style values; shapes at any size; configs round-trip."""

from __future__ import annotations

import pytest
import torch

from anime_avatar.style.features import LAYERS, build_features
from anime_avatar.style.nets import (
    AttentionFusion,
    FusionConfig,
    FusionHead,
    PatchDiscriminator,
    Stylizer,
    fusion_config,
    pool_positions,
)


@pytest.fixture(scope="module")
def encoder():
    return build_features("inception", LAYERS["inception"].fusion_scales)


def test_attention_weights_are_a_probability_over_style_positions():
    torch.manual_seed(0)
    block = AttentionFusion(channels=8, key_dim=4, max_keys=1000)
    content, style = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 3, 4)
    weights = block.weights(content, style)
    assert weights.shape == (2, 5 * 6, 3 * 4)
    assert (weights >= 0).all() and torch.allclose(weights.sum(dim=-1), torch.ones(2, 30))


def test_attention_output_is_a_convex_combination_of_the_style_values():
    torch.manual_seed(1)
    block = AttentionFusion(channels=8, key_dim=4, max_keys=1000)
    content, style = torch.randn(1, 8, 5, 6), torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        mixed = block.attend(content, style)
        values = block.value(style).flatten(2)  # (1, 8, 12)
        weights = block.weights(content, style)
    assert mixed.shape == content.shape
    # Each output position is sum_j w_j v_j with w_j >= 0 and sum w_j = 1: inside every channel's value range.
    low, high = values.min(dim=-1).values, values.max(dim=-1).values
    flat = mixed.flatten(2)
    assert (flat >= low[..., None] - 1e-6).all() and (flat <= high[..., None] + 1e-6).all()
    assert torch.allclose(flat, values @ weights.transpose(1, 2), atol=1e-6)
    # The block adds it (through the output conv) to the content: a residual.
    with torch.no_grad():
        assert torch.allclose(block(content, style), content + block.out(mixed), atol=1e-6)


def test_large_style_maps_are_pooled_to_at_most_max_keys_positions():
    style = torch.randn(1, 4, 40, 60)
    assert pool_positions(style, 100).shape[-2:].numel() <= 100
    assert pool_positions(style, 10_000) is style
    block = AttentionFusion(channels=4, key_dim=2, max_keys=100)
    assert block.weights(torch.randn(1, 4, 7, 7), style).shape[-1] <= 100


@pytest.mark.parametrize("method", ["attention", "adain"])
def test_stylizer_output_has_the_contents_size_for_any_style_size(encoder, method):
    torch.manual_seed(0)
    cfg = fusion_config(method, encoder, LAYERS["inception"].fusion_scales, key_dim=16, max_keys=64, decoder_width=32)
    net = Stylizer(FusionHead(cfg), encoder)
    for size in (64, 90):
        out = net(torch.rand(2, 3, size, size), torch.rand(1, 3, 70, 110))
        assert out.shape == (2, 3, size, size)
    assert not any(name.startswith("encoder") for name in net.state_dict())  # the frozen encoder is not saved


def test_alpha_zero_decodes_the_contents_own_features(encoder):
    cfg = fusion_config("adain", encoder, LAYERS["inception"].fusion_scales, 16, 64, 32)
    head = FusionHead(cfg)
    content, style = encoder(torch.rand(1, 3, 64, 64)), encoder(torch.rand(1, 3, 64, 64))
    fused = head.fuse(content, style, alpha=0.0)
    assert all(torch.equal(fused[k], content[k]) for k in cfg.scales)


def test_fusion_config_round_trips_and_rejects_unknown_methods(encoder):
    cfg = fusion_config("attention", encoder, ("conv_4", "mixed_2"), 64, 512, 64)
    assert cfg.channels == (192, 288) and cfg.fine_stride == 4
    assert FusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="method"):
        FusionConfig(**{**cfg.to_dict(), "method": "swap", "scales": cfg.scales, "channels": cfg.channels})


def test_patch_discriminator_scores_patches():
    assert PatchDiscriminator()(torch.rand(2, 3, 64, 64)).shape == (2, 1, 8, 8)


def curve(*points: tuple[float, float, float]) -> list[dict[str, float]]:
    return [{"alpha": a, "content_loss": c, "style_loss": s} for a, c, s in points]


def test_style_at_equal_content_interpolates_the_candidate_at_the_baselines_content_losses():
    from anime_avatar.style.evaluation import style_at_equal_content

    candidate = curve((0.0, 1.0, 4.0), (1.0, 2.0, 2.0))  # style loss 4 - 2 * (content - 1) along the curve
    baseline = curve((0.0, 1.5, 6.0), (1.0, 3.0, 1.0))  # only its first point lies in [1, 2]
    found = style_at_equal_content(candidate, baseline)
    assert found["matched_points"] == 1 and found["style_loss_ratio"] == pytest.approx(3.0 / 6.0)
    # Without overlap: no ratio at equal content, but the closest points in content loss are compared.
    apart = style_at_equal_content(curve((1.0, 1.2, 1.1), (0.5, 1.3, 2.0)), curve((1.0, 1.1, 0.5), (0.0, 1.0, 1.5)))
    assert apart["matched_points"] == 0 and "style_loss_ratio" not in apart
    assert (apart["nearest_candidate_alpha"], apart["nearest_baseline_alpha"]) == (1.0, 1.0)
    assert apart["nearest_style_loss_ratio"] == pytest.approx(1.1 / 0.5)


def test_timed_methods_stop_the_clock_only_after_the_device_has_done_the_work(monkeypatch):
    """A GPU runs kernels asynchronously: a time taken when the call returns measured only the launches."""
    from anime_avatar.style import evaluation

    events: list[str] = []
    monkeypatch.setattr(evaluation, "wait_for", lambda device: events.append(f"wait {device.type}"))
    pair = evaluation.Pair("c", "s", torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8))

    def method(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        events.append("run")
        return content + style

    output, seconds = evaluation.timed(method, pair, repeats=2)
    assert torch.equal(output, torch.ones(1, 3, 8, 8)) and seconds >= 0
    assert events == ["wait cpu", "run", "wait cpu"] * 2


def test_wait_for_synchronizes_the_device_it_is_given(monkeypatch):
    from anime_avatar.core.device import wait_for

    synced: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    wait_for(torch.device("cpu"))
    assert synced == []
    wait_for(torch.device("cuda", 1))
    assert synced == [torch.device("cuda", 1)]
