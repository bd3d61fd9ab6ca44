"""``anime-avatar``: the command line of the pipeline's library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from anime_avatar.errors import UserError
from anime_avatar.params import DEFAULT_PARAMS, load_params
from anime_avatar.stage import setup_logging

log = logging.getLogger("anime_avatar")


def cmd_params(args: argparse.Namespace) -> None:
    """Print params.yaml as the pipeline sees it, defaults filled in."""
    params = load_params(args.params)
    print(json.dumps(params.model_dump(mode="json", by_alias=True), indent=2))


def cmd_faces(args: argparse.Namespace) -> None:
    """Detect and crop the faces of the given images, with the detect section of params.yaml."""
    from anime_avatar.detection import FileJob, build_detector, detect_file
    from anime_avatar.fsutil import sha256_file

    cfg = load_params(args.params).detect
    if args.detector:
        cfg = cfg.model_copy(update={"detector": args.detector})
    detector = build_detector(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for image in args.images:
        if not image.is_file():
            raise UserError(f"{image}: no such file")
        result = detect_file(FileJob(str(image), str(image), sha256_file(image)), detector, cfg.margin, cfg.image_size)
        if result.error:
            log.warning("%s: %s", image, result.error)
        for crop in result.crops:
            (args.out / f"{crop.face_id}.png").write_bytes(crop.png)
            print(f"{image}\t{crop.box}\t{crop.score:.3f}\t{args.out / (crop.face_id + '.png')}")
        total += len(result.crops)
    log.info("%d faces from %d images with %s", total, len(args.images), detector.name)


def cmd_generate(args: argparse.Namespace) -> None:
    """Write avatars (PNG files and/or a grid) from the champion model or a given one."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    from anime_avatar.generate import avatars, resolve_model, walk

    name = load_params(args.params).tracking.model_name if Path(args.params).is_file() else "anime-avatar-generator"
    generator = resolve_model(args.model, name)
    if args.interpolate:
        images = walk(generator, *args.interpolate, steps=args.steps, truncation=args.truncation)
        labels = [f"walk-{args.interpolate[0]}-{args.interpolate[1]}-{i:03d}" for i in range(len(images))]
    else:
        seeds = list(range(args.seed, args.seed + args.n))
        images = avatars(generator, seeds, args.truncation)
        labels = [f"avatar-{s:06d}" for s in seeds]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for label, image in zip(labels, images, strict=True):
            to_pil_image(image).save(args.out / f"{label}.png")
        log.info("%d avatars in %s", len(images), args.out)
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        nrow = len(images) if args.interpolate else max(1, int(len(images) ** 0.5))
        to_pil_image(make_grid(images, nrow=nrow, padding=2)).save(args.grid)
        log.info("grid written to %s", args.grid)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anime-avatar", description=__doc__)
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help=cmd_params.__doc__)
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("faces", help=cmd_faces.__doc__)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("faces"), help="folder for the crops (default: faces/)")
    p.add_argument("--detector", choices=["lbp", "animeface", "none"], help="override detect.detector")
    p.set_defaults(func=cmd_faces)

    p = sub.add_parser("generate", help=cmd_generate.__doc__)
    p.add_argument("--n", type=int, default=16, help="number of avatars (seeds SEED..SEED+N-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for one PNG per avatar")
    p.add_argument("--grid", type=Path, help="write all avatars as one grid PNG")
    p.add_argument("--model", help="generator file or MLflow URI (default: champion, else models/generator.pt)")
    p.add_argument("--truncation", type=float, default=0.0, help="redraw latents beyond ±T (0: off; 0.7 is typical)")
    p.add_argument("--interpolate", type=int, nargs=2, metavar=("A", "B"), help="latent walk from seed A to B")
    p.add_argument("--steps", type=int, default=8, help="images in the walk")
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command == "generate" and not (args.out or args.grid):
        args.out = Path("avatars")
    try:
        args.func(args)
    except UserError as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
