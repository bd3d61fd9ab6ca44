"""``params.yaml``: the single source of truth, parsed once into validated, typed objects.

Every value and its documentation live in ``params.yaml`` only; this schema holds types
and bounds, no defaults, so a key missing from the file is an error naming it rather
than a second, silently different default. Every section rejects unknown keys, and
every bad value is reported with the dotted name of its key (``detect.margin: ...``),
so ``dvc exp run -S`` typos fail fast instead of being silently ignored.

Keys marked :func:`operational` change how a stage runs (devices, threads, logging
frequency, where runs are tracked), never what it produces: DVC does not track them
(see :func:`semantic_keys`), so changing them leaves the pipeline up to date.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from anime_avatar.core.architecture import net_config
from anime_avatar.core.errors import ParamsError

DEFAULT_PARAMS = Path("params.yaml")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# The DiffAugment policies train.diffaugment may name (gan/diffaugment.py implements each; a test keeps them equal).
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")
_OPERATIONAL = {"operational": True}


def operational(**constraints: Any) -> Any:
    """A key that does not change a stage's outputs: not declared as a DVC param, not in checkpoint fingerprints."""
    return Field(json_schema_extra=_OPERATIONAL, **constraints)


def _device_spec(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
    return value


DeviceSpec = Annotated[str, AfterValidator(_device_spec)]
# The commands' rule for seeds (core.limits.SEED_LIMIT, kept literal here: importing limits would add it to every
# stage's DVC deps; a test keeps the two equal). NumPy refuses negative seeds, torch those of 2**64 and above.
Seed = Annotated[int, Field(ge=0, lt=2**62)]


def _no_home_shorthand(value: str) -> str:
    if value.startswith("~"):
        raise ValueError(f"{value!r} starts with ~, which DVC does not expand (dvc.yaml lists this path as a "
                         "stage's dependency): write the full path, e.g. $HOME/… in a shell")  # fmt: skip
    return value


# A path that dvc.yaml interpolates into a stage's deps (${stylize.style_path}): DVC takes it literally.
DvcDependency = Annotated[str, Field(min_length=1), AfterValidator(_no_home_shorthand)]


class Section(BaseModel):
    # allow_inf_nan: a NaN or infinite value (YAML .nan, .inf) is an error naming its key, not a silent nonsense run.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Computes(Section):
    """A stage's operational keys for where it computes: the device and the CPU threads."""

    device: DeviceSpec = operational()
    threads: int = operational(ge=0)


class TrainingLoop(Computes):
    """A training stage's operational keys: how often it saves its checkpoint and logs its losses as well."""

    checkpoint_every: int = operational(ge=1)
    log_every: int = operational(ge=1)


class SyntheticParams(Section):
    count: int = Field(ge=1, le=1_000_000)
    seed: Seed
    size: int = Field(ge=128, le=4096)


class DataParams(Section):
    section: ClassVar[str] = "data"  # the params section, for messages: photos reads the same keys
    source: Literal["synthetic", "local", "url", "hf"]
    path: str
    url: str
    sha256: str
    hf_dataset: str
    hf_split: str
    hf_image_column: str
    license: str
    max_files: int = Field(ge=0)
    max_extract_mb: int = Field(ge=1)
    max_image_mb: int = Field(ge=1)
    # How hard a url download tries: never changes the bytes it gets (a sha256 or the size checks them).
    download_retries: int = operational(ge=0, le=100)
    stall_timeout_s: float = operational(gt=0.0, le=3600.0)
    deadline_s: float = operational(gt=0.0)
    synthetic: SyntheticParams

    @field_validator("sha256")
    @classmethod
    def _sha256_is_hex(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not SHA256_RE.match(value):
            raise ValueError("must be 64 hexadecimal characters (or empty)")
        return value

    @model_validator(mode="after")
    def _source_has_its_location(self, info: ValidationInfo) -> DataParams:
        needed = {"local": "path", "url": "url", "hf": "hf_dataset"}.get(self.source)
        if needed and not getattr(self, needed):
            raise ValueError(f"{self.section}.source is {self.source!r} but {self.section}.{needed} is empty")
        if self.source == "url" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"{self.section}.url must start with http:// or https://")
        if self.source == "url":
            problem = _url_problem(self.url)
            if problem:  # said now, not after retries that treat it as a network failure
                raise ValueError(f"{self.section}.url {self.url!r} {problem}")
        if self.source == "local":
            overlap = _pipeline_folder_overlap(self.path, (info.context or {}).get("root", Path(".")))
            if overlap:
                raise ValueError(
                    f"{self.section}.path {self.path} {overlap}, a folder the pipeline writes: `dvc repro` deletes "
                    "and remakes it, and the images there would be lost. Put them elsewhere (e.g. data/mine or "
                    "~/anime) and name that folder"
                )
        return self


# The folders the pipeline's stages write (DVC outputs: deleted before their stage runs); a test keeps this list
# in step with dvc.yaml.
PIPELINE_FOLDERS = ("data/raw", "data/faces", "data/train", "data/photos", "models")


def _pipeline_folder_overlap(path: str, root: Path) -> str:
    """How a local source ``path`` overlaps a folder the pipeline of the project at ``root`` (the params file's
    folder, where the stages run) writes ("" when it does not)."""
    where = (root / os.path.expanduser(path)).resolve()  # an absolute path stays itself
    for folder in PIPELINE_FOLDERS:
        written = (root / folder).resolve()
        if where == written:
            return "is"
        if where.is_relative_to(written):
            return f"is inside {folder}"
        if written.is_relative_to(where):
            return f"holds {folder}"
    return ""


def _url_problem(url: str) -> str:
    """Why an http(s) URL cannot be requested as written ("" when it can)."""
    from urllib.parse import urlsplit

    if any(c.isspace() for c in url):
        return "has a space in it: write it as %20"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as err:
        return f"is not a valid URL ({err})"
    return "" if parts.hostname else "has no host name"


class PhotosParams(DataParams):
    """download_photos: the translator's photo domain, from the same kinds of source as data (synthetic: procedural
    photo-like faces)."""

    section: ClassVar[str] = "photos"


class DetectParams(Section):
    detector: Literal["lbp", "animeface", "none"]
    image_size: int = Field(ge=8, le=768)
    margin: float = Field(ge=0.0, le=2.0)
    min_face: int = Field(ge=4)
    max_side: int = Field(ge=64, le=16384)
    cascade_path: str
    scale_factor: float = Field(gt=1.0, le=2.0)
    min_neighbors: int = Field(ge=0)
    min_score: float = Field(ge=0.0, le=1.0)
    dedup_distance: int = Field(ge=-1, le=64)
    # Where detection runs does not change the crops (a test compares dask with local).
    workers: int = operational(ge=0)
    executor: Literal["local", "dask"] = operational()
    dask_address: str = operational()
    dask_chunk: int = operational(ge=1)


class TransformSpec(BaseModel):
    """One albumentations transform: its class name plus its keyword arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AugmentParams(Section):
    transforms: list[TransformSpec]
    copies: int = Field(ge=0, le=64)
    keep_original: bool
    seed: Seed
    shard_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _produces_something(self) -> AugmentParams:
        if self.copies == 0 and not self.keep_original:
            raise ValueError("augment.copies is 0 and augment.keep_original is false: no training images")
        return self


class ValidateParams(Section):
    min_count: int = Field(ge=1)
    max_count: int = Field(ge=1)
    brightness_min: float = Field(ge=0.0, le=1.0)
    brightness_max: float = Field(ge=0.0, le=1.0)
    contrast_min: float = Field(ge=0.0, le=1.0)
    data_docs: bool

    @model_validator(mode="after")
    def _ranges_ordered(self) -> ValidateParams:
        if self.brightness_min >= self.brightness_max:
            raise ValueError("validate.brightness_min must be below validate.brightness_max")
        if self.min_count > self.max_count:
            raise ValueError("validate.min_count must not exceed validate.max_count")
        return self


class ModelParams(Section):
    arch: Literal["dcgan", "sagan"]
    attention: list[int]
    channels: int = Field(ge=1, le=1024)
    max_channels: int = Field(ge=1, le=4096)
    z_dim: int = Field(ge=1, le=4096)


class TrainParams(TrainingLoop):
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    loss: Literal["bce", "hinge", "wgan-gp"]
    lr_g: float = Field(gt=0.0, lt=1.0)
    lr_d: float = Field(gt=0.0, lt=1.0)
    beta1: float = Field(ge=0.0, lt=1.0)
    beta2: float = Field(ge=0.0, lt=1.0)
    gp_weight: float = Field(ge=0.0)
    seed: Seed
    amp: bool
    ema: float = Field(ge=0.0, le=1.0)
    diffaugment: str
    sample_every: int = operational(ge=1)

    @field_validator("diffaugment")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        parse_policy(value)
        return value


# The runtimes that may compute the FID Inception features (anime_avatar/metrics/inception_backends.py).
InceptionBackend = Literal["auto", "torchscript", "openvino", "onnxruntime"]


class EvalParams(Section):
    n_samples: int = Field(ge=2)
    batch_size: int = Field(ge=1)
    kid_subset_size: int = Field(ge=2)
    seed: Seed
    device: DeviceSpec = operational()
    # Operational: every backend computes the same float32 features to ~2e-6 relative (tested within 1e-4; FID
    # moves by far less than 0.1), like a change of thread count does.
    inception_backend: InceptionBackend = operational()


# The style-transfer methods stylize_eval can compare (anime_avatar/style/transfer.py implements each).
STYLE_METHODS = (
    "gatys-inception", "gatys-inception-softmax", "gatys-vgg19", "gatys-vgg19-softmax", "adain", "attention",
)  # fmt: skip
FUSION_METHODS = ("attention", "adain")  # the trained nets (stylize_train)
FeatureNetwork = Literal["inception", "vgg19"]


class StylizeParams(TrainingLoop):
    """stylize_train: the attention fusion network and its AdaIN baseline."""

    style_path: DvcDependency
    features: FeatureNetwork
    methods: list[Literal[FUSION_METHODS]] = Field(min_length=1)  # type: ignore[valid-type]
    # Style images are resized to twice it: at most limits.MAX_SIDE. At least 48: below 35 px the deeper fusion layer
    # (Inception's mixed_2) is 1x1, its content loss 0 and its style statistics constant; 2x2 up to 42.
    image_size: int = Field(ge=48, le=384)
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0, lt=1.0)
    content_weight: float = Field(ge=0.0)
    style_weight: float = Field(ge=0.0)
    identity_pixel_weight: float = Field(ge=0.0)
    identity_feature_weight: float = Field(ge=0.0)
    adversarial_weight: float = Field(ge=0.0)
    key_dim: int = Field(ge=1, le=1024)
    max_keys: int = Field(ge=1, le=1024)  # core.limits.MAX_ATTENTION_KEYS (a test keeps them equal)
    decoder_width: int = Field(ge=16, le=1024)
    max_faces: int = Field(ge=0)
    max_styles: int = Field(ge=0)
    seed: Seed

    @field_validator("methods")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a method twice")
        return value


class GatysParams(Section):
    """Optimisation-based transfer: stylize_eval's gatys-* methods and `anime-avatar stylize --method gatys`."""

    steps: int = Field(ge=1)
    optimizer: Literal["lbfgs", "adam"]
    lr: float = Field(gt=0.0)
    content_weight: float = Field(ge=0.0)
    style_weight: float = Field(ge=0.0)
    tv_weight: float = Field(ge=0.0)
    temperature: float = Field(gt=0.0)


class PhotoFacesParams(Section):
    """Faces in photos of people (OpenCV's frontal-face Haar cascade): stylize_eval.photos and `anime-avatar avatar`."""

    margin: float = Field(ge=0.0, le=2.0)
    min_size: float = Field(gt=0.0, le=1.0)
    scale_factor: float = Field(gt=1.0, le=2.0)
    min_neighbors: int = Field(ge=0)


class StylizeEvalParams(Computes):
    """stylize_eval: every method on one fixed content/style set."""

    content_path: DvcDependency
    photos: list[str]
    style_path: DvcDependency
    n_content: int = Field(ge=0)
    n_styles: int = Field(ge=1)
    image_size: int = Field(ge=64, le=768)
    methods: list[Literal[STYLE_METHODS]] = Field(min_length=1)  # type: ignore[valid-type]
    alphas: list[float] = Field(min_length=2)
    timing_repeats: int = operational(ge=1)

    @field_validator("alphas")
    @classmethod
    def _blend_fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= a <= 1.0 for a in value):
            raise ValueError("every alpha must lie in 0..1 (0 = the content's features, 1 = fully stylised)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _has_contents(self) -> StylizeEvalParams:
        if self.n_content == 0 and not self.photos:
            raise ValueError("stylize_eval.n_content is 0 and stylize_eval.photos is empty: nothing to stylise")
        return self


TRANSLATE_ATTENTION = ("cam+mask", "cam", "mask", "none")  # anime_avatar/translate/nets.py builds each


class TranslateParams(TrainingLoop):
    """translate_train: the photo <-> anime translator (cycle-consistent GAN with CAM attention and a mask)."""

    photos: DvcDependency
    anime: DvcDependency
    image_size: int = Field(ge=16, le=512)
    channels: int = Field(ge=1, le=256)
    n_blocks: int = Field(ge=1, le=16)
    attention: Literal[TRANSLATE_ATTENTION]  # type: ignore[valid-type]
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0.0, lt=1.0)
    beta1: float = Field(ge=0.0, lt=1.0)
    beta2: float = Field(ge=0.0, lt=1.0)
    cycle_weight: float = Field(ge=0.0)
    identity_weight: float = Field(ge=0.0)
    cam_weight: float = Field(ge=0.0)
    mask_weight: float = Field(ge=0.0)
    mask_min_drawn: float = Field(ge=0.0, le=1.0)
    ema: float = Field(ge=0.0, lt=1.0)
    max_images: int = Field(ge=0)
    seed: Seed
    amp: bool
    sample_every: int = operational(ge=1)

    @field_validator("image_size")
    @classmethod
    def _halves_twice(cls, value: int) -> int:
        if value % 4:
            raise ValueError("must be a multiple of 4 (the generator halves it twice)")
        return value


