"""``anime-avatar``: the command line of the library (the flows in pipelines/ add their commands to it)."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from anime_avatar.core.errors import UserError
from anime_avatar.core.limits import MAX_READ_SIDE, MAX_SIDE
from anime_avatar.core.params import DEFAULT_PARAMS, PhotoFacesParams, load_params
from anime_avatar.core.stage import setup_logging

log = logging.getLogger("anime_avatar")
HEAVY_COMMANDS = frozenset({"generate", "avatar", "stylize", "translate", "studio"})  # torch on the CPU
GENERATE_CHUNK = 256  # avatars made, written and dropped at a time
MAX_GRID_AVATARS = 1024  # tiles of one grid (a 32x32 grid; 32,768 px a side at 256 px a face would be too large)


def cmd_params(args: argparse.Namespace) -> None:
    """Print params.yaml as the pipeline sees it: validated, every key resolved (YAML; --json for JSON)."""
    import yaml

    values = load_params(args.params).model_dump(mode="json", by_alias=True)
    text = json.dumps(values, indent=2) if args.json else yaml.safe_dump(values, sort_keys=False)
    print(text.rstrip("\n"))


def cmd_faces(args: argparse.Namespace) -> None:
    """Detect and crop the faces of the given images, with the detect section of params.yaml.

    Prints one line per face (image, box, score, crop file) and writes the crops to --out.
    Example: anime-avatar faces page1.png page2.jpg --out faces/ --detector lbp
    """
    from anime_avatar.core.fsutil import sha256_file
    from anime_avatar.data.detection import FileJob, build_detector, detect_file

    cfg = load_params(args.params).detect
    if args.detector:
        cfg = cfg.model_copy(update={"detector": args.detector})
    detector = build_detector(cfg)
    total = 0
    unreadable: list[str] = []
    for image in args.images:
        job = FileJob(str(image), str(image), sha256_file(image))
        result = detect_file(job, detector, cfg.margin, cfg.image_size, cfg.max_side)
        if result.error:
            unreadable.append(f"{image}: {result.error}")
            continue
        for crop in result.crops:
            path = args.out / f"{crop.face_id}.png"
            _write(path, crop.png)
            print(f"{image}\t{crop.box}\t{crop.score:.3f}\t{path}")
        total += len(result.crops)
    if len(unreadable) < len(args.images):
        log.info("%d faces from %d images with %s", total, len(args.images) - len(unreadable), detector.name)
    _fail_for_unreadable(unreadable, len(args.images))


def _fail_for_unreadable(unreadable: list[str], total: int) -> None:
    """After the readable images are done: one error naming the unreadable ones (the exit status says some were)."""
    if unreadable:
        raise UserError(unreadable[0] if len(unreadable) == 1 else f"{len(unreadable)} of {total} images could not "
                        f"be read: {'; '.join(unreadable)}")  # fmt: skip


def _write(path: Path, data: bytes) -> None:
    """Write an output file atomically; a folder in the way or a read-only place is one clear error."""
    from anime_avatar.core.fsutil import atomic_write_bytes

    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None


def cmd_generate(args: argparse.Namespace) -> None:
    """Write avatars (PNG files and/or a grid) from the champion model or a given one.

    The same seed always gives the same avatar. The model is the registered champion
    (models:/NAME@champion), else models/generator.pt, or --model FILE | models:/NAME/VERSION | runs:/ID/generator.
    Example: anime-avatar generate --n 16 --seed 0 --truncation 0.7 --grid avatars.png
    """
    if args.style is not None:  # before any work: a result never replaces the style picture it is made with
        _check_style_not_written(args)
    a_file = bool(args.model) and ":/" not in args.model
    if not a_file and not Path(args.params).is_file():  # checked before the slow imports below
        raise UserError(f"no {args.params} here: run inside the project (for its champion model), or pass --model FILE")

    from torchvision.transforms.functional import to_pil_image

    from anime_avatar.data.images import png_bytes
    from anime_avatar.gan.inference import avatars, walk
    from anime_avatar.nn.images import grid_png
    from anime_avatar.ops.registry import resolve_generator

    if a_file:
        generator = resolve_generator(args.model, "")  # no project needed
    else:
        generator = resolve_generator(args.model, load_params(args.params).tracking.model_name)
    if args.interpolate:
        images = walk(generator, *args.interpolate, steps=args.steps, truncation=args.truncation)
        chunks = iter([([_walk_name(*args.interpolate, i) for i in range(len(images))], images)])
    else:
        # A chunk at a time: written, then dropped (100,000 avatars held at once took 3.2 GB, and grew with --n).
        seeds = range(args.seed, args.seed + args.n)
        blocks = (seeds[i : i + GENERATE_CHUNK] for i in range(0, len(seeds), GENERATE_CHUNK))
        chunks = (([_avatar_name(s) for s in b], avatars(generator, list(b), args.truncation)) for b in blocks)
    restyle = _avatar_stylist(args) if args.style else None  # read and loaded once, not once per chunk
    grid, written = [], 0
    for labels, chunk in chunks:
        images = restyle(chunk) if restyle else chunk
        for label, image in zip(labels, images, strict=True) if args.out else ():
            _write(args.out / f"{label}.png", png_bytes(to_pil_image(image)))
        written += len(images)
        if args.grid:  # at most MAX_GRID_AVATARS (the parser's check)
            grid.append(images)
    if args.out:
        log.info("%d avatars in %s", written, args.out)
    if args.grid:
        import torch

        tiles = torch.cat(grid)
        nrow = len(tiles) if args.interpolate else max(1, int(len(tiles) ** 0.5))
        _write(args.grid, grid_png(tiles, nrow=nrow))
        log.info("grid written to %s", args.grid)


def _avatar_name(seed: int) -> str:
    """`generate --out`'s file name (without .png) for the avatar of ``seed``."""
    return f"avatar-{seed:06d}"


