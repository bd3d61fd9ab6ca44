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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        args.func(args)
    except UserError as err:
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