class TranslateEvalParams(Computes):
    """translate_eval: the translator on test photos against test anime faces (KID, FID, face rate, structure)."""

    photos: DvcDependency
    anime: DvcDependency
    reference: DvcDependency
    n_images: int = Field(ge=0)
    image_size: int = Field(ge=32, le=512)
    kid_subset_size: int = Field(ge=2)
    detector_min_face: int = Field(ge=4)
    seed: Seed
    timing_repeats: int = operational(ge=1)
    inception_backend: InceptionBackend = operational()

    @field_validator("n_images")
    @classmethod
    def _two_or_all(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (all) or at least 2: KID and FID compare sets of two or more images")
        return value


class TrackingParams(Section):
    """Where runs and models are recorded: never changes an output."""

    experiment: str = operational(min_length=1)
    model_name: str = operational(min_length=1)
    stylizer_model_name: str = operational(min_length=1)
    translator_model_name: str = operational(min_length=1)
    register_model: bool = operational()


class PipelineParams(Section):
    """The Prefect flows (``anime-avatar pipeline`` / ``retrain``); not read by any DVC stage."""

    download_retries: int = operational(ge=0, le=20)
    retry_delay_s: float = operational(ge=0.0)


class Params(Section):
    data: DataParams
    detect: DetectParams
    augment: AugmentParams
    validate_: ValidateParams = Field(alias="validate")
    model: ModelParams
    train: TrainParams
    eval: EvalParams
    stylize: StylizeParams
    gatys: GatysParams
    photo_faces: PhotoFacesParams
    stylize_eval: StylizeEvalParams
    photos: PhotosParams
    translate: TranslateParams
    translate_eval: TranslateEvalParams
    tracking: TrackingParams
    pipeline: PipelineParams

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=(), allow_inf_nan=False
    )

    @property
    def validation(self) -> ValidateParams:
        return self.validate_

    @model_validator(mode="after")
    def _net_is_buildable(self) -> Params:
        # The train stage reads its resolution from the training images, which detect makes at
        # detect.image_size: check here, before any stage runs, that such a net can be built.
        net_config(self.model, self.detect.image_size, key="detect.image_size")
        return self

    @model_validator(mode="after")
    def _evaluated_nets_are_trained(self) -> Params:
        # stylize_eval loads each net it compares from the stylizer stylize_train makes: checked before any stage.
        untrained = [m for m in self.stylize_eval.methods if m in FUSION_METHODS and m not in self.stylize.methods]
        if untrained:
            raise ValueError(
                f"stylize_eval.methods names {', '.join(untrained)}, which stylize.methods does not train: add it "
                "to stylize.methods, or take it out of stylize_eval.methods"
            )
        return self


