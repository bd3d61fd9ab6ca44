from pathlib import Path

import pytest
import torch

from anime_avatar.core.errors import ParamsError
from anime_avatar.core.params import load_params, merge, parse_params, read_params_file, semantic_keys

ROOT = Path(__file__).resolve().parents[1]
RAW = read_params_file(ROOT / "params.yaml")


def test_project_params_file_is_the_one_source_of_every_value():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.detect.detector == "animeface"
    assert params.augment.transforms[0].name == "HorizontalFlip"
    assert params.augment.transforms[0].kwargs == {"p": 1.0}


def test_a_key_missing_from_the_file_is_named():
    raw = merge(RAW, {})
    del raw["train"]["lr_g"]
    with pytest.raises(ParamsError, match=r"params.yaml: train.lr_g: missing"):
        parse_params(raw, "params.yaml")


def test_semantic_keys_leave_out_what_does_not_change_outputs():
    train = semantic_keys("train")
    assert "train.lr_g" in train and "train.steps" in train and "train.amp" in train
    assert not {"train.log_every", "train.device", "train.threads", "train.sample_every"} & set(train)
    assert semantic_keys("tracking") == [] and semantic_keys("pipeline") == []
    assert "detect.workers" not in semantic_keys("detect") and "detect.margin" in semantic_keys("detect")
    assert "eval.device" not in semantic_keys("eval")


@pytest.mark.parametrize("key", ["train", "eval"])
def test_every_device_key_is_validated(key):
    with pytest.raises(ParamsError, match=rf"{key}.device: must be auto, cpu, mps, cuda or cuda:N"):
        parse_params(merge(RAW, {key: {"device": "gpu0"}}), "params.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"detct": {}}, "detct: unknown key"),
        ({"data": {"synthetic": {"cont": 3}}}, "data.synthetic.cont: unknown key"),
        ({"detect": {"margin": -0.1}}, "detect.margin: Input should be greater than or equal to 0"),
        ({"detect": {"detector": "yolo"}}, "detect.detector: Input should be 'lbp', 'animeface' or 'none'"),
        ({"data": {"source": "url"}}, "data.source is 'url' but data.url is empty"),
        ({"data": {"source": "url", "url": "ftp://x/y.zip"}}, "data.url must start with http:// or https://"),
        ({"data": {"source": "url", "url": "https://host/my file.zip"}}, "has a space in it: write it as %20"),
        (
            {"data": {"source": "url", "url": "https://host:abc/x.zip"}},
            "data.url 'https://host:abc/x.zip' is not a valid",
        ),
        ({"photos": {"source": "url", "url": "https:///x.zip"}}, "photos.url 'https:///x.zip' has no host name"),
        ({"data": {"sha256": "abc"}}, "data.sha256: must be 64 hexadecimal characters"),
        ({"augment": {"copies": 0, "keep_original": False}}, "no training images"),
        ({"validate": {"brightness_min": 0.9, "brightness_max": 0.1}}, "validate.brightness_min must be below"),
        ({"detect": {"image_size": "big"}}, "detect.image_size: Input should be a valid integer"),
        ({"detect": {"image_size": 48}}, "detect.image_size must be one of 32, 64, 128, 256"),
        ({"model": {"attention": [7]}}, "model.attention: 7 not a resolution"),
        ({"translate_eval": {"n_images": 1}}, "translate_eval.n_images: must be 0 (all) or at least 2"),
    ],
)
def test_bad_params_fail_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as err:
        parse_params(merge(RAW, raw), "params.yaml")
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
    assert parse_params(merge(RAW, {"data": {"sha256": digest}})).data.sha256 == digest.lower()


@pytest.mark.parametrize("value", [-1, 2**62, 2**64])
def test_every_seed_is_a_whole_number_the_commands_accept_and_a_bad_one_names_its_key(value):
    from anime_avatar.core.limits import SEED_LIMIT, check_seed
    from tests.conftest import params_with

    seeds = [(s, "seed") for s, section in params_with() if "seed" in type(section).model_fields]
    seeds += [("data.synthetic", "seed"), ("photos.synthetic", "seed")]
    assert {s for s, _ in seeds} >= {"augment", "train", "eval", "stylize", "translate", "translate_eval"}
    for where, name in seeds:
        parts = where.split(".")
        changes: dict = {name: value}
        for part in reversed(parts):
            changes = {part: changes}
        with pytest.raises(ParamsError, match=rf"params.yaml: {where}.seed: Input should be"):
            parse_params(merge(RAW, changes), "params.yaml")
    assert params_with({"translate": {"seed": SEED_LIMIT - 1}}).translate.seed == check_seed(SEED_LIMIT - 1)


def test_stylize_image_size_leaves_the_deeper_fusion_layer_more_than_one_position():
    """At 32 px the encoder's mixed_2 map was 1x1: one content loss exactly 0, two style layers without signal."""
    from anime_avatar.style.features import LAYERS, build_features

    encoder = build_features("inception", LAYERS["inception"].fusion_scales)
    deeper = encoder(torch.rand(1, 3, 48, 48))[LAYERS["inception"].fusion_scales[-1]]
    assert min(deeper.shape[-2:]) >= 3
    with pytest.raises(ParamsError, match=r"stylize.image_size: Input should be greater than or equal to 48"):
        parse_params(merge(RAW, {"stylize": {"image_size": 32}}), "params.yaml")


