"""Networks, losses, DiffAugment and EMA: shapes, invariants and one tiny training step per setup."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from anime_avatar.core.architecture import ARCHS
from anime_avatar.core.params import DIFFAUGMENT_POLICIES
from anime_avatar.gan.diffaugment import AUGMENTS, diff_augment
from anime_avatar.gan.nets import NetConfig, SelfAttention, build_discriminator, build_generator
from anime_avatar.nn.ema import EMA
from anime_avatar.nn.layers import count_parameters
from anime_avatar.nn.losses import LOSSES, d_loss, g_loss, gradient_penalty

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def config(arch: str, resolution: int, **changes) -> NetConfig:
    """A NetConfig with this file's reference widths unless changed (the nets have no defaults of their own)."""
    return NetConfig(**{"arch": arch, "resolution": resolution, "z_dim": 128, "channels": 64, "attention": (32,),
                        "max_channels": 512, **changes})  # fmt: skip


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _attention_blocks(module: nn.Module) -> int:
    return sum(isinstance(m, SelfAttention) for m in module.modules())


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_and_ranges(arch, resolution, device):
    cfg = config(arch, resolution, z_dim=16, channels=8, attention=(16,))
    G, D = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
    assert (G.z_dim, G.resolution) == (16, resolution)
    images = G(torch.randn(3, 16, device=device))
    assert images.shape == (3, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0
    logits = D(images)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()


def test_widths_follow_resolution():
    cfg = config("dcgan", 64, channels=32, max_channels=256)
    assert cfg.resolutions == (4, 8, 16, 32, 64)
    assert [cfg.width(r) for r in cfg.resolutions] == [256, 256, 128, 64, 32]


@pytest.mark.parametrize("attention", [(), (16,), (8, 64)])
def test_attention_blocks_where_requested(attention):
    cfg = config("sagan", 64, channels=8, attention=attention)
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert _attention_blocks(G) == _attention_blocks(D) == len(attention)
    # each block sits at the requested resolution: record the inputs' sides
    sides: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, inp, _out: sides.append(inp[0].shape[-1]))
        for net in (G, D)
        for m in net.modules()
        if isinstance(m, SelfAttention)
    ]
    D(G(torch.randn(2, cfg.z_dim)))
    for hook in hooks:
        hook.remove()
    assert sorted(sides) == sorted(attention * 2)
    dcgan = config("dcgan", 64, channels=8, attention=attention)
    assert _attention_blocks(build_generator(dcgan)) == _attention_blocks(build_discriminator(dcgan)) == 0


def test_spectral_norm_on_every_sagan_layer_and_none_in_dcgan():
    for arch, expected in (("sagan", True), ("dcgan", False)):
        cfg = config(arch, 32, channels=8)
        for net in (build_generator(cfg), build_discriminator(cfg)):
            layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]
            assert layers
            assert all(parametrize.is_parametrized(m, "weight") == expected for m in layers), arch


def test_dcgan_discriminator_has_no_batchnorm():
    D = build_discriminator(config("dcgan", 64, channels=8))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    first = next(m for m in D.modules() if isinstance(m, nn.Conv2d))
    layers = list(D.blocks)
    assert layers[0] is first and isinstance(layers[1], nn.LeakyReLU)  # no norm after the first conv


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "stylegan"}, "model.arch must be one of dcgan, sagan"),
        ({"resolution": 48}, "model.resolution must be one of 32, 64, 128, 256"),
        ({"z_dim": 0}, "model.z_dim must be a positive integer"),
        ({"channels": -8}, "model.channels must be a positive integer"),
        ({"channels": 64, "max_channels": 32}, "model.max_channels (32) must be at least model.channels (64)"),
        ({"attention": (128,)}, "model.attention: 128 not a resolution of a 64px net; valid: 4, 8, 16, 32, 64"),
        ({"attention": 32}, "model.attention must be a list of resolutions"),
    ],
)
def test_bad_configs_name_the_key(kwargs, message):
    with pytest.raises(ValueError) as err:
        NetConfig(**{"arch": "sagan", "resolution": 64, "z_dim": 128, "channels": 64, "attention": (32,),
                     "max_channels": 512, **kwargs})  # fmt: skip
    assert message in str(err.value)


