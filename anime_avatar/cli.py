"""``anime-avatar``: the command line of the library (the flows in pipelines/ add their commands to it)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from anime_avatar.core.errors import UserError
from anime_avatar.core.params import DEFAULT_PARAMS, load_params
from anime_avatar.core.stage import setup_logging

log = logging.getLogger("anime_avatar")


def cmd_params(args: argparse.Namespace) -> None:
    """Print params.yaml as the pipeline sees it, validated."""
    params = load_params(args.params)
    print(json.dumps(params.model_dump(mode="json", by_alias=True), indent=2))


def cmd_faces(args: argparse.Namespace) -> None:
    """Detect and crop the faces of the given images, with the detect section of params.yaml."""
    from anime_avatar.core.fsutil import sha256_file
    from anime_avatar.data.detection import FileJob, build_detector, detect_file

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

    from anime_avatar.gan.inference import avatars, walk
    from anime_avatar.ops.registry import resolve_generator

    if args.model and ":/" not in args.model:
        generator = resolve_generator(args.model, "")  # a file: no project needed
    elif not Path(args.params).is_file():
        raise UserError(f"no {args.params} here: run inside the project (for its champion model), or pass --model FILE")
    else:
        generator = resolve_generator(args.model, load_params(args.params).tracking.model_name)
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


def _mlflow(args: argparse.Namespace):  # -> (MlflowClient, Params)
    from mlflow import MlflowClient

    from anime_avatar.ops.tracking import tracking_uri
    from anime_avatar.ops.tracking_store import check_tracking_store, fail_fast_http

    params = load_params(args.params)
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"no MLflow database at {uri.removeprefix('sqlite:///')}: run the pipeline first (dvc repro)")
    check_tracking_store(uri, write=False)  # seconds, not minutes of retries, when the server is away
    fail_fast_http()
    return MlflowClient(uri), params


def cmd_runs(args: argparse.Namespace) -> None:
    """Compare the training runs in MLflow: data version, architecture, steps, FID, KID, champion."""
    from anime_avatar.ops import runs

    client, params = _mlflow(args)
    experiment = args.experiment or params.tracking.experiment
    runs.settle_runs(client, experiment)
    rows = runs.sort_rows(runs.training_runs(client, experiment, params.tracking.model_name), args.sort)
    print(runs.to_csv(rows) if args.csv else runs.format_table(rows), end="" if args.csv else "\n")
    if args.plot:
        runs.plot(rows, runs.fid_histories(client, rows), args.plot)
        log.info("plot written to %s", args.plot)


def cmd_audit(args: argparse.Namespace) -> None:
    """Data versions per dvc.lock commit and the runs trained on each; --run RUN_ID: the data behind one model."""
    from anime_avatar.core.fsutil import write_csv
    from anime_avatar.ops import audit
    from anime_avatar.ops.runs import experiment_id

    client, params = _mlflow(args)
    root = Path.cwd()
    if args.run:
        item = audit.lineage(client, root, args.run, params.tracking.model_name)
        print(audit.format_lineage(item))
        if args.manifest:
            if item.manifest is None:
                raise UserError(f"no manifest to write: {item.manifest_problem}")
            write_csv(args.manifest, item.manifest, list(item.manifest[0]) if item.manifest else ["relpath"])
            log.info("manifest of %d files written to %s", len(item.manifest), args.manifest)
        return
    records = audit.run_records(client, experiment_id(client, params.tracking.experiment), params.tracking.model_name)
    print(audit.format_history(audit.lock_history(root), records))


def cmd_ui(args: argparse.Namespace) -> None:
    """Start the MLflow UI (mlflow server) on this project's tracking database."""
    import os
    import shutil

    from anime_avatar.ops.tracking import tracking_uri

    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    uri = tracking_uri()
    cmd = [mlflow, "server", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    log.info("MLflow UI on http://%s:%d (tracking %s)", args.host, args.port, uri)
    os.execvp(cmd[0], cmd)


# A command group adds sub-commands to the parser (the Prefect flows add theirs from pipelines/).
CommandGroup = Callable[[argparse._SubParsersAction], None]


def build_parser(groups: Sequence[CommandGroup] = ()) -> argparse.ArgumentParser:
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

    p = sub.add_parser("runs", help=cmd_runs.__doc__)
    p.add_argument("--sort", choices=["fid", "kid", "start"], default="fid")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="plot FID per run and FID over training steps")
    p.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("audit", help=cmd_audit.__doc__)
    p.add_argument("--run", metavar="RUN_ID", help="the data lineage of one training run")
    p.add_argument("--manifest", type=Path, metavar="FILE.csv", help="with --run: write the raw manifest")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("ui", help=cmd_ui.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    for add_commands in groups:
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None, groups: Sequence[CommandGroup] = ()) -> None:
    args = build_parser(groups).parse_args(argv)
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
