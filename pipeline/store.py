"""Parquet datasets and small JSON records under a job's output root, written atomically.

Layout of an output root ``OUT``::

    OUT/masters/<track_id>.<ext>          masters (written by render / audio.encode, atomic)
    OUT/<dataset>/<part>.parquet          one part file per track (or per run), see schemas.registry
    OUT/.acetate/ledger/<track_id>.json   per-track state: key, status, attempts (the resume ledger)
    OUT/.acetate/measure/<hash>.json      cached input measurements, by content hash

Every file is written under a temporary name that starts with ``.`` in the
same folder, then moved into place with :func:`os.replace`; readers skip
names starting with ``.`` or ``_``, so a crash never leaves a half-written
file that a later run or reader would take for done.  A track's part file has
the same name on every attempt, so redoing a track replaces its rows instead
of adding to them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from acetate.pipeline import files
from acetate.schemas import registry

__all__ = [
    "STATE_DIR",
    "safe_name",
    "dataset_dir",
    "write_json",
    "read_json",
    "write_part",
    "remove_part",
    "read_dataset",
    "list_parts",
]

#: Hidden folder of the ledger and caches inside an output root.
STATE_DIR = ".acetate"

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(track_id: str) -> str:
    """A file-name-safe form of ``track_id``, unique per id.

    Ids made of ``[A-Za-z0-9._-]`` (not starting with ``.``) are kept as they
    are; others have the offending characters replaced with ``_`` and a short
    hash of the original appended, so two ids never share a file.
    """
    if not isinstance(track_id, str) or not track_id:
        raise ValueError(f"track_id must be a non-empty string, got {track_id!r}")
    clean = _SAFE.sub("_", track_id)
    if clean == track_id and not track_id.startswith((".", "_")) and len(track_id) <= 180:
        return track_id
    digest = hashlib.blake2b(track_id.encode("utf-8"), digest_size=4).hexdigest()
    return f"{clean.lstrip('._')[:160] or 'track'}-{digest}"


def dataset_dir(out_root: str | os.PathLike, dataset: str) -> Path:
    """``OUT/<dataset>`` for a known dataset name."""
    registry.schema(dataset)  # validates the name
    return Path(out_root) / dataset


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`acetate.pipeline.files.atomic_write`)."""
    data = json.dumps(obj, indent=1, sort_keys=True, allow_nan=True).encode()

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return files.atomic_write(path, _w)


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON at ``path``, or ``None`` if it does not exist or cannot be parsed."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_part(out_root: str | os.PathLike, dataset: str, table: pa.Table, part: str) -> str:
    """Write ``table`` as ``OUT/<dataset>/<part>.parquet`` atomically.

    Parameters
    ----------
    out_root : path
        The job's output root.
    dataset : str
        A name from :data:`acetate.schemas.registry.DATASETS`.
    table : pyarrow.Table
        Rows with exactly the dataset's schema (checked; metadata included).
    part : str
        Part name (e.g. :func:`safe_name` of the track id); an existing part of
        that name is replaced.

    Returns
    -------
    str
        The part file's path.
    """
    registry.check(dataset, table.schema)
    if not part or part.startswith((".", "_")) or "/" in part or os.sep in part:
        raise ValueError(f"bad part name {part!r}: must be a plain file name not starting with '.' or '_'")
    path = dataset_dir(out_root, dataset) / f"{part}.parquet"

    return files.atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def remove_part(out_root: str | os.PathLike, dataset: str, part: str) -> bool:
    """Delete ``OUT/<dataset>/<part>.parquet`` if present (a redo that has no rows for it any more)."""
    path = dataset_dir(out_root, dataset) / f"{part}.parquet"
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def list_parts(out_root: str | os.PathLike, dataset: str) -> list[str]:
    """The finished part files of a dataset, sorted (temporary files left out)."""
    d = dataset_dir(out_root, dataset)
    if not d.is_dir():
        return []
    return sorted(str(p) for p in d.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))


def read_dataset(out_root: str | os.PathLike, dataset: str) -> pa.Table:
    """Load ``OUT/<dataset>`` as one table with the registry's schema and metadata.

    An absent or empty dataset gives an empty table with the schema.  Part
    files whose schema differs from the registry's (e.g. an older version)
    raise ``ValueError`` naming the file.
    """
    schema = registry.schema(dataset)
    parts = list_parts(out_root, dataset)
    if not parts:
        return schema.empty_table()
    for p in parts:
        try:
            registry.check(dataset, pq.read_schema(p))
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None
    table = pads.dataset(parts, schema=schema, format="parquet").to_table()
    return table.replace_schema_metadata(schema.metadata)
