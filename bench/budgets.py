"""Pieces shared by the benchmarks that stop a training run at CPU-minute budgets (quality, translate, precision):
their command-line arguments and their CSV tables."""

from __future__ import annotations

import argparse
import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path

from anime_avatar.core.fsutil import atomic_write_text

SEED_SUFFIX = re.compile(r"-seed(\d+)$")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name ("?" where the system does not say). A CPU-minute is not the same work on another
    CPU: the same run made 1,287 steps in 5 CPU-minutes on an Intel Xeon with AMX and 805 on an AMD EPYC
    (bench/reported/translate/README.md), so budgets are compared, and runs resumed, on one model only."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return "?"
    named = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(named, "") or "?"  # a blank "model name" line (some virtual machines) says nothing either


def run_label(label: str, model: str, seed: int) -> str:
    """A run's curve and CSV name: ``label`` (default: the model's name) ending in ``-seedN`` unless the seed is
    0. The suffix is what groups a curve's seeds, so a label given without it gets it; a label that names
    another seed than ``seed`` is a ValueError (its curve would join the wrong seed's)."""
    base = label or model
    named = SEED_SUFFIX.search(base)
    if named is None:
        return base if seed == 0 else f"{base}-seed{seed}"
    if int(named.group(1)) != seed:
        raise ValueError(f"{base!r} names seed {named.group(1)} but the run's seed is {seed}")
    return base


def refuse_to_overwrite(paths: Iterable[Path], remedy: str) -> None:
    """Exit, before any work, when one of ``paths`` exists: a new run of a label would replace what an earlier
    run of it wrote (hours of training), so that takes an explicit choice, which ``remedy`` names."""
    for path in paths:
        if path.exists():
            raise SystemExit(f"{path} exists: a run of this label and --out wrote it; {remedy}")


def budgets_arg(text: str) -> list[float]:
    """``--budgets``: positive CPU-minutes separated by commas, returned sorted without repeats."""
    try:
        values = sorted({float(v) for v in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPU-minutes separated by commas (5,15,30), got {text!r}") from None
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"budgets must be positive CPU-minutes, got {text!r}")
    return values


def read_rows(path: Path) -> list[dict]:
    """A benchmark's CSV: every column a float but ``label``."""
    with open(path, newline="") as f:
        return [{k: (v if k == "label" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    """``rows`` as a CSV of ``columns``, written atomically (a run rewrites its table after each budget)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
