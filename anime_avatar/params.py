"""``params.yaml``: the single source of truth, parsed once into validated, typed objects.

Every section rejects unknown keys, and every bad value is reported with the
dotted name of its key (``detect.margin: ...``), so ``dvc exp run -S`` typos fail
fast instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from anime_avatar.errors import ParamsError

DEFAULT_PARAMS = Path("params.yaml")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(Section):
    count: int = Field(300, ge=1, le=1_000_000, description="number of illustrations")
    seed: int = Field(0, description="(seed, index) fixes each illustration")
    size: int = Field(512, ge=128, le=4096, description="illustration side in pixels")


class DataParams(Section):
    source: Literal["synthetic", "local", "url", "hf"] = "synthetic"
    path: str = Field("", description="local source: a folder, .zip or .tar(.gz|.bz2|.xz)")
    url: str = Field("", description="url source: an http(s) archive (zip or tar)")
    sha256: str = Field("", description="expected sha256 of the url download (empty: not checked)")
    hf_dataset: str = Field("", description="hf source: a Hugging Face datasets id")
    hf_split: str = "train"
    hf_image_column: str = "image"
    license: str = Field("", description="licence recorded in the manifest for local/url/hf data")
    max_files: int = Field(0, ge=0, description="keep at most this many images (0: all)")
    max_extract_mb: int = Field(4096, ge=1, description="cap on the bytes unpacked from an archive")
    max_image_mb: int = Field(64, ge=1, description="files larger than this are rejected")
    synthetic: SyntheticParams = SyntheticParams()

    @field_validator("sha256")
    @classmethod
    def _sha256_is_hex(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not SHA256_RE.match(value):
            raise ValueError("must be 64 hexadecimal characters (or empty)")
        return value

    @model_validator(mode="after")
    def _source_has_its_location(self) -> DataParams:
        needed = {"local": "path", "url": "url", "hf": "hf_dataset"}.get(self.source)
        if needed and not getattr(self, needed):
            raise ValueError(f"data.source is {self.source!r} but data.{needed} is empty")
        if self.source == "url" and not self.url.startswith(("http://", "https://")):
            raise ValueError("data.url must start with http:// or https://")
        return self


class DetectParams(Section):
    detector: Literal["lbp", "animeface", "none"] = "animeface"
    image_size: int = Field(32, ge=8, le=1024, description="side of the square crops in pixels")
    margin: float = Field(
        0.25, ge=0.0, le=2.0, description="extra context around the box, per side, as a fraction of its size"
    )
    min_face: int = Field(24, ge=4, description="boxes smaller than this (pixels) are dropped")
    cascade_path: str = Field(
        "", description="lbp: local lbpcascade_animeface.xml (else $ANIME_AVATAR_CASCADE, else download)"
    )
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="lbp: image pyramid step")
    min_neighbors: int = Field(5, ge=0, description="lbp: detections needed to accept a box")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="animeface: minimum likelihood")
    dedup_distance: int = Field(
        2, ge=-1, le=64, description="drop crops within this perceptual-hash distance of an earlier one (-1: keep all)"
    )
    workers: int = Field(0, ge=0, description="processes for detection (0: one per core)")
    executor: Literal["local", "dask"] = Field(
        "local", description="local processes, or a Dask cluster through Prefect's DaskTaskRunner"
    )
    dask_address: str = Field("", description="dask: scheduler address (tcp://host:8786); empty: a local cluster")
    dask_chunk: int = Field(32, ge=1, description="dask: images per task")


class TransformSpec(BaseModel):
    """One albumentations transform: its class name plus its keyword arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AugmentParams(Section):
    transforms: list[TransformSpec] = Field(
        default_factory=lambda: [TransformSpec(name="HorizontalFlip", p=1.0)],
        description="albumentations transforms applied, in order, to make each extra copy",
    )
    copies: int = Field(1, ge=0, le=64, description="augmented copies per face")
    keep_original: bool = Field(True, description="also keep each face unchanged")
    seed: int = 0
    shard_size: int = Field(4096, ge=1, description="images per packed .npy shard")

    @model_validator(mode="after")
    def _produces_something(self) -> AugmentParams:
        if self.copies == 0 and not self.keep_original:
            raise ValueError("augment.copies is 0 and augment.keep_original is false: no training images")
        return self


