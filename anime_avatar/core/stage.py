"""The common frame of every ``python -m stages.<name>``: logging, params, one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

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
    for noisy in ("great_expectations", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
        log.error("stage %s failed: %s", name, err)
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("stage %s interrupted; its outputs were left as they were", name)
        sys.exit(130)
    log.info("stage %s done in %.1f s", name, time.perf_counter() - start)
