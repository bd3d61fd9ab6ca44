"""``anime-avatar schedule``: serve the retrain flow as a Prefect deployment on a cron schedule.

Schedules need a long-lived Prefect server (``make prefect-server``, then
``export PREFECT_API_URL=http://127.0.0.1:4200/api``); the temporary server Prefect starts
on its own lives only as long as one process and cannot run them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from anime_avatar.core.errors import UserError, first_line

log = logging.getLogger(__name__)

START_SERVER_HINT = (
    "start one with `make prefect-server` (or `prefect server start`) and "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


def prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or ""


def check_server(url: str, unset_hint: str = "") -> None:
    """Fail with one message unless a Prefect server answers at ``url`` (``unset_hint``: what else the user can do,
    for the commands that run without one)."""
    import httpx

    if not url:
        raise UserError(f"scheduling needs a Prefect server and PREFECT_API_URL is not set: {START_SERVER_HINT}")
    health = f"{url.rstrip('/')}/health"
    try:
        response = httpx.get(health, timeout=5)
    except httpx.HTTPError as err:
        raise UserError(f"no Prefect server answers at PREFECT_API_URL={url} ({first_line(err)}): "
                        f"{unset_hint or START_SERVER_HINT}") from None  # fmt: skip
    if response.status_code != 200:
        api = "" if url.rstrip("/").endswith("/api") else f" (a Prefect API URL ends in /api: {url.rstrip('/')}/api)"
        raise UserError(f"PREFECT_API_URL={url} answers {health} with HTTP {response.status_code}: not a Prefect "
                        f"server's API{api}")  # fmt: skip


def cron_schedule(cron: str, timezone: str | None = None):  # -> CronSchedule
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as err:
        first = err.errors()[0]
        option = "--timezone" if first["loc"] and first["loc"][0] == "timezone" else "--cron"
        value = timezone if option == "--timezone" else cron
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise UserError(f"{option} {value!r}: {reason}") from None


def serve_retrain(workspace: Path, cron: str, name: str = "scheduled", timezone: str | None = None) -> None:
    """Register the deployment ``anime-avatar-retrain/<name>`` and run its flow runs until interrupted."""
    from prefect.deployments.runner import EntrypointType

    from pipelines.flows import retrain_flow

    schedule = cron_schedule(cron, timezone)
    check_server(prefect_api_url())
    log.info("serving anime-avatar-retrain/%s on %r for %s (Ctrl-C stops)", name, cron, workspace)
    retrain_flow.serve(
        name=name,
        schedule=schedule,
        parameters={"workspace": str(workspace.resolve())},
        description=f"Retrain and promote the anime-avatar generator of {workspace.resolve()}",
        limit=1,  # one flow run at a time (the workspace lock would refuse a second anyway)
        entrypoint_type=EntrypointType.MODULE_PATH,  # importable from any working directory
    )
