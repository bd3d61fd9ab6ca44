"""``anime-avatar studio``: a local web page (Gradio) over the project's models and runs.

Three tabs, each on the library functions the command line uses, not copies of them:

* **Generate**: avatars by seed and truncation as one grid (the pixels of ``anime-avatar generate --grid``),
  a walk between two seeds as a strip and a GIF (``generate --interpolate``);
* **Photo → avatar**: the faces found in a photo (``data/photos.py``), then the largest one translated
  (``translate/``) or restyled (``style/transfer.py``: attention network, AdaIN, Gatys) as ``anime-avatar avatar``;
* **Runs**: FID/KID of the training runs in MLflow (``ops/runs.py``), the champion and its data version, the
  latest validation report, the sample grids each run logged.

The :class:`Studio` object holds the models and answers each request; :func:`build_app` lays the page out on it.
Every answer says which model made the picture. A mistake a user can make (a text file as a photo, no face, no
trained model) is one line on the page, never a traceback. The server binds to 127.0.0.1 unless told otherwise,
never makes a share link, and Gradio's analytics are off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anime_avatar.core import limits
from anime_avatar.core.errors import UserError, first_line
from anime_avatar.core.params import DEFAULT_PARAMS, load_params

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860

# Caps on one request: the command line's and the served models' where they have them (core/limits.py: seeds,
# output sides, pixels of what an input makes; the image reader's pixel cap), the studio's own for the rest.
MAX_AVATARS = 64  # avatars in one grid
MAX_WALK_STEPS = 32  # images in one walk
MAX_SEED = limits.SEED_LIMIT - 1  # as `generate --seed` and the served generator
MAX_TRUNCATION = 4.0  # beyond ±4 the truncation trick changes nothing a person would see
MAX_AVATAR_SIDE = limits.MAX_SIDE  # the avatar's side in pixels, as --size
MIN_AVATAR_SIDE = 32
MAX_GATYS_STEPS = 300  # network evaluations of one Gatys request (30 s per 100 at 256 px on the CPU)
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # per uploaded file; Gradio refuses bigger ones before they reach us
# Any request's body: an upload sent inline (a base64 data URL in the JSON of an API call) is 4/3 of its file, and
# Gradio's own limit covers only multipart uploads. Bigger bodies are refused before they are read.
MAX_REQUEST_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 2**20
KEEP_FILES_S = 3600  # the pictures of answers older than this are deleted (Gradio's copies too: delete_cache)
PREVIEW_SIDE = 768  # the photo with its face boxes is shown at most this large
STYLE_SIZE = 256

# The page's method names -> the command line's --method values.
METHODS = {
    "translate (photo → anime GAN)": "translate",
    "attention network": "network",
    "AdaIN": "adain",
    "Gatys (optimisation, slow)": "gatys",
}
METHOD_LABELS = {cli_name: label for label, cli_name in METHODS.items()}


@dataclass(frozen=True)
class Loaded:
    """A model ready to use, and the words the page uses to say which model it is."""

    model: Any
    label: str


def whole_number(value: Any, name: str, low: int, high: int) -> int:
    """``value`` (a number or text from the page) as an int in [low, high], else one UserError naming ``name``.

    Exact: an int or a decimal text is read as it is, never through a float (a seed of 2**53 + 1 would become
    2**53, and the page would draw another seed's avatars than ``generate --seed`` does)."""
    try:
        number = Decimal(value)
    except (TypeError, ValueError, ArithmeticError):
        raise UserError(f"{name}: {value!r} is not a number") from None
    if not number.is_finite():
        raise UserError(f"{name}: {value!r} is not a number")
    # The range first, on the Decimal: int() of a typed "1e9000000" takes minutes, holding the GIL (every request).
    if not low <= number <= high:
        shown = f"{number:.6g}" if abs(number.adjusted()) > 30 else str(number)
        raise UserError(f"{name}: {shown} is not between {low} and {high}")
    if number != number.to_integral_value():
        raise UserError(f"{name}: {value} is not a whole number")
    return int(number)


def truncation_value(value: Any) -> float:
    try:
        number = float(value if value is not None else 0.0)
    except (TypeError, ValueError):
        raise UserError(f"truncation: {value!r} is not a number") from None
    if not 0.0 <= number <= MAX_TRUNCATION:
        raise UserError(f"truncation: {value} is not between 0 and {MAX_TRUNCATION:g} (0: off; 0.7 is typical)")
    return number


class Studio:
    """The models (loaded once, one request at a time each) and the request handlers of the page.

    It works in ``root`` (the project: params.yaml, models/, mlflow.db), as the command line does in the
    working folder: the process changes into it.
    """

    def __init__(self, root: Path, params_file: Path | None = None, out: Path | None = None) -> None:
        root = Path(root).resolve()
        if Path.cwd().resolve() != root:
            os.chdir(root)  # the library's default paths (models/, mlflow.db) are relative to the working folder
        self.root = root
        params_file = Path(params_file or DEFAULT_PARAMS)
        if not params_file.is_file():
            raise UserError(f"no {params_file} in {root}: start the studio inside the project")
        self.params = load_params(params_file)
        self._own_out = out is None  # a folder the studio made is removed when it stops (it holds people's photos)
        self.out = Path(out or tempfile.mkdtemp(prefix="anime-avatar-studio-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self._models: dict[str, Loaded] = {}
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()

    # --- models -----------------------------------------------------------------------------------

    def lock(self, key: str) -> threading.Lock:
        """One lock per heavy model: the queue already runs one request at a time per model; this holds
        for calls from elsewhere (tests, a second page event) too."""
        with self._locks_lock:
            return self._locks[key]

    def _cached(self, key: str, load: Callable[[], Loaded]) -> Loaded:
        with self.lock(f"load:{key}"):
            if key not in self._models:
                self._models[key] = load()
                log.info("studio: %s", self._models[key].label)
            return self._models[key]

    def _tracking_store(self) -> str | None:
        """The tracking URI when there is a store to read (never creates an empty mlflow.db)."""
        from anime_avatar.ops.tracking import missing_tracking_db, tracking_uri

        uri = tracking_uri()
        return None if missing_tracking_db(uri) else uri

    def generator(self) -> Loaded:
        """The registered champion where there is one, else the workspace's models/generator.pt
        (``anime-avatar generate``'s choice, through the same :func:`resolve_generator`)."""
        return self._cached("generator", self._load_generator)

    def _load_generator(self) -> Loaded:
        from anime_avatar.artifacts.generator import GENERATOR, read_generator
        from anime_avatar.ops.registry import CHAMPION, resolve_generator

        name = self.params.tracking.model_name
        uri = f"models:/{name}@{CHAMPION}"
        not_champion = "no MLflow database"
        if store := self._tracking_store():
            try:
                net = resolve_generator(uri, name)
                return Loaded(net, f"the registered champion {uri}{self._champion_detail(store, name)}")
            except UserError as err:
                not_champion = first_line(err)
        if not GENERATOR.is_file():
            raise UserError(f"no generator: no registered champion ({not_champion}) and no {GENERATOR}; "
                            "train one with `dvc repro train`")  # fmt: skip
        net = resolve_generator(str(GENERATOR), "")
        saved = read_generator(GENERATOR)
        run = f", run {saved.run_id[:8]}" if saved.run_id else ""
        return Loaded(net, f"the workspace's {GENERATOR} (step {saved.step}{run}; no champion used: {not_champion})")

    @staticmethod
    def _champion_detail(uri: str, name: str) -> str:
        from mlflow import MlflowClient

        from anime_avatar.ops.registry import champion

        try:
            found = champion(MlflowClient(uri), name)
        except Exception:  # the label is a courtesy: the model itself loaded
            return ""
        if found is None:
            return ""
        fid = f", FID {found.fid:.2f}" if found.fid is not None else ""
        return f" (version {found.version}, run {found.run_id[:8]}{fid})"

    def translator(self) -> Loaded:
        """The workspace's models/translator.pt, else the shipped one (``anime-avatar avatar``'s choice)."""

        def load() -> Loaded:
            from anime_avatar.artifacts.translator import SHIPPED_TRANSLATOR
            from anime_avatar.translate.model_file import load_translator

            trained = load_translator(None, "anime")
            which = "the shipped translator" if trained.path == SHIPPED_TRANSLATOR else "the workspace's translator"
            shown = trained.path.name if trained.path == SHIPPED_TRANSLATOR else trained.path
            return Loaded(trained, f"{which} {shown} ({trained.image_size} px, step {trained.step})")

        return self._cached("translator", load)

    def style_method(self, method: str, steps: int | None = None) -> Loaded:
        """The stylising function of ``method`` (network, adain: models/stylizer.pt, else the newest registered
        stylizer; gatys: params.yaml's gatys section with ``steps``), as ``anime-avatar avatar`` builds it."""
        from anime_avatar.style.transfer import make_method, method_name

        if method == "gatys":
            steps = steps or self.params.gatys.steps

            def load_gatys() -> Loaded:
                settings = self.params.gatys.model_copy(update={"steps": steps})
                label = f"Gatys optimisation on the FID Inception features, softmax transform, {steps} steps"
                return Loaded(make_method(method_name("gatys"), gatys=settings), label)

            return self._cached(f"gatys-{steps}", load_gatys)

        def load_net() -> Loaded:
            from anime_avatar.ops.stylizer_models import resolve_stylizer

            path = resolve_stylizer(None, self.params.tracking.stylizer_model_name)
            name = method_name(method)
            return Loaded(make_method(name, stylizer=path), f"the {name} net of {path}")

        return self._cached(f"stylizer-{method}", load_net)

    def warm(self) -> list[str]:
        """Load the generator and the translator and the face detector before the first click; what could not
        be loaded is said (that tab then says it too), the rest of the page works."""
        from PIL import Image

        problems = []
        from anime_avatar.artifacts.stylizer import STYLIZER

        loads = [("generator", self.generator), ("translator", self.translator),
                 ("face detector", lambda: self._faces(Image.new("RGB", (64, 64))))]  # fmt: skip
        if STYLIZER.is_file():  # the registered stylizer is not fetched before it is asked for
            loads += [(f"{m} stylizer", lambda m=m: self.style_method(m)) for m in ("network", "adain")]
        for what, load in loads:
            try:
                load()
            except UserError as err:
                problems.append(f"{what}: {first_line(err)}")
                log.warning("studio: %s: %s", what, first_line(err))
        return problems

    # --- files -------------------------------------------------------------------------------------

    def _new_file(self, name: str) -> Path:
        """A fresh path named ``name`` (what the browser downloads it as) that no other request writes; answers
        older than KEEP_FILES_S are deleted first, so a long-running studio neither fills the disk nor keeps photos."""
        self._prune(time.time() - KEEP_FILES_S)
        folder = self.out / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        return folder / name

    def close(self) -> None:
        """Delete the answers' folder if the studio made it (a folder given to it is left as it is)."""
        if self._own_out:
            shutil.rmtree(self.out, ignore_errors=True)

    def _prune(self, before: float) -> None:
        # One request prunes at a time: two that both listed a folder would race to stat and remove it.
        with self.lock("prune"):
            for folder in self.out.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if folder.is_dir() and len(folder.name) == 12 and folder.stat().st_mtime < before:
                        shutil.rmtree(folder, ignore_errors=True)

    def _write_png(self, name: str, data: bytes) -> Path:
        path = self._new_file(name)
        path.write_bytes(data)
        return path

    def _save(self, name: str, image: Image.Image) -> Path:
        path = self._new_file(name)
        image.save(path)
        return path

    # --- Generate -----------------------------------------------------------------------------------

    def generate(self, seed: Any, count: Any, truncation: Any) -> tuple[Path, str]:
        """The grid of avatars of seeds ``seed`` .. ``seed + count - 1``: the PNG `anime-avatar generate --seed S
        --n N --truncation T --grid` writes, byte for byte the same pixels; and which model made it."""
        from anime_avatar.gan.inference import avatars
        from anime_avatar.nn.images import grid_png

        seed = whole_number(seed, "seed", 0, MAX_SEED)
        count = whole_number(count, "avatars", 1, MAX_AVATARS)
        truncation = truncation_value(truncation)
        if seed + count - 1 > MAX_SEED:
            raise UserError(f"seed: the last seed {seed + count - 1} is not below 2**62")
        generator = self.generator()
        with self.lock("generator"):
            images = avatars(generator.model, list(range(seed, seed + count)), truncation)
        png = grid_png(images, nrow=max(1, int(len(images) ** 0.5)))  # as `generate --grid`
        path = self._write_png(f"avatars-seed{seed}-n{count}-t{truncation:g}.png", png)
        return path, (f"{count} avatar{'s' * (count != 1)}, seeds {seed}–{seed + count - 1}, truncation "
                      f"{truncation:g}; made by {generator.label}")  # fmt: skip

    def walk(self, seed_a: Any, seed_b: Any, steps: Any, truncation: Any) -> tuple[Path, Path, str]:
        """A latent walk from seed A to seed B (`generate --interpolate A B --steps N --grid`): the strip PNG and
        the same frames as a looping GIF (there and back)."""
        from PIL import Image

        from anime_avatar.gan.inference import walk
        from anime_avatar.nn.images import grid_png

        a = whole_number(seed_a, "seed A", 0, MAX_SEED)
        b = whole_number(seed_b, "seed B", 0, MAX_SEED)
        steps = whole_number(steps, "walk steps", 2, MAX_WALK_STEPS)
        truncation = truncation_value(truncation)
        generator = self.generator()
        with self.lock("generator"):
            images = walk(generator.model, a, b, steps=steps, truncation=truncation)
        strip = self._write_png(f"walk-{a}-{b}.png", grid_png(images, nrow=len(images)))
        frames = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        scale = max(1, 128 // frames[0].width)  # 32 px avatars are shown 4x, with sharp pixels
        frames = [f.resize((f.width * scale, f.height * scale), Image.Resampling.NEAREST) for f in frames]
        frames += frames[-2:0:-1]
        gif = self._new_file(f"walk-{a}-{b}.gif")
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=120, loop=0)
        return strip, gif, f"walk from seed {a} to seed {b} in {steps} steps; made by {generator.label}"

    # --- Photo -> avatar ----------------------------------------------------------------------------

    @staticmethod
    def read_upload(file: Any, what: str) -> Image.Image:
        """An uploaded file as RGB, with the command line's reader (EXIF orientation; a photo longer than
        MAX_READ_SIDE, such as a 108-megapixel JPEG from a phone, read reduced as ``avatar --photo`` reads it);
        anything else is one line naming the file."""
        from anime_avatar.core.limits import MAX_READ_SIDE
        from anime_avatar.data.images import TOO_LARGE, UnreadableImage, load_rgb

        if not file:
            raise UserError(f"no {what}: upload an image (PNG, JPEG or WebP)")
        path = _upload_path(file)
        gone = UserError(f"the {what} {path.name} is no longer on the server (uploads are deleted after an hour): "
                         "upload it again")  # fmt: skip
        try:
            if path.stat().st_size > MAX_UPLOAD_BYTES:
                raise UserError(f"{what} {path.name}: larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
            return load_rgb(path, MAX_READ_SIDE)
        except FileNotFoundError:
            raise gone from None
        except UnreadableImage as err:
            if not path.exists():  # removed between the size check and the read
                raise gone from None
            advice = "upload a smaller one" if TOO_LARGE in str(err) else "upload a PNG, JPEG or WebP"
            raise UserError(f"{what} {path.name} is not a usable image ({err}): {advice}") from None

    def _faces(self, photo: Image.Image) -> list[tuple[int, int, int, int]]:
        from anime_avatar.data.photos import detect_photo_faces

        with self.lock("detector"):  # OpenCV's cascade keeps state in the object: one detection at a time
            return detect_photo_faces(photo, self.params.photo_faces)

    def _boxed(self, photo: Image.Image, boxes: list[tuple[int, int, int, int]]) -> Path:
        """The photo (at most PREVIEW_SIDE) with the face boxes drawn: the largest, which becomes the avatar, in
        orange, the others in white."""
        from PIL import ImageDraw

        preview = photo.copy()
        preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        scale = preview.width / photo.width
        draw = ImageDraw.Draw(preview)
        width = max(2, preview.width // 200)
        for i, (x, y, w, h) in reversed(list(enumerate(boxes))):
            box = [x * scale, y * scale, (x + w) * scale, (y + h) * scale]
            draw.rectangle(box, outline=(255, 140, 0) if i == 0 else (255, 255, 255), width=width)
        return self._save("faces.png", preview)

    def faces(self, file: Any) -> tuple[Path, str]:
        """The photo with its face boxes, and what was found."""
        photo = self.read_upload(file, "photo")
        boxes = self._faces(photo)
        if not boxes:
            return self._boxed(photo, []), (f"no face found in the photo ({photo.width}×{photo.height}): tick "
                                            "'whole picture', or upload a photo with a frontal face")  # fmt: skip
        found = "1 face" if len(boxes) == 1 else f"{len(boxes)} faces; the avatar is of the largest (orange)"
        return self._boxed(photo, boxes), f"{found} found in the photo ({photo.width}×{photo.height})"

    def avatar(self, file: Any, method: str, style_file: Any = None, whole_picture: bool = False,
               size: Any = STYLE_SIZE, steps: Any = None) -> tuple[Path, Path, str]:  # fmt: skip
        """The avatar of the largest face in the photo (or of the whole picture), by ``method`` (translate,
        network, adain, gatys: `anime-avatar avatar --method`), at ``size`` px: (avatar PNG, the photo with the face
        box, which model made it)."""
        from anime_avatar.data.images import center_square
        from anime_avatar.data.photos import photo_faces

        method = METHODS.get(method, method)
        if method not in METHODS.values():
            raise UserError(f"method: {method!r} is not one of {', '.join(METHODS)}")
        size = whole_number(size, "avatar size", MIN_AVATAR_SIDE, MAX_AVATAR_SIDE)
        gatys_steps = whole_number(steps, "Gatys steps", 1, MAX_GATYS_STEPS) if method == "gatys" and steps else None
        photo = self.read_upload(file, "photo")
        style = None
        if method == "translate":
            translator = self.translator()
            crop_size = translator.model.image_size
        else:
            if not style_file:
                raise UserError(f"{METHOD_LABELS[method]} restyles the face after an example: upload a style image "
                                "or pick one of the examples (translate needs none)")  # fmt: skip
            style = self.read_upload(self._example_behind(style_file), "style image")
            crop_size = size
        if whole_picture:
            crop, boxes, where = center_square(photo, crop_size), [], "the whole picture (its central square)"
        else:
            try:
                with self.lock("detector"):  # the same detector as the preview's, which may be running
                    faces = photo_faces(photo, crop_size, self.params.photo_faces)  # largest first
            except UserError as err:  # the command line's advice, in the page's words
                raise UserError(str(err).replace("use --no-detect", "tick 'whole picture'")) from None
            face, crop, boxes = faces[0], faces[0].crop, [f.box for f in faces]
            where = "the face at x={}, y={}, {}×{} px".format(*face.box)
        if method == "translate":
            from anime_avatar.translate.inference import translate_picture

            with self.lock("translator"):
                picture = translate_picture(translator.model.net, crop, size)
            label = translator.label
        else:
            from anime_avatar.style.transfer import stylize_image

            stylizer = self.style_method(method, gatys_steps)
            with self.lock("gatys" if method == "gatys" else "stylizer"):
                picture = stylize_image(stylizer.model, crop, style, size)
            label = stylizer.label
        avatar = self._save(f"avatar-{method}.png", picture)
        return avatar, self._boxed(photo, boxes), f"{size}×{size} avatar of {where}; made by {label}"

    def style_examples(self, count: int = 3) -> list[Path]:
        """Style images to pick from: the pipeline's own synthetic illustrations (offline, always there), and
        a few of the workspace's face crops when the detect stage has run."""
        from anime_avatar.artifacts.faces import FACES_DIR
        from anime_avatar.data.image_sets import image_files
        from anime_avatar.data.synthetic import render_illustration

        folder = self.out / "examples"
        folder.mkdir(exist_ok=True)
        examples: list[Path] = []
        for i in range(count):
            path = folder / f"synthetic-{i}.png"
            if not path.is_file():
                render_illustration(7, i, size=STYLE_SIZE).image.save(path)
            examples.append(path)
        if FACES_DIR.is_dir():
            examples += [f.resolve() for f in image_files(FACES_DIR)[:count]]
        self._examples = examples
        return examples

    def _example_behind(self, file: Any) -> Any:
        """``file``, or the studio's own copy of the style example it was when Gradio has deleted its copy (its
        hourly sweep of the files it made takes the examples' copies too, made at start-up): Gradio names a copy
        by the sha256 of the example's bytes, so an upload that expired is never taken for an example."""
        if not file:
            return file
        path = _upload_path(file)
        if path.exists():
            return file
        from gradio.processing_utils import hash_file

        for example in getattr(self, "_examples", []):
            if example.name == path.name and example.is_file() and hash_file(example) == path.parent.name:
                return str(example)
        return file

    # --- Runs ----------------------------------------------------------------------------------------

    def runs(self) -> RunsView:
        """The training runs of the experiment (best FID first), the FID plot, the champion, the latest
        validation report; a missing store or experiment is said, not raised (the report is still shown)."""
        validation = self.validation_summary()
        uri = self._tracking_store()
        if uri is None:
            from anime_avatar.ops.tracking import tracking_uri

            return RunsView([], None, "no MLflow database at "
                            f"{tracking_uri().removeprefix('sqlite:///')}: run the pipeline first (dvc repro)",
                            validation, [])  # fmt: skip
        from mlflow import MlflowClient

        from anime_avatar.ops import registry, runs
        from anime_avatar.ops.tracking_store import check_tracking_store, fail_fast_http

        check_tracking_store(uri, write=False)
        fail_fast_http()
        client = MlflowClient(uri)
        name = self.params.tracking.model_name
        rows = runs.sort_rows(runs.training_runs(client, self.params.tracking.experiment, name), "fid")
        plot = None
        if any(r.fid is not None for r in rows):
            plot = self._new_file("fid.png")
            runs.plot(rows, runs.fid_by_steps(rows), plot)
        holder = registry.champion(client, name)
        if holder is None:
            champion = f"no champion: no version of {name} has the alias `champion` yet"
        else:
            data = next((r.data_version for r in rows if r.run_id == holder.run_id), "") or "not recorded"
            fid = f"{holder.fid:.2f}" if holder.fid is not None else "not evaluated"
            champion = (f"champion: {name} version {holder.version}, run `{holder.run_id}`, FID {fid}, "
                        f"trained on data version `{data}`")  # fmt: skip
        return RunsView([run_cells(r) for r in rows], plot, champion, validation, [r.run_id for r in rows])

    def validation_summary(self) -> str:
        """The latest validation report (reports/validation.json) in a few lines."""
        import json
        from datetime import UTC, datetime

        from anime_avatar.artifacts.reports import VALIDATION_REPORT

        if not VALIDATION_REPORT.is_file():
            return f"no validation report ({VALIDATION_REPORT}): run the validate stage (dvc repro validate)"
        try:
            report = json.loads(VALIDATION_REPORT.read_text())
            checks = report.get("checks", [])
            if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
                raise ValueError("its checks are not a list of expectations")
        except (OSError, ValueError, AttributeError) as err:
            return f"{VALIDATION_REPORT} could not be read ({first_line(err)})"
        when = datetime.fromtimestamp(VALIDATION_REPORT.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
        passed = sum(1 for c in checks if c.get("success"))
        verdict = "passed" if report.get("success") else "FAILED"
        lines = [f"validation ({VALIDATION_REPORT}, {when}): {verdict}, {passed} of {len(checks)} expectations met"]
        lines += [f"- failed: {c.get('expectation')} on {c.get('table')}.{c.get('column') or '*'} "
                  f"(observed {c.get('observed')})" for c in checks if not c.get("success")]  # fmt: skip
        return "\n".join(lines)

    def run_samples(self, run_id: str | None) -> list[tuple[str, str]]:
        """The sample grids a training run logged (MLflow artifacts under samples/), oldest step first."""
        if not run_id:
            return []
        uri = self._tracking_store()
        if uri is None:
            raise UserError("no MLflow database: run the pipeline first (dvc repro)")
        import mlflow
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        try:
            listed = client.list_artifacts(run_id, "samples")
        except Exception as err:  # MLflow raises many types for a missing run or folder
            raise UserError(f"run {run_id}: its sample grids could not be listed ({first_line(err)})") from None
        files = [a.path for a in listed if not a.is_dir and a.path.endswith(".png")]
        if not files:
            return []
        folder = self.out / "runs" / run_id
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="samples", dst_path=str(folder),
                                                         tracking_uri=uri))  # fmt: skip
        return [(str(local / Path(f).name), Path(f).stem) for f in sorted(files)]


@dataclass(frozen=True)
class RunsView:
    rows: list[list[Any]]
    plot: Path | None
    champion: str
    validation: str
    run_ids: list[str]


RUN_HEADERS = ["run", "start (UTC)", "status", "data version", "arch", "steps", "FID", "KID", "champion"]


def run_cells(row: Any) -> list[Any]:  # row: anime_avatar.ops.runs.RunRow
    fid = f"{row.fid:.2f}" if row.fid is not None else "–"
    kid = f"{row.kid:.4f}" if row.kid is not None else "–"
    data = row.data_version.split(":", 1)[-1][:10] or "–"
    return [row.run_id, row.start, row.status, data, row.arch or "–", row.steps if row.steps is not None else "–",
            fid, kid, "★" if row.champion else ""]  # fmt: skip


# --- the page ---------------------------------------------------------------------------------------


def _gradio():  # -> the gradio module, with its analytics off
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before the import: no calls home
    import gradio

    return gradio


def guarded(fn: Callable[..., tuple], n_outputs: int) -> Callable[..., tuple]:
    """``fn``'s outputs and an empty status line; a UserError: empty outputs and the error as one line; any
    other error: one line too (its traceback goes to the server's log, not the page)."""

    @functools.wraps(fn)  # Gradio reads the signature (a gr.Progress default turns the progress bar on)
    def run(*args: Any) -> tuple:
        try:
            return (*(str(v) if isinstance(v, Path) else v for v in fn(*args)), "")  # Gradio takes paths as str
        except UserError as err:
            message = first_line(err)
        except Exception as err:
            log.exception("studio: %s failed", getattr(fn, "__name__", "request"))
            message = (
                f"something went wrong ({type(err).__name__}: {first_line(err)}); the studio's log has the details"
            )
        return (*([None] * n_outputs), f"⚠️ {message}")

    return run


def latest_picture(changed: Any, other: Any) -> Any:
    """The photo source an avatar is made of: the one that just changed, or the other when it was cleared."""
    return changed or other


def theme():  # -> gr.themes.Base
    """Gradio's default look; its fonts are served by the studio itself (LocalFont), none from Google's CDN."""
    return _gradio().themes.Default()


CSS = """
.status p { font-weight: 600; color: #b45309; }
.pixels img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""  # the status line stands out; small avatars (32 px) are shown large, with sharp pixels


def build_app(root: Path, params_file: Path | None = None, studio: Studio | None = None) -> gr.Blocks:
    """The studio's page on the project at ``root``. Launch it with :func:`launch` (or ``app.launch``)."""
    gr = _gradio()
    studio = studio or Studio(root, params_file)
    examples = studio.style_examples()
    with gr.Blocks(title="anime-avatar studio", analytics_enabled=False,
                   delete_cache=(KEEP_FILES_S, KEEP_FILES_S)) as app:  # fmt: skip
        gr.Markdown("## anime-avatar studio\nAvatars from the generator, anime avatars from photos, and the "
                    "training runs, on this project's models. Each picture says which model made it.")  # fmt: skip
        with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    # Seeds are text, read exactly by whole_number: a number field goes through a JavaScript float
                    # (2**53 + 1 became 2**53, the largest seed was refused, 2.5 became 2).
                    seed = gr.Textbox(label="Seed (avatar i is seed + i)", value="0", max_lines=1,
                                      elem_id="gen-seed")  # fmt: skip
                    count = gr.Slider(1, MAX_AVATARS, value=16, step=1, label="Avatars", elem_id="gen-count")
                    truncation = gr.Slider(0.0, MAX_TRUNCATION, value=0.0, step=0.05, elem_id="gen-truncation",
                                           label="Truncation (0: off; 0.7 is typical)")  # fmt: skip
                    go = gr.Button("Generate", variant="primary", elem_id="gen-button")
                    gr.Markdown("**Walk between two seeds**")
                    with gr.Row():
                        seed_a = gr.Textbox(label="From seed", value="0", max_lines=1, elem_id="walk-a")
                        seed_b = gr.Textbox(label="To seed", value="1", max_lines=1, elem_id="walk-b")
                    steps = gr.Slider(2, MAX_WALK_STEPS, value=8, step=1, label="Steps", elem_id="walk-steps")
                    walk_go = gr.Button("Walk", elem_id="walk-button")
                with gr.Column(scale=2):
                    gen_status = gr.Markdown(elem_id="gen-status", elem_classes="status")
                    grid = gr.Image(label="Avatars (grid)", type="filepath", format="png", interactive=False,
                                    elem_id="gen-grid", elem_classes="pixels", height=360)  # fmt: skip
                    gen_note = gr.Markdown(elem_id="gen-note")
                    gen_file = gr.File(label="Download the grid (PNG)", interactive=False, elem_id="gen-file")
                    strip = gr.Image(label="Walk (strip)", type="filepath", format="png", interactive=False,
                                     elem_id="walk-strip", elem_classes="pixels", height=200)  # fmt: skip
                    gif = gr.Image(label="Walk (GIF)", type="filepath", format="gif", interactive=False,
                                   elem_id="walk-gif", elem_classes="pixels", height=200)  # fmt: skip
                    walk_note = gr.Markdown(elem_id="walk-note")

            def on_generate(seed, count, truncation):
                path, note = studio.generate(seed, count, truncation)
                return path, note, path

            go.click(guarded(on_generate, 3), [seed, count, truncation], [grid, gen_note, gen_file, gen_status],
                     concurrency_id="generator", concurrency_limit=1)  # fmt: skip
            walk_go.click(guarded(studio.walk, 3), [seed_a, seed_b, steps, truncation], [strip, gif, walk_note,
                          gen_status], concurrency_id="generator", concurrency_limit=1)  # fmt: skip

        with gr.Tab("Photo → avatar", id="photo", elem_id="tab-photo"):
            with gr.Row():
                with gr.Column(scale=1):
                    with gr.Tab("Upload"):
                        photo = gr.File(label="Photo of a person (PNG, JPEG, WebP)", elem_id="photo-file")
                    with gr.Tab("Webcam"):
                        webcam = gr.Image(label="Webcam", sources=["webcam"], type="filepath", elem_id="photo-webcam")
                    method = gr.Radio(list(METHODS), value=next(iter(METHODS)), label="Method", elem_id="photo-method")
                    make = gr.Button("Make the avatar", variant="primary", elem_id="photo-button")
                    style = gr.File(label="Style image (attention network, AdaIN, Gatys)", elem_id="photo-style")
                    gr.Examples([[str(p)] for p in examples], [style], label="Style examples")
                    whole = gr.Checkbox(label="whole picture (no face detection)", value=False, elem_id="photo-whole")
                    size = gr.Slider(MIN_AVATAR_SIDE, MAX_AVATAR_SIDE, value=STYLE_SIZE, step=32,
                                     label="Avatar side (px)", elem_id="photo-size")  # fmt: skip
                    gatys_steps = gr.Slider(1, MAX_GATYS_STEPS, value=min(studio.params.gatys.steps, MAX_GATYS_STEPS),
                                            step=1, label="Gatys steps", elem_id="photo-steps")  # fmt: skip
                with gr.Column(scale=2):
                    photo_status = gr.Markdown(elem_id="photo-status", elem_classes="status")
                    with gr.Row():
                        boxed = gr.Image(label="Faces found", type="filepath", format="png", interactive=False,
                                         elem_id="photo-faces")  # fmt: skip
                        avatar = gr.Image(label="Avatar", type="filepath", format="png", interactive=False,
                                          elem_id="photo-avatar")  # fmt: skip
                    photo_note = gr.Markdown(elem_id="photo-note")
                    avatar_file = gr.File(
                        label="Download the avatar (PNG)", interactive=False, elem_id="photo-download"
                    )

            # The picture the avatar is made of: the one last given, by upload or webcam (the other tab may still
            # hold an older one), so that it is always the picture whose face boxes are shown.
            picture = gr.State(None)

            def on_picture(changed, other):
                latest = latest_picture(changed, other)
                if not latest:
                    return None, ""
                return studio.faces(latest)

            def on_make(latest, method, style, whole, size, steps, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
                made, faces_png, note = studio.avatar(latest, method, style, whole, size, steps)
                return made, faces_png, note, made

            # The picture is known at once (no queue); its face boxes follow. When the state waited for the
            # detection, a click in between (seconds, for a phone's 12-megapixel photo) made the avatar of nothing,
            # or of the webcam shot the state still held.
            found = [boxed, photo_note, photo_status]
            for source, other in ((photo, webcam), (webcam, photo)):
                source.change(latest_picture, [source, other], picture, queue=False)
                source.change(guarded(on_picture, 2), [source, other], found, concurrency_id="detector",
                              concurrency_limit=1)  # fmt: skip
            # Two at a time: a slow Gatys request (minutes at 768 px) leaves a slot for the fast methods; each
            # model still serves one request at a time (Studio.lock).
            make.click(guarded(on_make, 4), [picture, method, style, whole, size, gatys_steps],
                       [avatar, boxed, photo_note, avatar_file, photo_status], concurrency_id="photo",
                       concurrency_limit=2)  # fmt: skip

        with gr.Tab("Runs", id="runs", elem_id="tab-runs") as runs_tab:
            runs_status = gr.Markdown(elem_id="runs-status", elem_classes="status")
            refresh = gr.Button("Refresh", elem_id="runs-refresh", size="sm")
            champion = gr.Markdown(elem_id="runs-champion")
            table = gr.Dataframe(headers=RUN_HEADERS, interactive=False, elem_id="runs-table", wrap=True)
            fid_plot = gr.Image(label="FID per run", type="filepath", format="png", interactive=False,
                                elem_id="runs-plot")  # fmt: skip
            validation = gr.Markdown(elem_id="runs-validation")
            run_choice = gr.Dropdown(label="Sample grids of run", choices=[], elem_id="runs-choice")
            samples = gr.Gallery(label="Sample grids", columns=4, elem_id="runs-samples")

            def on_runs():
                view = studio.runs()
                return (view.rows, view.plot, view.champion, view.validation,
                        gr.Dropdown(choices=view.run_ids, value=view.run_ids[0] if view.run_ids else None))  # fmt: skip

            def on_samples(run_id):
                return (studio.run_samples(run_id),)

            show = guarded(on_runs, 5)
            outputs = [table, fid_plot, champion, validation, run_choice, runs_status]
            runs_tab.select(show, None, outputs, concurrency_id="runs", concurrency_limit=1)
            refresh.click(show, None, outputs, concurrency_id="runs", concurrency_limit=1)
            run_choice.change(guarded(on_samples, 1), [run_choice], [samples, runs_status], concurrency_id="runs",
                              concurrency_limit=1)  # fmt: skip
    app.queue(max_size=32, default_concurrency_limit=1)
    app.studio = studio  # for tests and the launcher
    return app


class BodyLimit:
    """ASGI middleware: an HTTP request whose body is over ``limit`` bytes is answered 413, by its Content-Length
    before anything is read; a body without one (chunked) is read up to the limit first and refused as soon as it
    exceeds it (the app's own body parsing would turn an error raised inside it into a 400)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:  # the server holds the client to it: no more than this can come
            if length.isdigit() and int(length) > self.limit:
                await self._refuse(send)
            else:
                await self.app(scope, receive, send)
            return
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > self.limit:
                await self._refuse(send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable) -> None:
        await plain_response(send, 413, f"request body larger than {self.limit // 2**20} MiB")


class SameOriginWrites:
    """ASGI middleware: a request that sends something (not GET, HEAD or OPTIONS) whose browser says it comes from
    another site (an ``Origin`` that is not the studio's own address) is answered 403. Gradio's upload routes take
    any origin, so a page elsewhere could fill the studio's disk through its user's browser. Requests without an
    Origin (scripts, gradio_client) pass."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        from urllib.parse import urlsplit

        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = dict(scope["headers"])
            origin, host = headers.get(b"origin"), headers.get(b"host", b"")
            if origin is not None and urlsplit(origin.decode("latin-1")).netloc != host.decode("latin-1"):
                await plain_response(send, 403, "requests from another site's page are refused")
                return
        await self.app(scope, receive, send)


async def plain_response(send: Callable, status: int, text: str) -> None:
    """Answer an ASGI HTTP request with ``status`` and ``text`` as plain text (the middlewares' refusals)."""
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def launch(app: gr.Blocks, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = True) -> None:
    """Serve ``app`` on ``host``:``port`` (127.0.0.1 by default; never a share link)."""
    from starlette.middleware import Middleware

    studio: Studio = app.studio
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
               max_file_size=MAX_UPLOAD_BYTES, allowed_paths=[str(studio.out)], ssr_mode=False, quiet=True,
               prevent_thread_lock=not block, theme=theme(), css=CSS, footer_links=[],
               app_kwargs={"middleware": [Middleware(BodyLimit, limit=MAX_REQUEST_BYTES),
                                          Middleware(SameOriginWrites)]})  # fmt: skip


def _upload_path(file: Any) -> Path:
    """The path of an upload as Gradio hands it over: a str, a path, or a file object with a ``name``."""
    return Path(file if isinstance(file, str | os.PathLike) else getattr(file, "name", str(file)))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def check_can_listen(host: str, port: int) -> None:
    """A UserError unless a server could listen on ``host``:``port`` now (asked before the models load, which
    takes a while; SO_REUSEADDR as the server's own socket, so a port left in TIME_WAIT counts as free)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"--host {host}: not an address this machine can listen on ({err})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}): another program (a studio "
                            "already running?) has it; pass --port N") from None  # fmt: skip


def serve(root: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, params_file: Path | None = None) -> None:
    """``anime-avatar studio``: load the models, then serve the page until interrupted; the answers' pictures are
    deleted when it stops."""
    check_can_listen(host, port)
    studio = Studio(root, params_file)
    # Gradio's copies of uploads and examples in the studio's own folder, not the machine's shared /tmp/gradio:
    # there, any other Gradio app that stopped deleted this one's example copies (same bytes, same path), and
    # they go when the studio stops, with the rest of its folder.
    os.environ["GRADIO_TEMP_DIR"] = str(studio.out / "gradio")
    try:
        for problem in studio.warm():
            log.warning("the studio starts without the %s", problem)
        app = build_app(root, studio=studio)
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("the studio listens on %s: anyone who reaches this machine on port %d can use it", host, port)
        log.info("anime-avatar studio on http://%s:%d (Ctrl-C stops it)", host, port)
        if threading.current_thread() is threading.main_thread():  # `kill` stops it as Ctrl-C does: cleaned up
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            launch(app, host, port)
        except OSError as err:  # taken between the check and now: Gradio says "Cannot find empty port"
            raise UserError(f"cannot listen on {host}:{port} ({first_line(err)}): pass --port N") from None
    finally:
        studio.close()
