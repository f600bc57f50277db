"""The presets table: which preset each track's master used, and why.

One row per (track, target).

Columns
-------
``run_id``, ``track_id``, ``target``, ``preset`` (name of the preset
applied), ``forced`` (true when the manifest or job named the preset rather
than the selector choosing it), ``distance`` (selector distance of the chosen
preset from the track's fingerprint; NaN when forced or unknown),
``runners_up`` (list of ``struct<name: string, distance: float64>``, nearest
first), ``params`` (JSON text of the chain parameters render applied); since
1.1: ``confidence`` (0..1, the selection's confidence; null when forced),
``nearest`` (the bank's nearest preset; ``preset`` differs from it when the
track got a blend or the low-confidence fallback) and ``blend`` (list of
``struct<name: string, weight: float64>``: the presets blended and their
weights, heaviest first; empty when forced). A 1.0 file lacks the three.

Metadata: ``acetate.schema`` = ``presets``, ``acetate.schema_version`` =
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pyarrow as pa

from acetate.schemas._rows import checked_rows

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "RUNNER_UP", "BLEND_ITEM", "PRESETS_SCHEMA", "presets_table"]

SCHEMA_NAME = "presets"
SCHEMA_VERSION = "1.1"

RUNNER_UP = pa.struct([pa.field("name", pa.string(), nullable=False), pa.field("distance", pa.float64())])
BLEND_ITEM = pa.struct([pa.field("name", pa.string(), nullable=False), pa.field("weight", pa.float64())])

PRESETS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("target", pa.string()),
        pa.field("preset", pa.string(), nullable=False),
        pa.field("forced", pa.bool_(), nullable=False),
        pa.field("distance", pa.float64()),
        pa.field("runners_up", pa.list_(RUNNER_UP)),
        pa.field("params", pa.string(), metadata={b"format": b"JSON"}),
        pa.field("confidence", pa.float64()),
        pa.field("nearest", pa.string()),
        pa.field("blend", pa.list_(BLEND_ITEM)),
    ],
    metadata={b"acetate.schema": SCHEMA_NAME.encode(), b"acetate.schema_version": SCHEMA_VERSION.encode()},
)


def presets_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Build a table with :data:`PRESETS_SCHEMA`.

    ``params`` may be given as a dict (serialised to JSON here) or as JSON
    text; ``runners_up`` as a list of ``{"name", "distance"}`` dicts or
    ``(name, distance)`` pairs.

    Raises
    ------
    ValueError
        On an unknown column (named) or a malformed runner-up.
    """
    out = checked_rows(PRESETS_SCHEMA, rows, "presets")
    for i, row in enumerate(out):
        if row["params"] is not None and not isinstance(row["params"], str):
            row["params"] = json.dumps(row["params"], sort_keys=True, default=_jsonable)
        row["runners_up"] = _named(row["runners_up"], "distance", f"presets row {i}: runners_up")
        row["blend"] = _named(row.get("blend"), "weight", f"presets row {i}: blend")
    return pa.Table.from_pylist(out, schema=PRESETS_SCHEMA)


def _named(items: Any, value: str, where: str) -> list[dict[str, Any]]:
    """``[{name, <value>}]`` from dicts or ``(name, number)`` pairs; a ValueError names ``where`` and the item."""
    out = []
    for j, item in enumerate(items or []):
        if isinstance(item, dict):
            out.append({"name": str(item["name"]), value: _float(item.get(value))})
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out.append({"name": str(item[0]), value: _float(item[1])})
        else:
            raise ValueError(f"{where}[{j}] must be {{name, {value}}} or a pair, got {item!r}")
    return out


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    return str(v)
