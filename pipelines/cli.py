"""``anime-avatar``: the library's commands plus the Prefect flows' (pipeline, retrain, schedule).

This is the console entry point: orchestration sits above the library and adds its commands
to the library's parser, so the library never imports this package.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from anime_avatar import cli
from anime_avatar.core.errors import UserError
from anime_avatar.core.params import DEFAULT_PARAMS, load_params

log = logging.getLogger("anime_avatar")


def _flow_outcome(state_name: str, result: dict) -> None:
    print(result["summary"])
    if "decision" in result:
        decision = result["decision"]
        print(f"champion {decision['champion.decision']}: {decision['champion.reason']}")
    log.info("%s finished", state_name)


def _workspace_params(args: argparse.Namespace) -> Path:
    """The flows run ``dvc repro``, which reads the workspace's params.yaml: check it, refuse any other file."""
    workspace = Path.cwd()
    if Path(args.params).resolve() != (workspace / DEFAULT_PARAMS).resolve():
        raise UserError(
            f"--params {args.params}: the flows run DVC, which reads {DEFAULT_PARAMS} of the workspace only; "
            "edit it, or try values with `dvc exp run -S key=value`"
        )
    load_params(args.params)  # bad params fail here, in one line, before Prefect starts
    return workspace


def cmd_pipeline(args: argparse.Namespace) -> None:
    """Run every DVC stage as a Prefect flow (anime-avatar-pipeline), under the workspace lock."""
    from pipelines.flows import pipeline_flow

    workspace = _workspace_params(args)
    _flow_outcome("anime-avatar-pipeline", pipeline_flow(workspace=str(workspace)))


def cmd_retrain(args: argparse.Namespace) -> None:
    """Refresh the data, run the pipeline, and promote the generator if its FID beats the champion's."""
    from pipelines.flows import retrain_flow

    workspace = _workspace_params(args)
    _flow_outcome("anime-avatar-retrain", retrain_flow(workspace=str(workspace), refresh=not args.no_refresh))


def cmd_schedule(args: argparse.Namespace) -> None:
    """Serve the retrain flow as a Prefect deployment on a cron schedule (needs a Prefect server)."""
    from pipelines.schedule import serve_retrain

    serve_retrain(_workspace_params(args), args.cron, args.name, args.timezone)


def add_flow_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help=cmd_pipeline.__doc__)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("retrain", help=cmd_retrain.__doc__)
    p.add_argument("--no-refresh", action="store_true", help="do not force the download stage to run again")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("schedule", help=cmd_schedule.__doc__)
    p.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * 1" (Mondays 03:00)')
    p.add_argument("--name", default="scheduled", help="deployment name (default: scheduled)")
    p.add_argument("--timezone", help="IANA time zone of the schedule (default: UTC)")
    p.set_defaults(func=cmd_schedule)


def main(argv: list[str] | None = None) -> None:
    cli.main(argv, groups=[add_flow_commands])


if __name__ == "__main__":
    main()