def test_config_normalises_attention():
    assert config("sagan", 64, attention=[32, 16, 32]).attention == (16, 32)


def test_parameter_counts_are_sane_for_cpu_training():
    counts = {}
    for arch in ARCHS:
        for channels in (32, 64):
            cfg = config(arch, 64, channels=channels)
            counts[arch, channels] = (
                count_parameters(build_generator(cfg)),
                count_parameters(build_discriminator(cfg)),
            )
    for (arch, channels), (g, d) in counts.items():
        print(f"{arch} 64px channels={channels}: G {g / 1e6:.2f}M  D {d / 1e6:.2f}M")
    for arch in ARCHS:
        g, d = counts[arch, 32]
        assert 1e6 < g < 5e6 and 1e6 < d < 5e6, (arch, g, d)
        assert counts[arch, 64][0] > g and counts[arch, 64][1] > d


# --------------------------------------------------------------------------- self-attention


def test_self_attention_is_identity_at_gamma_zero_and_global_after():
    torch.manual_seed(1)
    block = SelfAttention(16, sn=False)
    x = torch.randn(1, 16, 16, 16)
    assert torch.equal(block(x), x)

    with torch.no_grad():
        block.gamma.fill_(1.0)
    bumped = x.clone()
    bumped[0, :, 0, 0] += 5.0  # one corner pixel
    far = (slice(None), slice(None), 15, 15)  # the opposite corner
    assert not torch.allclose(block(x)[far], block(bumped)[far])

    conv = nn.Conv2d(16, 16, 3, padding=1)  # local: the far corner cannot see the bump
    assert torch.equal(conv(x)[far], conv(bumped)[far])


# --------------------------------------------------------------------------- losses


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_hinge_values():
    assert d_loss("hinge", _t(2.0, 3.0), _t(-2.0, -5.0)).item() == 0.0
    assert d_loss("hinge", _t(0.0), _t(0.0)).item() == 2.0
    assert d_loss("hinge", _t(0.5, 2.0), _t(0.0, -1.5)).item() == pytest.approx(0.25 + 0.5)
    assert g_loss("hinge", _t(1.0, 3.0)).item() == -2.0