def _walk_name(a: int, b: int, i: int) -> str:
    """`generate --interpolate A B --out`'s file name (without .png) for step ``i`` of the walk."""
    return f"walk-{a}-{b}-{i:03d}"


def _check_style_not_written(args: argparse.Namespace) -> None:
    """`generate --style`: the grid or one of the avatar files must not be the --style picture."""
    style = Path(args.style).resolve()
    if args.grid is not None and Path(args.grid).resolve() == style:
        raise UserError(f"--grid {args.grid} is the --style picture: the grid would replace it; name another file")
    if args.out is None or style.parent != Path(args.out).resolve():
        return
    if args.interpolate:
        written = {_walk_name(*args.interpolate, i) for i in range(args.steps)}
    else:  # --n may be 100,000: only the avatar of the seed the style's name carries
        seed = re.fullmatch(r"avatar-(\d+)", style.stem)
        written = {_avatar_name(int(seed[1]))} if seed and args.seed <= int(seed[1]) < args.seed + args.n else set()
    if style.suffix == ".png" and style.stem in written:
        raise UserError(f"--out {args.out}: {style.name} would replace the --style picture; name another folder")


def _stylized(method, image, style, size: int, flag: str):  # -> PIL.Image.Image
    """``stylize_image`` at ``size`` px, the size the user gave as ``flag``: one too small for the method's
    feature network is named as that flag."""
    from anime_avatar.style.features import ImageTooSmall
    from anime_avatar.style.transfer import stylize_image

    try:
        return stylize_image(method, image, style, size)
    except ImageTooSmall as err:
        raise UserError(
            f"{flag} {size} is too small for this method ({err}): give {flag} {err.needed} or more"
        ) from None


def _avatar_stylist(args: argparse.Namespace) -> Callable:  # uint8 (N, 3, H, W) -> the same, stylised
    """What stylises the generated avatars: the --style image read and the method loaded once (a registered
    stylizer is a download)."""
    import numpy as np
    import torch
    from torchvision.transforms.functional import to_pil_image

    from anime_avatar.core.progress import progress_bar
    from anime_avatar.data.image_sets import read_image

    style = read_image(args.style, "--style", MAX_READ_SIDE)
    method = _style_method(args.params, args.style_method, args.style_model)

    def restyle(images):
        stylised = [
            torch.from_numpy(
                np.array(_stylized(method, to_pil_image(image), style, args.style_size, "--style-size"))
            ).permute(2, 0, 1)
            for image in progress_bar(iterable=images, desc="stylize", unit="img", disable=len(images) < 2)
        ]
        return torch.stack(stylised)

    return restyle


def _style_method(
    params_file: str,
    cli_method: str,
    model: str | None,
    features: str = "inception",
    plain: bool = False,
    **gatys_overrides: float | None,
):  # -> anime_avatar.style.transfer.Method
    """The stylising function asked for: gatys with params.yaml's gatys section (and ``gatys_overrides``), or a
    trained net from ``model`` (a file or an MLflow URI), else models/stylizer.pt, else the registered model."""
    from anime_avatar.ops.stylizer_models import resolve_stylizer
    from anime_avatar.style.transfer import make_method, method_name

    name = method_name(cli_method, features, softmax=not plain)
    has_params = Path(params_file).is_file()
    if cli_method == "gatys":
        if not has_params:
            raise UserError(f"no {params_file} here: --method gatys takes its settings from the project's params "
                            "(run inside the project, or pass --params)")  # fmt: skip
        changes = {k: v for k, v in gatys_overrides.items() if v is not None}
        return make_method(name, gatys=load_params(params_file).gatys.model_copy(update=changes))
    if model and ":/" not in model:
        return make_method(name, stylizer=resolve_stylizer(model, ""))  # a file: no project needed
    if not has_params:
        raise UserError(f"no {params_file} here: run inside the project (for models/stylizer.pt or the registered "
                        "stylizer), or pass --model FILE")  # fmt: skip
    return make_method(name, stylizer=resolve_stylizer(model, load_params(params_file).tracking.stylizer_model_name))


