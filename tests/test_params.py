from pathlib import Path

import pytest

from anime_avatar.errors import ParamsError
from anime_avatar.params import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_file_is_valid_and_matches_defaults():
    params = load_params(ROOT / "params.yaml")
    assert params == parse_params({}), "params.yaml should spell out the defaults"
    assert params.data.source == "synthetic"
    assert params.detect.detector == "animeface"
    assert params.augment.transforms[0].name == "HorizontalFlip"
    assert params.augment.transforms[0].kwargs == {"p": 1.0}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"detct": {}}, "detct: unknown key"),
        ({"data": {"synthetic": {"cont": 3}}}, "data.synthetic.cont: unknown key"),
        ({"detect": {"margin": -0.1}}, "detect.margin: Input should be greater than or equal to 0"),
        ({"detect": {"detector": "yolo"}}, "detect.detector: Input should be 'lbp', 'animeface' or 'none'"),
        ({"data": {"source": "url"}}, "data.source is 'url' but data.url is empty"),
        ({"data": {"source": "url", "url": "ftp://x/y.zip"}}, "data.url must start with http:// or https://"),
        ({"data": {"sha256": "abc"}}, "data.sha256: must be 64 hexadecimal characters"),
        ({"augment": {"copies": 0, "keep_original": False}}, "no training images"),
        ({"validate": {"brightness_min": 0.9, "brightness_max": 0.1}}, "validate.brightness_min must be below"),
        ({"detect": {"image_size": "big"}}, "detect.image_size: Input should be a valid integer"),
    ],
)
def test_bad_params_fail_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as err:
        parse_params(raw, "params.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml: ")


def test_params_file_errors_are_clear(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(bad)


def test_sha256_is_normalised_to_lowercase():
    digest = "AB" * 32
    assert parse_params({"data": {"sha256": digest}}).data.sha256 == digest.lower()
