"""Command-line pieces shared by the benchmarks that stop a training run at CPU-minute budgets (quality, translate)."""

from __future__ import annotations

import argparse


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