class ValidateParams(Section):
    min_count: int = Field(100, ge=1, description="fewest face crops accepted")
    max_count: int = Field(10_000_000, ge=1)
    brightness_min: float = Field(0.05, ge=0.0, le=1.0, description="lowest mean brightness (0-1) of an image")
    brightness_max: float = Field(0.95, ge=0.0, le=1.0)
    contrast_min: float = Field(0.03, ge=0.0, le=1.0, description="lowest std of brightness (0-1): rejects flat images")
    data_docs: bool = Field(True, description="build Great Expectations Data Docs HTML")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> ValidateParams:
        if self.brightness_min >= self.brightness_max:
            raise ValueError("validate.brightness_min must be below validate.brightness_max")
        if self.min_count > self.max_count:
            raise ValueError("validate.min_count must not exceed validate.max_count")
        return self


class ModelParams(Section):
    arch: Literal["dcgan", "sagan"] = "sagan"
    attention: list[int] = Field(default_factory=lambda: [16], description="sagan: resolutions with self-attention")
    channels: int = Field(16, ge=1, le=1024, description="width at the output resolution; doubles per halving")
    max_channels: int = Field(512, ge=1, le=4096)
    z_dim: int = Field(128, ge=1, le=4096)


class TrainParams(Section):
    steps: int = Field(3000, ge=1, description="discriminator+generator updates")
    batch_size: int = Field(32, ge=1, description="images per step, over all processes")
    loss: Literal["bce", "hinge", "wgan-gp"] = "hinge"
    lr_g: float = Field(1e-4, gt=0.0, lt=1.0)
    lr_d: float = Field(4e-4, gt=0.0, lt=1.0)
    beta1: float = Field(0.0, ge=0.0, lt=1.0)
    beta2: float = Field(0.9, ge=0.0, lt=1.0)
    gp_weight: float = Field(10.0, ge=0.0, description="wgan-gp: gradient penalty weight")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    amp: bool = Field(True, description="bfloat16 autocast where the device supports it (CUDA)")
    ema: float = Field(0.999, ge=0.0, le=1.0, description="decay of the generator's moving average")
    diffaugment: str = Field("color,translation,cutout", description="DiffAugment policy ('' = off)")
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(500, ge=1, description="steps between fixed-latent sample grids")
    log_every: int = Field(10, ge=1, description="steps between logged losses")
    threads: int = Field(0, ge=0, description="CPU threads for torch (0: torch's default)")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
        return value

    @field_validator("diffaugment")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        from anime_avatar.diffaugment import parse_policy

        parse_policy(value)
        return value


class EvalParams(Section):
    n_samples: int = Field(1000, ge=2, description="generated images for FID/KID")
    batch_size: int = Field(50, ge=1)
    kid_subset_size: int = Field(1000, ge=2)
    seed: int = 0
    device: str = "auto"


class TrackingParams(Section):
    experiment: str = Field("anime-avatar", min_length=1)
    model_name: str = Field("anime-avatar-generator", min_length=1, description="MLflow registered model")
    register_model: bool = Field(True, description="register the generator under model_name")


class PipelineParams(Section):
    """The Prefect flows (``anime-avatar pipeline`` / ``retrain``); not read by any DVC stage."""

    download_retries: int = Field(3, ge=0, le=20, description="retries of the download task")
    retry_delay_s: float = Field(10.0, ge=0.0, description="first retry delay; doubles on each retry")


class Params(Section):
    data: DataParams = DataParams()
    detect: DetectParams = DetectParams()
    augment: AugmentParams = AugmentParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    eval: EvalParams = EvalParams()
    tracking: TrackingParams = TrackingParams()
    pipeline: PipelineParams = PipelineParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())

    @property
    def validation(self) -> ValidateParams:
        return self.validate_

    @model_validator(mode="after")
    def _net_is_buildable(self) -> Params:
        self.net_config()
        return self

    def net_config(self):  # -> anime_avatar.nets.NetConfig
        """The generator/discriminator architecture; the resolution is detect.image_size."""
        from anime_avatar.nets import RESOLUTIONS, NetConfig

        if self.detect.image_size not in RESOLUTIONS:
            raise ValueError(f"detect.image_size must be one of {', '.join(map(str, RESOLUTIONS))} to train a GAN")
        m = self.model
        return NetConfig(m.arch, self.detect.image_size, m.z_dim, m.channels, tuple(m.attention), m.max_channels)


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if not key or msg.startswith(key):  # a check that names its own keys
            lines.append(f"{source}: {msg}")
        else:
            lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a params mapping; a bad key or value raises ParamsError naming it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, str(path))