def _method_from_options(args: argparse.Namespace):  # -> anime_avatar.style.transfer.Method
    gatys = {"steps": args.steps, "style_weight": args.style_weight, "content_weight": args.content_weight}
    return _style_method(args.params, args.method, args.model, args.features or "inception", args.plain, **gatys)


GATYS_OPTIONS = {"features": "--features", "plain": "--plain", "steps": "--steps", "style_weight": "--style-weight",
                 "content_weight": "--content-weight"}  # fmt: skip


def _gatys_options_misused(args: argparse.Namespace) -> str | None:
    """The usage error for Gatys-only options given with another method (they would be ignored: a net's encoder
    and weights come from its file), or None."""
    if not hasattr(args, "plain") or args.method == "gatys":
        return None
    given = [
        flag
        for attr, flag in GATYS_OPTIONS.items()
        if getattr(args, attr) is not None and getattr(args, attr) is not False
    ]
    if not given:
        return None
    return (
        f"{', '.join(given)} only apply to --method gatys; --method {args.method} ignores "
        f"{'it' if len(given) == 1 else 'them'} (a trained net's encoder and weights come from its file)"
    )


def _image_format(path: Path) -> str:
    """The Pillow format that ``path``'s suffix names; none, or one Pillow cannot write RGB images in: a UserError."""
    import io

    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"--out {path}: give the image file a suffix such as .png or .jpg")
    try:  # some suffixes name formats Pillow only reads (.psd) or writes only in other modes (.xbm): try one pixel
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except (KeyError, OSError, ValueError):
        raise UserError(f"--out {path}: Pillow cannot write colour images as {fmt}; use .png, .jpg or .webp") from None
    return fmt


def _check_targets(targets: Sequence[Path], inputs: Sequence[Path | None] = ()) -> None:
    """Before any work: each image to write has an image suffix, is not a folder, lies under no regular file, and
    is none of the ``inputs`` (the pictures the command reads: a result never replaces its photo or style)."""
    read = {path.resolve(): path for path in inputs if path is not None}
    for target in targets:
        if target.resolve() in read:
            raise UserError(f"--out {target} is the picture {read[target.resolve()]} the command reads: the result "
                            "would replace it; name another file")  # fmt: skip
        if target.is_dir():
            raise UserError(f"--out {target} is a folder: name the image file to write (e.g. {target / 'out.png'})")
        _image_format(target)
        for parent in target.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"--out {target}: {parent} is a file, not a folder")
                break


def _save_image(image, path: Path) -> None:  # image: PIL.Image
    """Write ``image`` atomically in the format its suffix names (.png, .jpg, ...)."""
    import io

    buf = io.BytesIO()
    image.save(buf, format=_image_format(path))
    _write(path, buf.getvalue())


# Marks a folder of a command's results (stylize/translate --content DIR --out FOLDER): an --out inside --content
# that holds it is an earlier run's results, not pictures to read (or to protect from being written over).
RESULTS_MARKER = ".anime-avatar-results"


def _contents_and_targets(
    content: Path, out: Path, also_read: Sequence[Path | None] = ()
) -> tuple[list[Path], list[Path]]:
    """--content IMG -> ([IMG], [--out]); --content DIR -> its images and the PNG of each under --out (a folder).

    --out is checked here, before any work, and nothing is written: an image file to write (never a picture read:
    the content or one of ``also_read``), or for a folder a folder (or a new path), which ``_save_result`` marks as
    results when it writes the first."""
    from anime_avatar.data.image_sets import image_files

    if not content.is_dir():
        _check_targets([out], [content, *also_read])
        return [content], [out]
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: with a folder as --content, --out is the folder to write into")
    out_folder = out.resolve()
    if out_folder == content.resolve():
        raise UserError(f"--out {out} is the --content folder: the results would replace the pictures; name another")
    # An --out inside --content that a run marked holds its results: outputs, not pictures to process again. Any
    # other folder's pictures are the user's: read, and never written over (the check below).
    earlier_results = (out / RESULTS_MARKER).is_file()
    contents = [c for c in image_files(content) if not (earlier_results and out_folder in c.resolve().parents)]
    if not contents:
        raise UserError(f"--content {content}: no images in this folder")
    targets = [out / f"{c.relative_to(content).with_suffix('')}.png" for c in contents]
    first: dict[Path, Path] = {}
    inputs = {c.resolve() for c in contents}
    for picture, target in zip(contents, targets, strict=True):
        if target in first:
            both = f"{first[target].relative_to(content)} and {picture.relative_to(content)}"
            raise UserError(f"--content {content}: {both} would both be written to {target}: rename one")
        if target.resolve() in inputs:
            raise UserError(f"--out {out}: {target} would replace one of the pictures; name another folder")
        first[target] = picture
    _check_targets(targets, also_read)
    return contents, targets