def test_bce_values():
    real, fake = _t(1.0, 2.0), _t(-1.0, 0.5)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-2.0))) / 2
    expected += (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert d_loss("bce", real, fake).item() == pytest.approx(expected, rel=1e-12)
    assert d_loss("bce", _t(0.0), _t(0.0)).item() == pytest.approx(2 * math.log(2), rel=1e-12)
    # non-saturating: -log(sigmoid(fake))
    assert g_loss("bce", fake).item() == pytest.approx(
        (-math.log(1 / (1 + math.exp(1.0))) - math.log(1 / (1 + math.exp(-0.5)))) / 2, rel=1e-12
    )


def test_wgan_values():
    assert d_loss("wgan-gp", _t(1.0, 3.0), _t(0.0, -2.0)).item() == -3.0
    assert g_loss("wgan-gp", _t(0.0, -2.0)).item() == 1.0


def test_an_unknown_loss_names_the_known_ones():
    for call in (lambda: d_loss("wasserstein", _t(0.0), _t(0.0)), lambda: g_loss("wasserstein", _t(0.0))):
        with pytest.raises(ValueError, match=r"must be one of bce, hinge, wgan-gp, lsgan \(got 'wasserstein'\)"):
            call()


class _LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, of norm ||w||."""

    def __init__(self, norm: float) -> None:
        super().__init__()
        w = torch.randn(3, 8, 8, dtype=torch.float64)
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3))


def test_gradient_penalty():
    real = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    fake = torch.randn(4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert gradient_penalty(_LinearCritic(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-9)
    critic = _LinearCritic(3.0)
    gp = gradient_penalty(critic, real, fake, weight=10.0)
    assert gp.item() == pytest.approx(10 * (3 - 1) ** 2)
    gp.backward()  # create_graph=True: the penalty trains D ...
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0
    assert fake.grad is None  # ... and not whatever produced the fakes


# --------------------------------------------------------------------------- DiffAugment


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_diffaugment_keeps_shape_dtype_and_passes_gradients(device, dtype):
    x = torch.rand(4, 3, 16, 16, device=device, dtype=dtype, requires_grad=True)
    y = diff_augment(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_diffaugment_is_reproducible_with_a_generator(device):
    x = torch.rand(8, 3, 32, 32, device=device)

    def run(seed: int) -> torch.Tensor:
        return diff_augment(x, generator=torch.Generator(device).manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    torch.manual_seed(5)
    a = diff_augment(x)
    torch.manual_seed(5)
    assert torch.equal(a, diff_augment(x))  # global RNG when no generator is given


def test_diffaugment_policies():
    x = torch.rand(2, 3, 8, 8)
    assert diff_augment(x, "") is x
    assert diff_augment(x, " , ") is x
    with pytest.raises(ValueError, match=r"train\.diffaugment: unknown policy 'colour'"):
        diff_augment(x, "colour,cutout")


def test_translation_only_moves_pixels_and_pads_with_zeros():
    n, r = 16, 32
    x = (torch.arange(n * 3 * r * r, dtype=torch.float32) + 1).view(n, 3, r, r)
    y = diff_augment(x, "translation", generator=torch.Generator().manual_seed(0))
    for i in range(n):
        values = set(y[i].unique().tolist())
        assert values <= set(x[i].unique().tolist()) | {0.0}
    zeros = (y == 0).flatten(1).sum(dim=1)
    assert (zeros > 0).any()  # some image was shifted ...
    assert (zeros <= 3 * (r * r - (r - r // 8) ** 2)).all()  # ... by at most 1/8 of the side each way
    # a pure shift: neighbours stay neighbours
    for i in range(n):
        inside = y[i, 0] != 0
        rows, cols = inside.any(dim=1).nonzero().flatten(), inside.any(dim=0).nonzero().flatten()
        block = y[i, 0, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert torch.equal(block.diff(dim=1), torch.ones_like(block.diff(dim=1)))
        assert torch.equal(block.diff(dim=0), torch.full_like(block.diff(dim=0), r))


@pytest.mark.parametrize("r", [32, 64])
def test_cutout_zeroes_one_half_size_square(r):
    y = diff_augment(torch.ones(16, 3, r, r), "cutout", generator=torch.Generator().manual_seed(0))
    zeros = y == 0
    assert torch.equal(zeros[:, 0], zeros[:, 1]) and torch.equal(zeros[:, 0], zeros[:, 2])
    assert (zeros[:, 0].flatten(1).sum(dim=1) == (r // 2) ** 2).all()
    for mask in zeros[:, 0]:  # one square: its bounding box is r/2 x r/2
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert rows[-1] - rows[0] + 1 == r // 2 and cols[-1] - cols[0] + 1 == r // 2
    assert ((y == 0) | (y == 1)).all()
    tops = zeros[:, 0].any(dim=2).float().argmax(dim=1)
    assert tops.unique().numel() > 1  # positions vary across the batch


def test_color_is_a_per_image_affine_change():
    gen = torch.Generator().manual_seed(0)
    flat = torch.rand(8, 3, 1, 1).expand(8, 3, 16, 16).contiguous()
    out = diff_augment(flat, "color", generator=gen)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))  # a constant image stays constant

    gray = torch.rand(8, 1, 16, 16).expand(8, 3, 16, 16).contiguous()
    out = diff_augment(gray, "color", generator=gen)
    # saturation does nothing to gray; brightness adds, contrast scales around the mean:
    # out - mean(out) = k * (x - mean(x)) with one k in [0.5, 1.5] per image.
    centred_in = gray - gray.mean(dim=(1, 2, 3), keepdim=True)
    centred_out = out - out.mean(dim=(1, 2, 3), keepdim=True)
    k = (centred_out * centred_in).sum(dim=(1, 2, 3)) / centred_in.square().sum(dim=(1, 2, 3))
    assert ((k >= 0.5) & (k <= 1.5)).all()
    assert torch.allclose(centred_out, k.view(-1, 1, 1, 1) * centred_in, atol=1e-5)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 0], out[:, 2])


# --------------------------------------------------------------------------- EMA


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_ema_blends():
    model = _small_net()
    ema = EMA(model)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}

    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()(torch.randn(8, 4))  # moves BatchNorm's running statistics
    live = {k: v.clone() for k, v in model.state_dict().items()}

    ema.update(model, 1.0)
    for name, p in ema.model.named_parameters():
        assert torch.equal(p, start[name])
    for name, b in ema.model.named_buffers():
        assert torch.equal(b, live[name])  # buffers are copied whatever the decay

    ema.update(model, 0.5)
    for name, p in ema.model.named_parameters():
        assert torch.allclose(p, 0.5 * start[name] + 0.5 * live[name])

    ema.update(model, 0.0)
    for name, value in ema.model.state_dict().items():
        assert torch.equal(value, live[name])
    assert ema.step == 3


def test_ema_warmup_and_state_dict():
    model = _small_net()
    ema = EMA(model, warmup=True)
    assert ema.update(model, 0.999) == pytest.approx(0.1)
    assert ema.decay_at(0.999) == pytest.approx(2 / 11)
    assert ema.decay_at(0.05) == 0.05
    other = EMA(_small_net())
    other.load_state_dict(ema.state_dict())
    assert other.step == 1 and other.warmup
    for a, b in zip(other.model.state_dict().values(), ema.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_ema_of_a_sagan_generator_samples():
    G = build_generator(config("sagan", 32, z_dim=8, channels=8))
    ema = EMA(G)
    ema.update(G, 0.9)
    assert ema(torch.randn(2, 8)).shape == (2, 3, 32, 32)


# --------------------------------------------------------------------------- training step


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("arch", ARCHS)
def test_one_training_step(arch, loss):
    cfg = config(arch, 32, z_dim=16, channels=8, attention=(16,))
    G, D = build_generator(cfg), build_discriminator(cfg)
    ema = EMA(G, warmup=True)
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    z = torch.randn(4, cfg.z_dim)

    # discriminator step
    fake = G(z).detach()
    real_aug, fake_aug = diff_augment(real, generator=gen), diff_augment(fake, generator=gen)
    loss_d = d_loss(loss, D(real_aug), D(fake_aug))
    if loss == "wgan-gp":
        loss_d = loss_d + gradient_penalty(D, real_aug, fake_aug, generator=gen)
    loss_d.backward()
    assert torch.isfinite(loss_d)
    d_grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert d_grads and all(torch.isfinite(g).all() for g in d_grads)
    assert sum(g.abs().sum() for g in d_grads) > 0
    assert all(p.grad is None for p in G.parameters())

    # generator step
    D.zero_grad(set_to_none=True)
    loss_g = g_loss(loss, D(diff_augment(G(z), generator=gen)))
    loss_g.backward()
    assert torch.isfinite(loss_g)
    g_grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert g_grads and all(torch.isfinite(g).all() for g in g_grads)
    assert sum(g.abs().sum() for g in g_grads) > 0
    ema.update(G, 0.999)


def test_the_params_schema_names_exactly_the_implemented_diffaugment_policies():
    assert tuple(AUGMENTS) == DIFFAUGMENT_POLICIES
