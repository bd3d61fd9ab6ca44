"""``--set KEY=VALUE`` overrides of params.yaml for the benchmarks, as the nested mapping ``load_params`` merges."""

from __future__ import annotations

from collections.abc import Iterable

import yaml


def set_key(tree: dict, dotted: str, value: str) -> None:
    """Set one dotted key of a nested mapping (``model.channels`` and ``"32"``), the value read as YAML."""
    *path, last = dotted.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[last] = yaml.safe_load(value)


def apply_sets(tree: dict, items: Iterable[str]) -> dict:
    """Apply ``KEY=VALUE`` items (``--set`` arguments) to ``tree`` in order; returns ``tree``."""
    for item in items:
        key, _, value = item.partition("=")
        set_key(tree, key, value)
    return tree