def _save_result(image, target: Path, results: Path | None) -> None:  # image: PIL.Image
    """Write one result of stylize/translate; in a folder of results (--content DIR) the folder is marked as such
    (RESULTS_MARKER) before its first result, so a later run inside --content skips it."""
    if results is not None and not (results / RESULTS_MARKER).is_file():
        results.mkdir(parents=True, exist_ok=True)
        (results / RESULTS_MARKER).touch()
    _save_image(image, target)


def cmd_stylize(args: argparse.Namespace) -> None:
    """Restyle a face or picture (or a folder of them) in the style of one illustration.

    Methods: gatys (optimisation, Gatys et al., on --features with the softmax transform unless --plain;
    its settings come from the gatys section of params.yaml), network (the trained attention net of
    models/stylizer.pt, or --model), adain (the AdaIN baseline net of the same file). A folder as --content
    stylises every image in it, and --out is then a folder.
    Example: anime-avatar stylize --content face.png --style art.jpg --out avatar.png --method network
    """
    contents, targets = _contents_and_targets(args.content, args.out, [args.style])  # before the slow imports
    results = args.out if args.content.is_dir() else None

    from anime_avatar.core.progress import progress_bar
    from anime_avatar.data.image_sets import read_image

    single = read_image(contents[0], "--content", MAX_READ_SIDE) if len(contents) == 1 else None  # before the slow part
    style = read_image(args.style, "--style", MAX_READ_SIDE)
    method = _method_from_options(args)
    unreadable: list[str] = []
    for content, target in progress_bar(iterable=list(zip(contents, targets, strict=True)), desc="stylize",
                                        unit="img", disable=len(contents) < 2):  # fmt: skip
        try:  # one at a time: a folder of photos is never all in memory, and a bad one stops no other
            image = single if single is not None else read_image(content, "--content", MAX_READ_SIDE)
        except UserError as err:
            unreadable.append(str(err))
            continue
        _save_result(_stylized(method, image, style, args.size, "--size"), target, results)
    done = len(contents) - len(unreadable)
    if done:
        log.info("%d image%s stylised with %s: %s", done, "s" * (done != 1), args.method, args.out)
    _fail_for_unreadable(unreadable, len(contents))


# The photo_faces section of the project's params.yaml, for `avatar` run outside a project (no params file): a
# test keeps the two equal.
SHIPPED_PHOTO_FACES = {"margin": 0.4, "min_size": 0.1, "scale_factor": 1.1, "min_neighbors": 5}


def _photo_faces_settings(params_file: str) -> PhotoFacesParams:
    """The photo_faces section of ``params_file``, or the one the project ships when there is no such file."""
    if Path(params_file).is_file():
        return load_params(params_file).photo_faces
    return PhotoFacesParams(**SHIPPED_PHOTO_FACES)


