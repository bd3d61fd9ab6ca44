"""Pieces shared by the benchmarks that stop a training run at CPU-minute budgets (quality, translate, precision):
their command-line arguments and their CSV tables."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from anime_avatar.core.fsutil import atomic_write_text


def default_label(model: str, seed: int) -> str:
    """A run's curve and CSV name: the model's, with ``-seedN`` unless the seed is 0."""
    return model if seed == 0 else f"{model}-seed{seed}"


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
