"""Dataset name -> Arrow schema and version: the one place readers and writers look up a table.

The datasets of a job's output root (``OUT/<name>/``) are ``features``,
``presets``, ``loudness``, ``failures`` and ``runs``.  ``features`` is the
fingerprint table of :mod:`acetate.schemas.features` with three columns in
front that say which fingerprint a row is: ``run_id``, ``stage``
(``input`` | ``output``) and ``target`` (the delivery target
of an output row; null otherwise).

Every schema carries ``acetate.schema`` and ``acetate.schema_version`` in its
metadata; :func:`check` compares a table read back against the registry.
"""

from __future__ import annotations

import pyarrow as pa

from acetate.schemas import failures, features, loudness, presets, runs

__all__ = ["DATASETS", "FEATURES_DATASET_SCHEMA", "FEATURE_STAGES", "schema", "version", "check", "is_older", "features_dataset_table"]

FEATURE_STAGES = ("input", "output")


def _features_dataset_schema() -> pa.Schema:
    base = features.FEATURES_SCHEMA
    front = [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("target", pa.string()),
    ]
    return pa.schema(front + list(base), metadata=base.metadata)


#: The features *dataset*: run_id, stage, target + the features table's columns.
FEATURES_DATASET_SCHEMA: pa.Schema = _features_dataset_schema()

#: Dataset name -> schema.
DATASETS: dict[str, pa.Schema] = {
    "features": FEATURES_DATASET_SCHEMA,
    "presets": presets.PRESETS_SCHEMA,
    "loudness": loudness.LOUDNESS_SCHEMA,
    "failures": failures.FAILURES_SCHEMA,
    "runs": runs.RUNS_SCHEMA,
}


def schema(name: str) -> pa.Schema:
    """The schema of dataset ``name``; a ``KeyError`` names an unknown dataset."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None


def version(name: str) -> str:
    """The schema version of dataset ``name`` (from its metadata)."""
    return schema(name).metadata[b"acetate.schema_version"].decode()


def is_older(name: str, got: pa.Schema) -> bool:
    """True when ``got`` is an earlier minor version of dataset ``name``'s schema that
    :func:`check` accepts with ``older=True`` (the same major version, a lower minor one)."""
    want = schema(name)
    v_got = (got.metadata or {}).get(b"acetate.schema_version", b"").decode()
    v_want = want.metadata[b"acetate.schema_version"].decode()
    try:
        (maj_g, min_g), (maj_w, min_w) = (tuple(int(a) for a in v.split(".")) for v in (v_got, v_want))
    except ValueError:
        return False
    return maj_g == maj_w and min_g < min_w


def check(name: str, got: pa.Schema, *, older: bool = False) -> None:
    """Raise ``ValueError`` naming the first difference between ``got`` and the registry's schema of ``name``.

    With ``older``, an earlier minor version (:func:`is_older`) passes when its columns are
    the current ones less some that were added later (nullable): a reader fills those with nulls.
    """
    want = schema(name)
    if older and is_older(name, got):
        types = {f.name: f for f in want}
        for f in got:
            if f.name not in types:
                raise ValueError(f"dataset {name!r}: column {f.name!r} is not in version {version(name)}")
            if not f.type.equals(types[f.name].type):
                raise ValueError(f"dataset {name!r}: column {f.name!r} is {f.type}, expected {types[f.name].type}")
        lacking = [f.name for f in want if f.name not in got.names and not f.nullable]
        if lacking:
            raise ValueError(f"dataset {name!r}: an older file lacks required column(s) {lacking}")
        return
    if got.names != want.names:
        missing = [n for n in want.names if n not in got.names]
        extra = [n for n in got.names if n not in want.names]
        raise ValueError(f"dataset {name!r}: columns differ (missing {missing}, unexpected {extra})")
    for f_want, f_got in zip(want, got):
        if not f_got.type.equals(f_want.type):
            raise ValueError(f"dataset {name!r}: column {f_want.name!r} is {f_got.type}, expected {f_want.type}")
    meta = got.metadata or {}
    for k in (b"acetate.schema", b"acetate.schema_version"):
        if meta.get(k) != want.metadata[k]:
            raise ValueError(f"dataset {name!r}: metadata {k.decode()} is {meta.get(k)!r}, expected {want.metadata[k]!r}")


def features_dataset_table(rows: list[dict], *, run_id: str) -> pa.Table:
    """Feature rows (each with ``stage`` and optional ``target``) as a table of :data:`FEATURES_DATASET_SCHEMA`.

    The fingerprint columns are validated by :func:`acetate.schemas.features.features_table`.
    """
    for i, r in enumerate(rows):
        if r.get("stage") not in FEATURE_STAGES:
            raise ValueError(f"features row {i}: stage must be one of {FEATURE_STAGES}, got {r.get('stage')!r}")
    core = features.features_table([{k: v for k, v in r.items() if k not in ("stage", "target")} for r in rows])
    front = [
        pa.array([run_id] * len(rows), pa.string()),
        pa.array([r["stage"] for r in rows], pa.string()),
        pa.array([r.get("target") for r in rows], pa.string()),
    ]
    return pa.Table.from_arrays(front + core.columns, schema=FEATURES_DATASET_SCHEMA)