def cmd_avatar(args: argparse.Namespace) -> None:
    """An anime avatar from a photo of a person: find the face, crop a square around it, turn it into anime.

    Methods: translate (the default: the photo -> anime translator of models/translator.pt, or --model, else the
    one that ships with the package; the face is translated at the translator's resolution and written at --size),
    and stylize's network, adain and gatys, which need --style. Faces are found with OpenCV's frontal-face Haar
    cascade, set by the photo_faces section of params.yaml (outside a project, the values the project ships).
    Several faces give one avatar each (AVATAR-1.png, AVATAR-2.png, ... largest first), or only the largest with
    --largest; --no-detect uses the whole picture (its central square).
    Example: anime-avatar avatar --photo me.jpg --out avatar.png
    """
    from anime_avatar.data.image_sets import read_image
    from anime_avatar.data.images import center_square
    from anime_avatar.data.photos import photo_faces

    if args.method != "translate" and args.style is None:
        raise UserError(f"--method {args.method} restyles the face after an example: give it --style IMG (or use "
                        "--method translate, which needs none)")  # fmt: skip
    _check_targets([args.out], [args.photo, args.style])
    photo = read_image(args.photo, "--photo", MAX_READ_SIDE)
    if args.method == "translate":
        translator = _translator(args.model, "anime")
        crop_size = translator.image_size
        log.info("translator %s (%d px, step %d)", translator.path, translator.image_size, translator.step)
    else:
        style = read_image(args.style, "--style", MAX_READ_SIDE)
        method, crop_size = _method_from_options(args), args.size
    if args.no_detect:
        crops = [center_square(photo, crop_size)]
    else:
        faces = photo_faces(photo, crop_size, _photo_faces_settings(args.params), largest=args.largest)
        crops = [face.crop for face in faces]
        for i, face in enumerate(faces, 1):
            log.info("face %d at x=%d y=%d, %dx%d px", i, *face.box)
    targets = (
        [args.out]
        if len(crops) == 1
        else [args.out.with_stem(f"{args.out.stem}-{i}") for i in range(1, len(crops) + 1)]
    )
    _check_targets(targets, [args.photo, args.style])
    for crop, target in zip(crops, targets, strict=True):
        if args.method == "translate":
            from anime_avatar.translate.inference import translate_picture

            _save_image(translate_picture(translator.net, crop, args.size), target)
        else:
            _save_image(_stylized(method, crop, style, args.size, "--size"), target)
        print(target)


def _translator(model: str | None, to: str):  # -> anime_avatar.translate.model_file.TrainedTranslator
    """The translator of ``model`` (a file, or an MLflow model URI such as models:/anime-avatar-translator/1 or
    runs:/ID/translator), else the workspace's models/translator.pt, else the shipped one."""
    from anime_avatar.artifacts.translator import TRANSLATOR
    from anime_avatar.translate.model_file import load_translator

    if not model:
        return load_translator(None, to)
    from anime_avatar.ops.model_files import chosen_model_file

    examples = "models:/NAME/VERSION, runs:/ID/translator"
    weights = chosen_model_file(model, TRANSLATOR.name, "translator", "translate_train", examples)
    if weights != Path(model):  # a logged model: its file in the download cache is what the log lines name
        log.info("using %s", model)
    return load_translator(weights, to)


def cmd_translate(args: argparse.Namespace) -> None:
    """Translate a face picture (or a folder of them) into an anime face, or an anime face into a photo (--to photo).

    Each picture's central square is translated at the translator's resolution and written at --size. The
    translator: --model FILE, else models/translator.pt (dvc repro translate_train), else the shipped one.
    Pictures should show one face filling most of the frame (use `avatar` to find and crop it in a photo).
    Example: anime-avatar translate --content face.png --out anime.png
    """
    contents, targets = _contents_and_targets(args.content, args.out)  # before the slow imports
    results = args.out if args.content.is_dir() else None

    from anime_avatar.core.progress import progress_bar
    from anime_avatar.data.image_sets import read_image
    from anime_avatar.data.images import center_square
    from anime_avatar.translate.inference import translate_picture

    single = read_image(contents[0], "--content", MAX_READ_SIDE) if len(contents) == 1 else None  # before the model
    translator = _translator(args.model, args.to)
    size = args.size or translator.image_size
    unreadable: list[str] = []
    for content, target in progress_bar(iterable=list(zip(contents, targets, strict=True)), desc="translate",
                                        unit="img", disable=len(contents) < 2):  # fmt: skip
        try:
            picture = single if single is not None else read_image(content, "--content", MAX_READ_SIDE)
        except UserError as err:
            unreadable.append(str(err))
            continue
        square = center_square(picture, translator.image_size)
        _save_result(translate_picture(translator.net, square, size), target, results)
    done = len(contents) - len(unreadable)
    if done:
        log.info("%d image%s translated to %s by %s: %s", done, "s" * (done != 1), args.to, translator.path,
                 args.out)  # fmt: skip
    _fail_for_unreadable(unreadable, len(contents))


