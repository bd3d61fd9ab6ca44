"""Data validation with Great Expectations (GX Core 1.x) over per-image metadata tables.

Two tables are checked: the face crops (``data/faces``) and the packed training
images (``data/train``). Each row is one image: whether it decodes, its size and
channels, its brightness and contrast, and a hash for uniqueness.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anime_avatar.artifacts.faces import face_path
from anime_avatar.core.params import ValidateParams
from anime_avatar.core.progress import progress_bar
from anime_avatar.data.images import UnreadableImage, image_stats, phash64, read_image

TABLE_COLUMNS = ("image", "readable", "width", "height", "channels", "brightness", "contrast", "hash")


def _unreadable(name: str) -> dict[str, Any]:
    return {"image": name, "readable": False, "width": 0, "height": 0, "channels": 0,
            "brightness": 0.0, "contrast": 0.0, "hash": f"unreadable:{name}"}  # fmt: skip


def face_table(folder: Path, face_ids: Iterable[str]) -> pd.DataFrame:
    """One row per face crop file; ``hash`` is its 64-bit perceptual hash."""
    rows = []
    for face_id in progress_bar(iterable=list(face_ids), desc="inspect faces", unit="img", leave=False):
        path = face_path(folder, face_id)
        try:
            image = read_image(path)
        except UnreadableImage:
            rows.append(_unreadable(path.name))
            continue
        channels = image.channels
        array = np.asarray(image.rgb)
        phash = phash64(image.rgb)
        brightness, contrast = image_stats(array)
        rows.append({"image": path.name, "readable": True, "width": array.shape[1], "height": array.shape[0],
                     "channels": channels, "brightness": brightness, "contrast": contrast,
                     "hash": f"{phash:016x}"})  # fmt: skip
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def train_table(images: Iterable[np.ndarray], total: int | None = None) -> pd.DataFrame:
    """One row per packed training image; ``hash`` is the md5 of its pixels. ``images`` is an (N, S, S, 3) array
    or the images one at a time (``iter_train_images``: one memory-mapped shard at a time, never the whole set)."""
    if total is None and isinstance(images, Sized):
        total = len(images)
    rows = []
    for i, image in enumerate(
        progress_bar(iterable=images, total=total, desc="inspect train", unit="img", leave=False)
    ):
        array = np.asarray(image)
        brightness, contrast = image_stats(array)
        rows.append({"image": f"train[{i}]", "readable": True, "width": array.shape[1], "height": array.shape[0],
                     "channels": array.shape[2] if array.ndim == 3 else 1, "brightness": brightness,
                     "contrast": contrast, "hash": hashlib.md5(array.tobytes()).hexdigest()})  # fmt: skip
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def expectations(
    params: ValidateParams, image_size: int, row_count: int | None = None, unique_hash: bool = True
) -> list[Any]:
    """The suite for one table; ``row_count`` pins the exact count (else the params' range). ``unique_hash``: off
    for the training images, where a random transform may draw a face's own image twice (a flip with p 0.5 gives
    the original back half the time); the faces they come from are checked unique."""
    import great_expectations.expectations as gxe

    count = (
        gxe.ExpectTableRowCountToEqual(value=row_count)
        if row_count is not None
        else gxe.ExpectTableRowCountToBeBetween(min_value=params.min_count, max_value=params.max_count)
    )
    return [
        count,
        gxe.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=image_size, max_value=image_size),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=image_size, max_value=image_size),
        gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[3]),
        gxe.ExpectColumnValuesToBeBetween(
            column="brightness", min_value=params.brightness_min, max_value=params.brightness_max
        ),
        gxe.ExpectColumnValuesToBeBetween(column="contrast", min_value=params.contrast_min, max_value=1.0),
        *([gxe.ExpectColumnValuesToBeUnique(column="hash")] if unique_hash else []),
    ]


@dataclass(frozen=True)
class CheckResult:
    table: str
    expectation: str
    column: str
    success: bool
    observed: Any
    unexpected_count: int
    unexpected_examples: list[dict[str, Any]]  # {"image": its name, "value": its value}

    def describe(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        detail = (
            f"{self.unexpected_count} unexpected, e.g. {examples_text(self.unexpected_examples[:3])}"
            if self.unexpected_count
            else f"observed {self.observed}"
        )
        return f"{self.expectation} on {where}: {detail}"


def examples_text(examples: list[dict[str, Any]]) -> str:
    """Unexpected values with the images they belong to: ``face_0003.png = 0.02, face_0107.png = 0.01``."""
    return ", ".join(f"{e['image']} = {_shown(e['value'])}" for e in examples)


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def _examples(result: dict[str, Any], column: str) -> list[dict[str, Any]]:
    """The first unexpected rows GX gives (``partial_unexpected_index_list``, with the image column asked for by
    ``unexpected_index_column_names``), as image and value."""
    rows = result.get("partial_unexpected_index_list") or []
    return [{"image": str(row.get("image")), "value": _plain(row.get(column))} for row in rows]


def _plain(value: Any) -> Any:
    """JSON-friendly copy of a GX result value."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def run_suites(tables: dict[str, tuple[pd.DataFrame, list[Any]]]) -> list[CheckResult]:
    """Validate each table against its expectations with GX (an in-memory context: nothing written)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("images")
    results: list[CheckResult] = []
    for name, (frame, suite_expectations) in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}-all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}-suite"))
        for expectation in suite_expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        # The unexpected rows are named by their image, not only by their values (a brightness of 0.02: which face?)
        outcome = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": ["image"]},
        )
        for r in outcome.results:
            kwargs = r.expectation_config.kwargs
            column = str(kwargs.get("column", ""))
            results.append(
                CheckResult(
                    table=name,
                    expectation=r.expectation_config.type,
                    column=column,
                    success=bool(r.success),
                    observed=_plain(r.result.get("observed_value")),
                    unexpected_count=int(r.result.get("unexpected_count") or 0),
                    unexpected_examples=_examples(r.result, column),
                )
            )
    return results


def report(results: list[CheckResult], tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    return {
        "success": all(r.success for r in results),
        "failed": [r.describe() for r in results if not r.success],
        "tables": {name: {"rows": len(df)} for name, df in tables.items()},
        "checks": [
            {
                "table": r.table,
                "expectation": r.expectation,
                "column": r.column,
                "success": r.success,
                "observed": r.observed,
                "unexpected_count": r.unexpected_count,
                "unexpected_examples": r.unexpected_examples[:10],
            }
            for r in results
        ],  # fmt: skip
    }


_PAGE_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
.status { display: inline-block; padding: .2em .7em; border-radius: .3em; color: #fff; font-weight: 600; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
table { border-collapse: collapse; width: 100%; } th, td { border-bottom: 1px solid #ddd; padding: .4em .6em;
text-align: left; vertical-align: top; } th { background: #f4f4f4; } tr.failed td { background: #fdecea; }
code { font-size: .92em; } .muted { color: #666; }
"""