def test_max_keys_is_bounded_as_the_nets_bound_it():
    """params.py cannot import core.limits (it would join every stage's DVC deps): the literal bound is checked."""
    from anime_avatar.core.limits import MAX_ATTENTION_KEYS

    assert parse_params(merge(RAW, {"stylize": {"max_keys": MAX_ATTENTION_KEYS}})).stylize.max_keys == 1024
    with pytest.raises(ParamsError, match=r"stylize.max_keys: Input should be less than or equal to 1024"):
        parse_params(merge(RAW, {"stylize": {"max_keys": MAX_ATTENTION_KEYS + 1}}), "params.yaml")


@pytest.mark.parametrize(
    "key",
    ["detect.image_size", "stylize.image_size", "stylize_eval.image_size", "translate.image_size",
     "translate_eval.image_size"],
)  # fmt: skip
def test_image_sizes_are_bounded_within_the_largest_side_and_fail_naming_the_key(key):
    """Every side of an image a stage makes is at most limits.MAX_SIDE, the bound of the commands' --size (the
    schema keeps literal bounds: importing limits there would add it to every stage's DVC deps)."""
    from anime_avatar.core.limits import MAX_SIDE
    from tests.conftest import params_with

    section, name = key.split(".")
    with pytest.raises(ParamsError, match=rf"{key}: Input should be less than or equal to"):
        params_with({section: {name: 100_000}})
    field = type(getattr(params_with(), section)).model_fields[name]
    largest = max(m.le for m in field.metadata if getattr(m, "le", None) is not None)
    assert largest * (2 if key == "stylize.image_size" else 1) <= MAX_SIDE  # stylize: style images at twice it


@pytest.mark.parametrize(
    "key",
    ["stylize.style_path", "stylize_eval.content_path", "stylize_eval.style_path", "translate.photos",
     "translate.anime", "translate_eval.photos", "translate_eval.anime", "translate_eval.reference"],
)  # fmt: skip
def test_a_path_dvc_lists_as_a_dependency_may_not_start_with_a_tilde(key):
    """DVC took '~/styles' literally: train and evaluate ran for minutes, then 'No such file or directory' naming
    no key."""
    section, name = key.split(".")
    with pytest.raises(ParamsError, match=rf"{key}: '~/styles' starts with ~, which DVC does not expand"):
        parse_params(merge(RAW, {section: {name: "~/styles"}}), "params.yaml")


def test_stylize_eval_may_compare_only_the_nets_stylize_trains():
    """stylize.methods: [adain] with the default stylize_eval.methods failed minutes in, after stylize_train."""
    with pytest.raises(ParamsError, match=r"^params.yaml: stylize_eval.methods names attention, which stylize.methods"):
        parse_params(merge(RAW, {"stylize": {"methods": ["adain"]}}), "params.yaml")
    evaluated = ["gatys-inception", "adain"]
    changes = {"stylize": {"methods": ["adain"]}, "stylize_eval": {"methods": evaluated}}
    assert parse_params(merge(RAW, changes)).stylize_eval.methods == evaluated


@pytest.mark.parametrize(("section", "path", "how"), [
    ("data", "data/raw", "is"), ("data", "data/raw/mine", "is inside data/raw"), ("data", "data", "holds data/raw"),
    ("data", ".", "holds data/raw"), ("photos", "data/photos", "is"), ("data", "data/faces", "is"),
])  # fmt: skip
def test_a_local_source_in_a_folder_the_pipeline_writes_is_refused(section, path, how, monkeypatch, tmp_path):
    """data.path: data/raw read the user's images into the folder being replaced: duplicates and non-images were
    deleted, and under DVC (which deletes data/raw first) every image was lost."""
    monkeypatch.chdir(tmp_path)
    raw = merge(RAW, {section: {"source": "local", "path": path}})
    with pytest.raises(ParamsError, match=rf"{section}.path {path} {how}, a folder the pipeline writes"):
        parse_params(raw, "params.yaml")
    assert parse_params(merge(RAW, {section: {"source": "local", "path": "data/mine"}})).data  # beside them: fine


def test_the_overlap_is_judged_in_the_project_of_the_params_file_not_the_current_folder(monkeypatch, tmp_path):
    """Any command loading the project's params from the user's images folder (absolute data.path) was refused:
    the folders were resolved against the current folder, which then "held data/raw"."""
    images, project = tmp_path / "images", tmp_path / "project"
    images.mkdir()
    project.mkdir()
    raw = merge(RAW, {"data": {"source": "local", "path": str(images)}})
    monkeypatch.chdir(images)
    assert parse_params(raw, str(project / "params.yaml")).data.path == str(images)
    with pytest.raises(ParamsError, match=r"data.path \S+/project/data/raw is, a folder the pipeline writes"):
        parse_params(merge(RAW, {"data": {"source": "local", "path": str(project / "data/raw")}}),
                     str(project / "params.yaml"))  # fmt: skip


def test_the_folders_a_local_source_may_not_overlap_are_the_pipelines_data_outputs():
    import yaml

    from anime_avatar.core.params import PIPELINE_FOLDERS

    stages = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"].values()
    outs = {next(iter(o)) if isinstance(o, dict) else o for stage in stages for o in stage.get("outs", [])}
    assert {o for o in outs if o.startswith("data/")} | {"models"} == set(PIPELINE_FOLDERS)