def _add_style_options(p: argparse.ArgumentParser, translate: bool = False) -> None:
    """The options every stylising command shares (``translate``: also the translator, as the default method)."""
    if translate:
        p.add_argument(
            "--method",
            choices=["translate", "network", "adain", "gatys"],
            default="translate",
            help="translate (the photo -> anime translator), or a style method that needs --style: "
            "network (the trained attention net), adain, gatys (optimisation) (default: translate)",
        )
        p.add_argument("--model", help="translate: translator file or MLflow URI (default: models/translator.pt, "
                                       "else the shipped one); other methods: stylizer file or MLflow URI")  # fmt: skip
    else:
        p.add_argument(
            "--method",
            choices=["gatys", "network", "adain"],
            default="network",
            help="gatys (optimisation), network (the trained attention net) or adain (default: network)",
        )
        p.add_argument(
            "--model", help="stylizer file or MLflow URI (default: models/stylizer.pt, else the registered one)"
        )
    p.add_argument(
        "--features",
        choices=["inception", "vgg19"],
        help="gatys: the feature network (default: inception; vgg19 needs its torchvision download)",
    )
    p.add_argument("--plain", action="store_true", help="gatys: plain Gram matrices, no softmax transform")
    p.add_argument("--steps", type=_int_at_least(1), help="gatys: network evaluations (default: gatys.steps)")
    p.add_argument("--style-weight", type=_positive_float, help="gatys: style weight (default: gatys.style_weight)")
    p.add_argument(
        "--content-weight", type=_non_negative_float, help="gatys: content weight (default: gatys.content_weight)"
    )


def _mlflow(args: argparse.Namespace):  # -> (MlflowClient, Params)
    """The tracking store's client, after the checks that need no MLflow: a missing params file or database is
    said in a fraction of a second, not after the seconds (and the gigabyte) that importing mlflow takes."""
    from anime_avatar.ops.tracking import missing_tracking_db, tracking_uri
    from anime_avatar.ops.tracking_store import check_tracking_store, fail_fast_http

    params = load_params(args.params)
    uri = tracking_uri()
    if missing := missing_tracking_db(uri):
        raise UserError(f"no MLflow database at {missing}: run the pipeline first (dvc repro)")
    check_tracking_store(uri, write=False)  # seconds, not minutes of retries, when the server is away
    fail_fast_http()
    from mlflow import MlflowClient

    return MlflowClient(uri), params


def cmd_runs(args: argparse.Namespace) -> None:
    """Compare the training runs in MLflow: data version, architecture, steps, FID, KID, champion.

    Example: anime-avatar runs --sort fid --plot runs.png
    """
    client, params = _mlflow(args)
    from anime_avatar.ops import runs

    experiment = args.experiment or params.tracking.experiment
    runs.settle_runs(client, experiment)
    rows = runs.sort_rows(runs.training_runs(client, experiment, params.tracking.model_name), args.sort)
    print(runs.to_csv(rows) if args.csv else runs.format_table(rows), end="" if args.csv else "\n")
    if args.plot:
        runs.plot(rows, runs.fid_by_steps(rows), args.plot)
        log.info("plot written to %s", args.plot)


def cmd_audit(args: argparse.Namespace) -> None:
    """Data versions per dvc.lock commit and the runs trained on each; --run RUN_ID: the data behind one model.

    Example: anime-avatar audit --run 3f2a... --manifest used-files.csv
    """
    if args.manifest and not args.run:
        raise UserError("--manifest needs --run RUN_ID: the manifest is the data behind one training run")
    client, params = _mlflow(args)
    from anime_avatar.core.fsutil import write_csv
    from anime_avatar.ops import audit
    from anime_avatar.ops.runs import experiment_id, resolve_run_id

    root = Path.cwd()
    if args.run:
        run_id = resolve_run_id(client, params.tracking.experiment, args.run)  # the 12 characters `runs` shows do
        item = audit.lineage(client, root, run_id, params.tracking.model_name)
        print(audit.format_lineage(item))
        if args.manifest:
            if item.manifest is None:
                raise UserError(f"no manifest to write: {item.manifest_problem}")
            try:
                write_csv(args.manifest, item.manifest, list(item.manifest[0]) if item.manifest else ["relpath"])
            except OSError as err:
                raise UserError(f"cannot write {args.manifest}: {err.strerror or err}") from None
            log.info("manifest of %d files written to %s", len(item.manifest), args.manifest)
        return
    records = audit.run_records(client, experiment_id(client, params.tracking.experiment), params.tracking.model_name)
    print(audit.format_history(audit.lock_history(root), records))


