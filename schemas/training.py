"""The training-data table: one row per rendered variant of an input track.

Written by ``acetate training-data`` (:mod:`acetate.pipeline.learning.training`) for
teams who train their own models: the input's fingerprint, what was applied,
and what came out.

Columns
-------
``track_path`` (string, not null), ``track_id`` (string: the file stem),
``variant`` (string, not null: ``<track_id>__<preset>__<intensity>[__<k>]``),
``variant_index`` (int64), ``seed`` (int64: the run's seed), ``preset``,
``intensity`` (string), ``target_lufs`` / ``ceiling_dbtp`` (float64: what
the master aimed for), ``audio_path`` (string: the rendered file, relative to
the table's folder), ``error`` (string, null unless the variant failed),
``params`` (string, JSON: the chain parameters render applied),
``eq_gain_db`` (list of 31 float64: the EQ gain per 1/3-octave band, empty
when EQ was off), ``target_met`` / ``ceiling_met`` (bool),
``out_true_peak_dbtp_16x`` (float64), then ``in_<feature>`` and
``out_<feature>`` for every name in
:data:`acetate.schemas.features.FEATURE_NAMES` (float64; the output
fingerprint holds the output loudness).

Metadata: ``acetate.schema`` = ``training``, ``acetate.schema_version`` =
:data:`SCHEMA_VERSION`, ``acetate.training`` = JSON of the run's settings
(seed, bank, presets, intensities, random draws).

Examples
--------
>>> TRAINING_SCHEMA.field("variant").nullable
False
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import pyarrow as pa

from acetate.schemas.features import FEATURE_NAMES, FEATURE_UNITS

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "KEY_FIELDS", "TRAINING_SCHEMA", "training_schema", "training_table"]

SCHEMA_NAME = "training"
SCHEMA_VERSION = "1.0"

KEY_FIELDS: tuple[pa.Field, ...] = (
    pa.field("track_path", pa.string(), nullable=False),
    pa.field("track_id", pa.string()),
    pa.field("variant", pa.string(), nullable=False),
    pa.field("variant_index", pa.int64()),
    pa.field("seed", pa.int64()),
    pa.field("preset", pa.string()),
    pa.field("intensity", pa.string()),
    pa.field("target_lufs", pa.float64()),
    pa.field("ceiling_dbtp", pa.float64()),
    pa.field("audio_path", pa.string()),
    pa.field("error", pa.string()),
    pa.field("params", pa.string(), metadata={b"format": b"JSON"}),
    pa.field("eq_gain_db", pa.list_(pa.float64())),
    pa.field("target_met", pa.bool_()),
    pa.field("ceiling_met", pa.bool_()),
    pa.field("out_true_peak_dbtp_16x", pa.float64(), metadata={b"unit": b"dBTP"}),
)


def training_schema(meta: Mapping[str, Any] | None = None) -> pa.Schema:
    """The explicit schema; ``meta`` (JSON-able) goes under ``acetate.training``."""
    fields = list(KEY_FIELDS)
    for prefix in ("in_", "out_"):
        fields += [pa.field(prefix + n, pa.float64(), metadata={b"unit": FEATURE_UNITS[n].encode()}) for n in FEATURE_NAMES]
    md = {b"acetate.schema": SCHEMA_NAME.encode(), b"acetate.schema_version": SCHEMA_VERSION.encode()}
    if meta is not None:
        md[b"acetate.training"] = json.dumps(dict(meta), sort_keys=True, allow_nan=False).encode()
    return pa.schema(fields, metadata=md)


TRAINING_SCHEMA: pa.Schema = training_schema()


def training_table(rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any] | None = None) -> pa.Table:
    """Validate rows and build a table with :func:`training_schema`.

    ``params`` may be a dict (serialised to JSON) or JSON text; missing
    columns are null.

    Raises
    ------
    ValueError
        On an unknown column (named) or a row without ``track_path``/``variant``.
    """
    schema = training_schema(meta)
    names = set(schema.names)
    cols: dict[str, list[Any]] = {n: [] for n in schema.names}
    for i, r in enumerate(rows):
        unknown = [k for k in r if k not in names]
        if unknown:
            raise ValueError(f"row {i}: unknown training column {unknown[0]!r}")
        for k in ("track_path", "variant"):
            if not r.get(k):
                raise ValueError(f"row {i}: {k!r} is required")
        for n in schema.names:
            v = r.get(n)
            if n == "params" and v is not None and not isinstance(v, str):
                v = json.dumps(v, sort_keys=True, default=float)
            cols[n].append(v)
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in schema], schema=schema)
