"""The loudness table: input and output loudness reports per track and per target.

One row per (track, stage, target) on input rows and per (track, target,
delivered file) on output rows: ``stage`` is ``input`` (the source file) or
``output`` (a delivered file of the master for that target, ``path`` naming it,
its figures as that file decodes: a WAV or FLAC holds the master's samples
exactly, an MP3 is decoded and measured); album rows
(``scope = "album"``, ``track_id`` null) carry the album's loudness computed
by gating the pooled blocks of all its tracks (BS.1770 album loudness).

Columns
-------
``run_id``, ``track_id`` (null on album rows), ``album``, ``scope``
(``track`` | ``album``), ``stage`` (``input`` | ``output``), ``target`` (name
of the delivery target), ``path`` (the file measured), the report's figures
(see :data:`acetate.pipeline.chain.meter.REPORT_KEYS`; null when undefined), then
the target: ``target_lufs``, ``target_true_peak_dbtp``, ``tolerance_lu``,
``delta_lu`` (integrated minus target), ``passed`` (integrated loudness
within the tolerance and true peak at or below the ceiling; on input rows it
says whether the source already complies; null when the loudness is
undefined, e.g. silence).

Metadata: ``acetate.schema`` = ``loudness``, ``acetate.schema_version`` =
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from acetate.schemas._rows import checked_rows

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "LOUDNESS_SCHEMA", "REPORT_FIELDS", "loudness_table"]

SCHEMA_NAME = "loudness"
SCHEMA_VERSION = "1.0"

#: Report figures, as :func:`acetate.pipeline.chain.meter.loudness_report` names them.
REPORT_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("integrated_lufs", pa.float64(), "LUFS"),
    ("loudness_range_lu", pa.float64(), "LU"),
    ("true_peak_dbtp", pa.float64(), "dBTP"),
    ("sample_peak_dbfs", pa.float64(), "dBFS"),
    ("momentary_max_lufs", pa.float64(), "LUFS"),
    ("short_term_max_lufs", pa.float64(), "LUFS"),
    ("duration_s", pa.float64(), "s"),
    ("sample_rate", pa.int64(), "Hz"),
    ("channels", pa.int64(), "count"),
)

LOUDNESS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string()),
        pa.field("album", pa.string()),
        pa.field("scope", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("target", pa.string()),
        pa.field("path", pa.string()),
        *[pa.field(n, t, metadata={b"unit": u.encode()}) for n, t, u in REPORT_FIELDS],
        pa.field("target_lufs", pa.float64(), metadata={b"unit": b"LUFS"}),
        pa.field("target_true_peak_dbtp", pa.float64(), metadata={b"unit": b"dBTP"}),
        pa.field("tolerance_lu", pa.float64(), metadata={b"unit": b"LU"}),
        pa.field("delta_lu", pa.float64(), metadata={b"unit": b"LU"}),
        pa.field("passed", pa.bool_()),
    ],
    metadata={b"acetate.schema": SCHEMA_NAME.encode(), b"acetate.schema_version": SCHEMA_VERSION.encode()},
)

_SCOPES = ("track", "album")
_STAGES = ("input", "output")


def loudness_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Build a table with :data:`LOUDNESS_SCHEMA` from row dicts.

    Raises
    ------
    ValueError
        On an unknown column (named), or a ``scope`` / ``stage`` outside the allowed values.
    """
    checked = checked_rows(LOUDNESS_SCHEMA, rows, "loudness", {"scope": _SCOPES, "stage": _STAGES})
    return pa.Table.from_pylist(checked, schema=LOUDNESS_SCHEMA)