def report_html(summary: dict[str, Any], title: str = "Data validation") -> str:
    """The validation report as one self-contained HTML page (inline style, no scripts, nothing fetched):
    readable offline, unlike GX's Data Docs, whose style and scripts come from CDNs."""
    esc = html.escape
    ok = summary["success"]
    failed = sum(not c["success"] for c in summary["checks"])
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{_PAGE_STYLE}</style></head>',
        f'<body><h1>{esc(title)} <span class="status {"pass" if ok else "fail"}">'
        f"{'PASSED' if ok else 'FAILED'}</span></h1>",
        f"<p>{len(summary['checks'])} Great Expectations checks, {failed} failed.</p>",
    ]
    for table, info in summary["tables"].items():
        checks = [c for c in summary["checks"] if c["table"] == table]
        parts.append(f'<h2>{esc(table)} <span class="muted">({info["rows"]} rows)</span></h2>')
        parts.append("<table><tr><th>expectation</th><th>column</th><th>result</th><th>details</th></tr>")
        for c in checks:
            if c["unexpected_count"]:
                detail = f"{c['unexpected_count']} unexpected, e.g. {esc(examples_text(c['unexpected_examples'][:5]))}"
            else:
                detail = f"observed {esc(json.dumps(c['observed']))}" if c["observed"] is not None else ""
            parts.append(
                f'<tr class="{"passed" if c["success"] else "failed"}"><td><code>{esc(c["expectation"])}</code></td>'
                f"<td>{esc(c['column'])}</td><td>{'pass' if c['success'] else 'FAIL'}</td><td>{detail}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
