"""Progress bars that suit both a terminal and a log file.

On a terminal a bar redraws in place several times a second. Written to a file or a pipe
(``dvc repro > log``, the Prefect flows, CI) every redraw becomes a new line, so there a bar
prints at most once every :data:`LOG_INTERVAL_S` seconds (and when it closes).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress_bar(**kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; off a terminal it redraws at most every 30 s (``$TQDM_MININTERVAL`` overrides that)."""
    if not on_terminal() and "mininterval" not in kwargs:
        kwargs["mininterval"] = float(os.environ.get("TQDM_MININTERVAL", LOG_INTERVAL_S))
    # tqdm's monitor thread also redraws a bar whose last redraw is maxinterval (10 s) old, so with a longer
    # mininterval bars redrew every 10-20 s: never more often than mininterval.
    kwargs["maxinterval"] = max(kwargs.get("maxinterval", 10.0), kwargs.get("mininterval", 0.1))
    return tqdm(**kwargs)
