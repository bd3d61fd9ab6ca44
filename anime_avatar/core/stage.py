"""The common frame of every ``python -m stages.<name>``: logging, params, one-line errors.

Under ``dvc repro`` a failing stage's message also says how to restore the outputs DVC removed
before the stage ran (``dvc checkout <path>``), since dvc.lock still records them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

from anime_avatar.core.dvcfiles import restore_hint, running_stage
from anime_avatar.core.errors import UserError
from anime_avatar.core.params import DEFAULT_PARAMS, Params, load_params

log = logging.getLogger("anime_avatar")

# Set (to 1) by a caller that stamps each line itself (the Prefect flows): log lines then carry no time.
NO_LOG_TIME_ENV = "ANIME_AVATAR_NO_LOG_TIME"


def setup_logging(verbose: bool = False) -> None:
    timed = os.environ.get(NO_LOG_TIME_ENV, "") in ("", "0")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=("%(asctime)s " if timed else "") + "%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # (alembic: 9 lines per stage of MLflow's database set-up, "setup plugin …", "Context impl SQLiteImpl.")
    for noisy in ("great_expectations", "urllib3", "filelock", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Set (to 1) by a caller that puts a failed stage's previous outputs back itself (the Prefect flows): the stage's
# message then says so instead of telling the user to run `dvc checkout`.
OUTPUTS_RESTORED_ENV = "ANIME_AVATAR_OUTPUTS_RESTORED"


def failure_hint(name: str) -> str:
    """How to restore what DVC removed before running this stage ("" when DVC is not running it)."""
    if running_stage() != name or not restore_hint(name):
        return ""
    if os.environ.get(OUTPUTS_RESTORED_ENV, "") not in ("", "0"):
        return "; the flow puts back the previous outputs DVC removed before it ran, and sets aside what this run wrote"
    return restore_hint(name)


def run_stage(name: str, body: Callable[[Params], None], argv: list[str] | None = None) -> None:
    """Parse ``--params``, run ``body``, and turn a UserError into one message and exit status 1."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    start = time.perf_counter()
    try:
        body(load_params(args.params))
    except UserError as err:
        log.error("stage %s failed: %s%s", name, err, failure_hint(name))
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("stage %s interrupted%s", name, failure_hint(name) or "; its outputs were left as they were")
        sys.exit(130)
    except Exception:
        # A bug: keep the traceback, and still say how to get the previous outputs back.
        if hint := failure_hint(name):
            log.error("stage %s failed%s", name, hint)
        raise
    log.info("stage %s done in %.1f s", name, time.perf_counter() - start)