def cmd_ui(args: argparse.Namespace) -> None:
    """Start the MLflow UI (mlflow server) on this project's tracking database.

    Example: anime-avatar ui --port 5000, then open the runs link it prints
    """
    import shutil

    from anime_avatar.ops.tracking import missing_tracking_db, runs_table_url, tracking_uri

    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    uri = tracking_uri()
    if missing := missing_tracking_db(uri):  # `mlflow server` would create an empty one and show nothing
        raise UserError(f"no MLflow database at {missing}: run the pipeline first (dvc repro), or run this in the "
                        "project's folder")  # fmt: skip
    experiment_id = None
    if Path(args.params).is_file():  # the project's experiment, when it has been run
        with contextlib.suppress(UserError):
            client, params = _mlflow(args)
            found = client.get_experiment_by_name(params.tracking.experiment)
            experiment_id = found.experiment_id if found else None
    cmd = [mlflow, "server", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    server = f"http://{args.host}:{args.port}"
    log.info("MLflow UI on %s (tracking %s); the training runs: %s", server, uri, runs_table_url(server, experiment_id))
    os.execvp(cmd[0], cmd)


def cmd_studio(args: argparse.Namespace) -> None:
    """Open the web studio on this project: generate avatars, turn photos into anime avatars, compare the runs.

    A local Gradio page (127.0.0.1 unless --host says otherwise; no share link) on the models the other commands
    use: the champion generator (else models/generator.pt), the translator and the stylizer, and the MLflow runs.
    Example: anime-avatar studio --port 7860, then open http://127.0.0.1:7860
    """
    from anime_avatar.studio import serve

    serve(Path.cwd(), args.host, args.port, Path(args.params))


# --- argument types: a bad value is a usage error (exit 2) named by argparse -------------------


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is more than {high}")
        return value

    return parse


def _side(text: str) -> int:
    """A side in pixels that an output may have: 1 to limits.MAX_SIDE."""
    value = _int_at_least(1)(text)
    if value > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_SIDE}, the largest side in pixels")
    return value


def _port(text: str) -> int:
    """A TCP port: 1 to 65535."""
    value = _int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is more than 65535, the largest port")
    return value


def _seed(text: str) -> int:
    from anime_avatar.core.limits import LimitError, check_seed  # the served generator's rule too

    try:
        return check_seed(_int_at_least(0)(text))
    except LimitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _truncation(text: str) -> float:
    from anime_avatar.core.limits import LimitError, check_truncation  # the served generator's rule too

    try:
        return check_truncation(_non_negative_float(text))
    except LimitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"{text} is not above zero")
    return value


def _image_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: pass image files (e.g. {path / '*.png'})")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _output_folder(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return path


def _png_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: name the .png file to write")
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text}: the picture is a PNG image; name a .png file")
    return path


def _csv_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: name the .csv file to write")
    return path


# A command group adds sub-commands to the parser (the Prefect flows add theirs from pipelines/).
CommandGroup = Callable[[argparse._SubParsersAction], None]