def parse_policy(policy: str) -> list[str]:
    """The DiffAugment policy names in ``policy`` ("color,translation"); raises ValueError naming train.diffaugment."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in DIFFAUGMENT_POLICIES]
    if unknown:
        raise ValueError(
            f"train.diffaugment: unknown policy {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(DIFFAUGMENT_POLICIES)} (comma-separated, or empty for none)"
        )
    return names


def is_operational(section: type[BaseModel], key: str) -> bool:
    extra = section.model_fields[key].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("operational"))


def semantic_keys(section_name: str) -> list[str]:
    """The dotted keys of a section that change outputs: what a stage declares as DVC params."""
    field = Params.model_fields["validate_" if section_name == "validate" else section_name]
    section = field.annotation
    return [f"{section_name}.{key}" for key in section.model_fields if not is_operational(section, key)]


def semantic_values(section: BaseModel) -> dict[str, Any]:
    """A section's values without its operational keys (e.g. for a checkpoint's fingerprint)."""
    keep = {key for key in type(section).model_fields if not is_operational(type(section), key)}
    return section.model_dump(mode="json", include=keep)


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]).replace("validate_", "validate")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "missing (every key must be in params.yaml; see the project's params.yaml for its value)"
        if not key or msg.startswith(key):  # a check that names its own keys
            lines.append(f"{source}: {msg}")
        else:
            lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a complete params mapping; a bad, unknown or missing key raises ParamsError naming it."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections")
    try:  # relative paths are the project's, whose root is the params file's folder (not the current folder)
        return Params.model_validate(raw, context={"root": Path(source).parent})
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None
    except ValueError as err:  # raised by a check that builds an object (the nets' config)
        raise ParamsError(f"{source}: {err}") from None


def read_params_file(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> dict[str, Any]:
    """The raw mapping of a params file; a missing or malformed file raises ParamsError."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file (run from the project root)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``changes`` applied key by key (nested mappings merged, other values replaced)."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS, changes: dict[str, Any] | None = None) -> Params:
    """Parse a params file, optionally with ``changes`` merged in (as ``dvc exp run -S`` would)."""
    raw = read_params_file(path)
    return parse_params(merge(raw, changes) if changes and isinstance(raw, dict) else raw, str(path))
