"""The runs table: one row per ``acetate run`` (written at its end, also when interrupted).

Columns
-------
``run_id``, ``job`` (job name), ``job_path``, ``mode``, ``config_hash`` (hash
of the resolved job settings), ``code_version`` (package version, plus the git
commit when known), ``cluster`` (kind and scheduler address), ``status``
(``finished`` | ``interrupted`` | ``error``), ``started`` / ``ended`` (UTC),
counts ``tracks`` (in the catalogue), ``done`` (processed this run),
``skipped`` (already done with the same key), ``failed``, ``audio_seconds``
(programme processed this run), ``wall_seconds``, ``x_realtime``
(audio_seconds / wall_seconds), ``workers``, ``threads``.

Metadata: ``acetate.schema`` = ``runs``, ``acetate.schema_version`` =
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from acetate.schemas._rows import checked_rows

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "RUNS_SCHEMA", "runs_table"]

SCHEMA_NAME = "runs"
SCHEMA_VERSION = "1.0"

RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job", pa.string(), nullable=False),
        pa.field("job_path", pa.string()),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("cluster", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("started", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("ended", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("tracks", pa.int64(), nullable=False),
        pa.field("done", pa.int64(), nullable=False),
        pa.field("skipped", pa.int64(), nullable=False),
        pa.field("failed", pa.int64(), nullable=False),
        pa.field("audio_seconds", pa.float64(), metadata={b"unit": b"s"}),
        pa.field("wall_seconds", pa.float64(), metadata={b"unit": b"s"}),
        pa.field("x_realtime", pa.float64(), metadata={b"unit": b"ratio"}),
        pa.field("workers", pa.int64()),
        pa.field("threads", pa.int64()),
    ],
    metadata={b"acetate.schema": SCHEMA_NAME.encode(), b"acetate.schema_version": SCHEMA_VERSION.encode()},
)


def runs_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Build a table with :data:`RUNS_SCHEMA`; an unknown column is an error naming it."""
    return pa.Table.from_pylist(checked_rows(RUNS_SCHEMA, rows, "runs"), schema=RUNS_SCHEMA)
