"""The measures no style loss optimises (edge SSIM, Lab colour statistics), checked against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anime_avatar.metrics.stylize import colour_distance, lab_stats, rgb_to_lab, sobel_edges, structure_score

skimage = pytest.importorskip("skimage", reason="scikit-image is a dev dependency: pip install -e '.[dev]'")


def test_sobel_edges_mark_a_step_with_one_and_flat_regions_with_zero():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0
    edges = sobel_edges(image)[0, 0]
    # Columns 3 and 4 straddle the step: (1 + 2 + 1) / 4 = 1; elsewhere the image is flat.
    assert torch.equal(edges[:, 3:5], torch.ones(8, 2))
    assert edges[:, :3].abs().max() == 0 and edges[:, 5:].abs().max() == 0


def test_structure_score_is_the_ssim_of_edge_maps_as_scikit_image_computes_it():
    from skimage.metrics import structural_similarity

    torch.manual_seed(0)
    content = torch.rand(2, 3, 96, 96)
    output = (content + 0.2 * torch.rand(2, 3, 96, 96)).clamp(0, 1)
    scores = structure_score(content, output)
    for i in range(2):
        edges_out, edges_content = (sobel_edges(x[i : i + 1])[0, 0].double().numpy() for x in (output, content))
        reference = structural_similarity(edges_out, edges_content, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0)  # fmt: skip
        assert scores[i].item() == pytest.approx(reference, abs=2e-3)  # torchmetrics and skimage treat borders apart
    assert torch.allclose(structure_score(content, content), torch.ones(2))
    # An output of another size is compared after resizing to the content's.
    assert structure_score(content[:1], torch.nn.functional.interpolate(content[:1], size=192)).item() > 0.5


def test_lab_conversion_matches_scikit_image():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3))
    ours = rgb_to_lab(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - rgb2lab(image)).max() < 1e-3
    white = rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()
    assert white[0].item() == pytest.approx(100.0, abs=1e-3) and abs(white[1].item()) < 1e-2


def test_colour_distance_of_flat_images_is_their_lab_distance():
    red, blue = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 6, 9)
    red[:, 0], blue[:, 2] = 1.0, 1.0
    expected = (rgb_to_lab(red)[0, :, 0, 0] - rgb_to_lab(blue)[0, :, 0, 0]).norm().item()  # stds are zero
    assert colour_distance(red, blue).item() == pytest.approx(expected, rel=1e-5)
    assert colour_distance(torch.cat([red, blue[..., :4, :4]]), blue)[1].item() == pytest.approx(0.0, abs=1e-4)
    assert lab_stats(red).shape == (1, 6)
