"""Feature networks: the Inception stages match the FID network's own output; VGG-19 loads through torchvision's
weights mechanism (tested with a small stand-in network), and says which file to place where when it cannot."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models._api import Weights, WeightsEnum

from anime_avatar.core.errors import UserError
from anime_avatar.metrics.inception import load_inception
from anime_avatar.style.features import (
    INCEPTION_STAGES,
    LAYERS,
    InceptionLayers,
    VggLayers,
    build_features,
    load_vgg_features,
    vgg_layer_names,
)


def test_the_stages_run_one_by_one_give_the_fid_networks_own_2048_features():
    net = load_inception("cpu")
    stages = InceptionLayers(["mixed_10"], net)
    images = torch.rand(2, 3, 299, 299)
    with torch.no_grad():
        mine = net.net.layers.pool2(stages(images)["mixed_10"]).reshape(2, 2048)
        reference = net((images * 255 - 128) / 128)
    assert torch.equal(mine, reference)


def test_inception_layers_report_their_width_stride_and_minimum_size():
    layers = ("conv_1", "conv_4", "mixed", "mixed_2", "mixed_4")
    features = build_features("inception", reversed(layers))
    assert features.layers == layers  # network order, whatever order they were asked in
    maps = features(torch.rand(1, 3, 128, 128))
    for name in layers:
        assert maps[name].shape[1] == features.channels(name)
        assert 128 / maps[name].shape[-1] == pytest.approx(features.stride(name), rel=0.4)  # VALID convs shrink more
    assert features.min_size() == 43
    with pytest.raises(UserError, match="needs at least 43 px"):
        features(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="unknown inception layer"):
        build_features("inception", ["relu4_1"])


def test_features_are_differentiable_and_the_frozen_weights_are_hidden():
    features = build_features("inception", ["mixed_2"])
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    features(image)["mixed_2"].square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert list(features.parameters()) == [] and features.state_dict() == {}
    assert not any(p.requires_grad for p in features.frozen.parameters())
    assert len(INCEPTION_STAGES) == 18


# --- VGG-19 through torchvision's weights mechanism, with a small stand-in --------------------------------------


class TinyVgg(nn.Module):
    """A VGG-shaped stand-in: two blocks (conv, relu, pool), as torchvision's ``features`` lays them out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip


def tiny_vgg(weights=None, progress=True):
    """Builds like torchvision's ``vgg19(weights=...)``: the state dict comes from ``weights.get_state_dict``."""
    net = TinyVgg()
    if weights is not None:
        net.load_state_dict(weights.get_state_dict(progress=progress, check_hash=True))
    return net


def weights_at(url: str) -> WeightsEnum:
    return WeightsEnum("TinyWeights", {"V1": Weights(url=url, transforms=lambda: None, meta={})}).V1


def test_vgg_layer_names_follow_the_papers():
    assert vgg_layer_names(TinyVgg().features) == ("conv1_1", "relu1_1", "pool1", "conv2_1", "relu2_1", "conv2_2",
                                                   "relu2_2")  # fmt: skip


def test_vgg_weights_that_cannot_be_downloaded_give_one_line_naming_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    missing = weights_at(f"file://{tmp_path}/nowhere/tiny-0123abcd.pth")
    with pytest.raises(UserError) as err:
        load_vgg_features(missing, tiny_vgg)
    message = str(err.value)
    assert "\n" not in message and "tiny-0123abcd.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message


def test_vgg_weights_placed_in_the_cache_folder_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    reference = TinyVgg()
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "tiny-0123abcd.pth")  # a user placed the file as the error says
    weights = weights_at("https://unreachable.invalid/models/tiny-0123abcd.pth")
    features = load_vgg_features(weights, tiny_vgg)
    loaded, expected_state = features.state_dict(), reference.features.state_dict()
    assert loaded.keys() == expected_state.keys() and all(torch.equal(loaded[k], expected_state[k]) for k in loaded)
    assert not any(p.requires_grad for p in features.parameters())

    layers = VggLayers(["relu1_1", "relu2_2"], features)
    image = torch.rand(1, 3, 16, 16)
    maps = layers(image)
    assert set(maps) == {"relu1_1", "relu2_2"} and maps["relu2_2"].shape == (1, 6, 8, 8)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        expected = torch.relu(reference.features[0]((image - mean) / std))
    assert torch.allclose(maps["relu1_1"], expected, atol=1e-6)
    assert layers.channels("relu2_2") == 6 and layers.stride("relu2_2") == 2 and layers.min_size() == 2


def served_weights(folder: Path, hash_ok: bool = True) -> Path:
    """The stand-in's weights as a file named like torchvision's (``name-<sha256 prefix>.pth``)."""
    buf = io.BytesIO()
    torch.save(TinyVgg().state_dict(), buf)
    prefix = hashlib.sha256(buf.getvalue()).hexdigest()[:8] if hash_ok else "00000000"
    path = folder / f"tiny-{prefix}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def test_vgg_weights_are_downloaded_by_torchvision_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = served_weights(tmp_path / "server")
    load_vgg_features(weights_at(source.as_uri()), tiny_vgg)
    assert (tmp_path / "torch" / "hub" / "checkpoints" / source.name).is_file()


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = served_weights(tmp_path / "server", hash_ok=False)
    with pytest.raises(UserError, match=f"{source.name} could not be loaded"):
        load_vgg_features(weights_at(source.as_uri()), tiny_vgg)
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / source.name).exists()


def test_layer_choices_name_layers_of_their_network():
    from torchvision.models import vgg19

    assert set(LAYERS) == {"inception", "vgg19"}
    names = {"inception": INCEPTION_STAGES, "vgg19": vgg_layer_names(vgg19(weights=None).features)}
    for network, choice in LAYERS.items():
        for layer in (*choice.content, *choice.style, *choice.fusion_scales, *choice.training_style):
            assert layer in names[network], (network, layer)
    with pytest.raises(UserError, match="unknown feature network"):
        build_features("resnet", ["x"])
