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
    return tqdm(**kwargs)
