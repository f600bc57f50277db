"""The failures table: one row per failed attempt of a track (or of the job around it).

Columns
-------
``run_id``, ``track_id``, ``path``, ``stage`` (where it failed: ``input`` --
not a regular file (a FIFO, device, socket, folder, dangling link or link
loop), refused before it is opened -- ``hash``, ``decode``, ``analyse``, ``select``, ``render``, ``verify``, ``write``,
``worker`` -- the worker process died or the task was lost -- or ``job``),
``error_type`` (exception class name), ``message`` (one line a label's
engineer can act on), ``attempt`` (1 for the first try of this track's
current key, counting across runs), ``key`` (content hash + settings hash of
the attempt; null when the file could not be hashed), ``time`` (UTC).

The table is a log: a track that failed and later succeeded keeps its old
rows; the ``runs`` table and the ledger say what is done now.

Metadata: ``acetate.schema`` = ``failures``, ``acetate.schema_version`` =
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from acetate.schemas._rows import checked_rows

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "FAILURES_SCHEMA", "STAGES", "failures_table"]

SCHEMA_NAME = "failures"
SCHEMA_VERSION = "1.0"

STAGES = ("input", "hash", "decode", "analyse", "select", "render", "verify", "write", "worker", "job")

FAILURES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False),
    ],
    metadata={b"acetate.schema": SCHEMA_NAME.encode(), b"acetate.schema_version": SCHEMA_VERSION.encode()},
)


def failures_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Build a table with :data:`FAILURES_SCHEMA`; unknown columns or stages are an error naming them."""
    return pa.Table.from_pylist(checked_rows(FAILURES_SCHEMA, rows, "failures", {"stage": STAGES}), schema=FAILURES_SCHEMA)
