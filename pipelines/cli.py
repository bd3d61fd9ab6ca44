"""``anime-avatar``: the library's commands plus the Prefect flows' (pipeline, retrain, schedule).

This is the console entry point: orchestration sits above the library and adds its commands
to the library's parser, so the library never imports this package.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


def _workspace_params(args: argparse.Namespace, retrains: bool = False) -> Path:
    """The flows run ``dvc repro``, which reads the workspace's params.yaml: check it, refuse any other file.
    ``retrains``: the retrain flow's own needs too (:func:`pipelines.recovery.check_retrain_params`)."""
    workspace = Path.cwd()
    if Path(args.params).resolve() != (workspace / DEFAULT_PARAMS).resolve():
        raise UserError(
            f"--params {args.params}: the flows run DVC, which reads {DEFAULT_PARAMS} of the workspace only; "
            "edit it, or try values with `dvc exp run -S key=value`"
        )
    params = load_params(args.params)  # bad params fail here, in one line, before Prefect starts
    if retrains:
        from pipelines.recovery import check_retrain_params

        check_retrain_params(params)
    if not (workspace / "dvc.yaml").is_file():  # before Prefect, the lock and MLflow make anything here
        raise UserError(f"{workspace} holds no dvc.yaml: run the flows from the project's root")
    return workspace


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """The Prefect API a flow reports to: PREFECT_API_URL's server (one that does not answer is one line before the
    flow starts), else a temporary server, as Prefect would start one, but in a session of its own.

    Prefect's own temporary server shares the terminal's process group: a Ctrl-C reached it too, it died while the
    stage was saving its checkpoint, and the flow then printed about 100 lines of connection errors and hung."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.schedule import check_server, prefect_api_url

    if url := prefect_api_url():
        check_server(url, "start it, or `unset PREFECT_API_URL` to let Prefect run a temporary one")
        yield
        return
    port = free_local_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"},
        start_new_session=True,  # out of the terminal's process group: a Ctrl-C is the flow's to handle
        preexec_fn=_end_with_parent(),  # and no longer killed with that group: it ends with this process instead
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for_server(url, server)
        log.info("temporary Prefect server on %s", url)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield
            finally:
                _drain_prefect_workers()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _drain_prefect_workers() -> None:
    """Let Prefect's log and event workers send what they hold before the temporary server stops: otherwise the
    flow's last log lines are lost and the command ends with `--- Error logging to API ---`."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # nothing to send is fine; a slow send gives up after 10 s
            worker.drain_all(timeout=10)


def _end_with_parent() -> Callable[[], None] | None:
    """For the temporary server's process: be sent SIGTERM when the process that started it dies, however it dies
    (SIGHUP from a closed terminal, SIGKILL), on Linux (prctl PR_SET_PDEATHSIG); elsewhere nothing is set."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_server(url: str, server: subprocess.Popen, timeout_s: float = 180.0) -> None:
    """Until ``url``/health answers (its first start migrates a new database: minutes on a loaded machine)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the temporary Prefect server exited with status {server.returncode} before it answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise UserError(f"the temporary Prefect server did not answer within {timeout_s:g} s: start one with "
                    "`make prefect-server` and export PREFECT_API_URL=http://127.0.0.1:4200/api")  # fmt: skip


def cmd_pipeline(args: argparse.Namespace) -> None:
    """Run every DVC stage as a Prefect flow (anime-avatar-pipeline), under the workspace lock.

    DVC skips the stages that are up to date; each stage is a Prefect task whose output goes to the
    flow run's log, and the flow run publishes a results artifact (FID/KID and the sample grid).
    Without PREFECT_API_URL, Prefect starts a temporary local server for the run.
    Example: anime-avatar pipeline
    """
    from pipelines.flows import pipeline_flow

    workspace = _workspace_params(args)
    with prefect_api():
        _flow_outcome("anime-avatar-pipeline", pipeline_flow(workspace=str(workspace)))


def cmd_retrain(args: argparse.Namespace) -> None:
    """Refresh the data, run the pipeline, and promote the generator if its FID beats the champion's.

    The champion alias of the registered model moves only to a strictly lower FID; with no champion
    yet, the best evaluated version takes it.
    Example: anime-avatar retrain --no-refresh
    """
    from pipelines.flows import retrain_flow

    workspace = _workspace_params(args, retrains=True)
    with prefect_api():
        _flow_outcome("anime-avatar-retrain", retrain_flow(workspace=str(workspace), refresh=not args.no_refresh))


def cmd_schedule(args: argparse.Namespace) -> None:
    """Serve the retrain flow as a Prefect deployment on a cron schedule (needs a Prefect server).

    Start one with `make prefect-server` and export PREFECT_API_URL=http://127.0.0.1:4200/api first.
    Example: anime-avatar schedule --cron "0 3 * * 1" --name weekly
    """
    from pipelines.schedule import serve_retrain

    serve_retrain(_workspace_params(args, retrains=True), args.cron, args.name, args.timezone)


def cmd_experiments(args: argparse.Namespace) -> None:
    """`dvc exp show` in a table that fits: the headline scores, and the params and metrics that differ.

    Plain `dvc exp show` has over 300 columns (every param, code file and metric); this keeps FID/KID, the
    stylizer's and the translator's headline scores, and whatever differs between the experiments shown.
    Example: anime-avatar experiments --md
    """
    from pipelines.experiments import show_experiments

    show_experiments(Path.cwd(), args.output, args.all_commits)


def deployment_name(text: str) -> str:
    """A name Prefect takes for the deployment and its runner: not empty, none of / % & < >."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the name is empty")
    if bad := sorted(set(text) & set("/%&<>")):
        raise argparse.ArgumentTypeError(f"{text!r} holds {' '.join(bad)}: Prefect refuses / % & < > in names")
    return text


def add_flow_commands(sub: argparse._SubParsersAction) -> None:
    cli.add_command(sub, cmd_pipeline)

    p = cli.add_command(sub, cmd_retrain)
    p.add_argument("--no-refresh", action="store_true", help="do not force the download stage to run again")

    p = cli.add_command(sub, cmd_schedule)
    p.add_argument("--cron", required=True, help='cron schedule, e.g. "0 3 * * 1" (Mondays 03:00)')
    p.add_argument("--name", type=deployment_name, default="scheduled", help="deployment name (default: scheduled)")
    p.add_argument("--timezone", help="IANA time zone of the schedule (default: UTC)")

    p = cli.add_command(sub, cmd_experiments)
    output = p.add_mutually_exclusive_group()
    output.add_argument("--csv", dest="output", action="store_const", const="csv", help="CSV, for piping")
    output.add_argument("--md", dest="output", action="store_const", const="md", help="a Markdown table")
    p.set_defaults(output="table")
    p.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")


def main(argv: list[str] | None = None) -> None:
    cli.main(argv, groups=[add_flow_commands])


if __name__ == "__main__":
    main()