def add_command(sub: argparse._SubParsersAction, func: Callable[[argparse.Namespace], None],
                name: str | None = None) -> argparse.ArgumentParser:  # fmt: skip
    """A sub-command running ``func``: its docstring is the one-line help and the ``--help`` description, and
    it accepts the global options (--params, -v) after its name too."""
    doc = inspect.cleandoc(func.__doc__ or "")
    p = sub.add_parser(name or func.__name__.removeprefix("cmd_"), help=doc.splitlines()[0] if doc else None,
                       description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    # SUPPRESS: given after the sub-command they override the global value; absent, they leave it alone.
    p.add_argument("--params", default=argparse.SUPPRESS, help="params file (default: params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p.set_defaults(func=func)
    return p


def build_parser(groups: Sequence[CommandGroup] = ()) -> argparse.ArgumentParser:
    from anime_avatar import __version__

    parser = argparse.ArgumentParser(
        prog="anime-avatar",
        description="Anime avatars from raw illustrations: the DVC pipeline's flows, the generator, runs and audits.",
        epilog="Global options go before or after the command. `anime-avatar COMMAND --help` says what each does.",
    )
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = add_command(sub, cmd_params)
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")

    p = add_command(sub, cmd_faces)
    p.add_argument("images", nargs="+", type=_image_file)
    p.add_argument("--out", type=_output_folder, default=Path("faces"), help="folder for the crops (default: faces/)")
    p.add_argument("--detector", choices=["lbp", "animeface", "none"], help="override detect.detector")

    p = add_command(sub, cmd_generate)
    p.add_argument("--n", type=_int_at_least(1), default=16, help="number of avatars (seeds SEED..SEED+N-1)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", type=_output_folder, help="folder for one PNG per avatar")
    p.add_argument("--grid", type=_png_file, help="write all avatars as one grid PNG")
    p.add_argument("--model", help="generator file or MLflow URI (default: champion, else models/generator.pt)")
    p.add_argument("--truncation", type=_truncation, default=0.0,
                   help="redraw latents beyond ±T (0: off; 0.7 is typical)")  # fmt: skip
    p.add_argument("--interpolate", type=_seed, nargs=2, metavar=("A", "B"), help="latent walk from seed A to B")
    p.add_argument("--steps", type=_int_at_least(2, MAX_GRID_AVATARS), default=8, help="images in the walk")
    p.add_argument("--style", type=_image_file, metavar="IMG", help="stylise the avatars in the style of this image")
    p.add_argument("--style-method", choices=["gatys", "network", "adain"], default="network",
                   help="with --style: gatys, network (default) or adain")  # fmt: skip
    p.add_argument("--style-size", type=_side, default=256, help="with --style: the stylised avatars' side in pixels")
    p.add_argument("--style-model", help="with --style: stylizer file or MLflow URI (default: models/stylizer.pt)")

    p = add_command(sub, cmd_stylize)
    p.add_argument("--content", type=Path, required=True, metavar="IMG|DIR", help="image or folder of images")
    p.add_argument("--style", type=_image_file, required=True, metavar="IMG", help="the style image")
    p.add_argument("--out", type=Path, required=True, metavar="PATH", help="output image (a folder for a folder)")
    p.add_argument("--size", type=_side, default=256, help="the content's shorter side in pixels (default: 256)")
    _add_style_options(p)

    p = add_command(sub, cmd_avatar)
    p.add_argument("--photo", type=_image_file, required=True, help="a photo of a person")
    p.add_argument("--style", type=_image_file, metavar="IMG", help="the style image (style methods only)")
    p.add_argument(
        "--out", type=Path, required=True, metavar="AVATAR.png", help="the avatar (AVATAR-N.png for several)"
    )
    p.add_argument("--size", type=_side, default=256, help="the avatar's side in pixels (default: 256)")
    p.add_argument("--no-detect", action="store_true", help="stylise the whole picture, without looking for a face")
    p.add_argument("--largest", action="store_true", help="one avatar, of the largest face, when there are several")
    _add_style_options(p, translate=True)

    p = add_command(sub, cmd_translate)
    p.add_argument("--content", type=Path, required=True, metavar="IMG|DIR", help="face picture or folder of them")
    p.add_argument("--out", type=Path, required=True, metavar="PATH", help="output image (a folder for a folder)")
    p.add_argument("--to", choices=["anime", "photo"], default="anime", help="the direction (default: anime)")
    p.add_argument("--size", type=_side, help="output side in pixels (default: the translator's)")
    p.add_argument(
        "--model", help="translator file or MLflow URI (default: models/translator.pt, else the shipped one)"
    )

    p = add_command(sub, cmd_runs)
    p.add_argument("--sort", choices=["fid", "kid", "start"], default="fid")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--plot", type=_png_file, metavar="FILE.png", help="plot FID per run and FID over training steps")
    p.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment)")

    p = add_command(sub, cmd_audit)
    p.add_argument("--run", metavar="RUN_ID", help="the data lineage of one training run (the id `runs` shows)")
    p.add_argument("--manifest", type=_csv_file, metavar="FILE.csv", help="with --run: write the raw manifest")

    p = add_command(sub, cmd_ui)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=5000)

    p = add_command(sub, cmd_studio)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_port, default=7860, help="port (default: 7860)")
    for add_commands in groups:
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None, groups: Sequence[CommandGroup] = ()) -> None:
    parser = build_parser(groups)
    args = parser.parse_args(argv)
    if misused := _gatys_options_misused(args):
        parser.error(misused)
    if args.command == "avatar" and args.method == "translate" and args.style is not None:
        parser.error("--style applies to --method network, adain and gatys; --method translate (the default) uses "
                     "no style image: add --method, or leave --style out")  # fmt: skip
    setup_logging(args.verbose)
    if args.command in HEAVY_COMMANDS and not os.environ.get("OMP_NUM_THREADS"):
        # One torch thread per idle core (core.device.apply_threads' rule), set before torch is imported: the
        # commands' argument checks come first and must not wait for torch.
        from anime_avatar.core.parallel import idle_cores

        os.environ["OMP_NUM_THREADS"] = str(idle_cores())
    if args.command == "generate" and args.grid and not args.interpolate and args.n > MAX_GRID_AVATARS:
        parser.error(f"--grid holds at most {MAX_GRID_AVATARS} avatars (--n {args.n}): write them with --out FOLDER")
    if args.command == "generate" and not (args.out or args.grid):
        args.out = Path("avatars")
        if args.out.exists() and not args.out.is_dir():
            parser.error(f"{args.out} (the default --out) is a file, not a folder: pass --out FOLDER")
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit where it cannot be handled
    except UserError as err:
        log.error("%s", err)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C outside a stage (e.g. while a temporary Prefect server starts): no traceback
        log.error("interrupted")
        sys.exit(128 + signal.SIGINT)
    except BrokenPipeError:
        # `anime-avatar params | head`: the reader left. Point stdout at /dev/null so that the
        # interpreter's final flush does not fail again, and exit as a tool killed by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        log.error("output closed early (broken pipe)")
        sys.exit(128 + signal.SIGPIPE)


if __name__ == "__main__":
    main()
