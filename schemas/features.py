"""The features table: one row per track, one column per fingerprint feature.

This module is the single source of truth for the feature names, their order
and their units: :data:`FEATURE_NAMES` is built here from the band grids of
:mod:`acetate.kernels.spectrum` (the only import from outside ``schemas``: a
dependency-free constants module), and :mod:`acetate.pipeline.chain.analyse`
computes exactly these names.

Columns
-------
``path`` (string, not null), ``track_id`` (string, nullable), ``error``
(string, nullable: set when the track could not be analysed, features then
null), then one column per name in :data:`FEATURE_NAMES`: float64, except
``sample_rate`` and ``channels`` (int64).  Null means "not measured" (error
row); NaN means "measured but undefined" (e.g. a band above Nyquist, the
correlation of a silent band); see :data:`FEATURE_UNITS` for each unit.

Metadata: ``acetate.schema`` = ``features``, ``acetate.schema_version`` =
:data:`SCHEMA_VERSION`; each feature field carries ``unit``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pyarrow as pa

from acetate.kernels.spectrum import band_labels

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_NAME",
    "THIRD_OCTAVE_LABELS",
    "OCTAVE_LABELS",
    "FEATURE_NAMES",
    "FEATURE_UNITS",
    "INT_FEATURES",
    "KEY_COLUMNS",
    "FEATURES_SCHEMA",
    "features_schema",
    "features_table",
]

SCHEMA_VERSION = "1.0"
SCHEMA_NAME = "features"

#: Labels of the 1/3-octave bands (LTAS) and octave bands (dynamics, stereo): "20", "31p5", "1000" ...
THIRD_OCTAVE_LABELS: tuple[str, ...] = tuple(band_labels(3))
OCTAVE_LABELS: tuple[str, ...] = tuple(band_labels(1))


def _build() -> dict[str, str]:
    units: dict[str, str] = {
        "duration_s": "s",
        "sample_rate": "Hz",
        "channels": "count",
        "integrated_lufs": "LUFS",
        "momentary_max_lufs": "LUFS",
        "short_term_max_lufs": "LUFS",
        "loudness_range_lu": "LU",
        "true_peak_dbtp": "dBTP",
        "sample_peak_dbfs": "dBFS",
        "plr_db": "dB",
        "crest_factor_db": "dB",
        "spectral_centroid_hz": "Hz",
        "spectral_rolloff_hz": "Hz",
        "spectral_flatness": "ratio 0..1",
        "spectral_tilt_db_per_oct": "dB/octave",
    }
    for lab in THIRD_OCTAVE_LABELS:
        units[f"ltas_mid_{lab}hz_db"] = "dB re overall mean-square"
    for lab in THIRD_OCTAVE_LABELS:
        units[f"ltas_side_{lab}hz_db"] = "dB re overall mean-square"
    for lab in OCTAVE_LABELS:
        units[f"dynamics_{lab}hz_db"] = "dB (P95-P10)"
    units["correlation_overall"] = "-1..1"
    for lab in OCTAVE_LABELS:
        units[f"correlation_{lab}hz"] = "-1..1"
    units["width_overall_db"] = "dB (side/mid energy)"
    for lab in OCTAVE_LABELS:
        units[f"width_{lab}hz_db"] = "dB (side/mid energy)"
    units.update(
        {
            "dc_offset_left": "full scale (linear, signed)",
            "dc_offset_right": "full scale (linear, signed)",
            "clip_run_count": "count",
            "clip_run_samples": "count",
            "leading_silence_s": "s",
            "trailing_silence_s": "s",
        }
    )
    return units


#: Unit of each feature, in :data:`FEATURE_NAMES` order.
FEATURE_UNITS: dict[str, str] = _build()
#: Ordered feature names: the fingerprint's keys and the feature vector's order.
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_UNITS)
#: Features stored as int64 columns (float in the fingerprint dict and vector).
INT_FEATURES: frozenset[str] = frozenset({"sample_rate", "channels"})
#: Non-feature columns, first in the table.
KEY_COLUMNS: tuple[str, ...] = ("path", "track_id", "error")


def features_schema() -> pa.Schema:
    """The explicit Arrow schema of the features table (see module docstring)."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=True),
        pa.field("error", pa.string(), nullable=True),
    ]
    for name in FEATURE_NAMES:
        typ = pa.int64() if name in INT_FEATURES else pa.float64()
        fields.append(pa.field(name, typ, nullable=True, metadata={b"unit": FEATURE_UNITS[name].encode()}))
    return pa.schema(
        fields,
        metadata={b"acetate.schema": SCHEMA_NAME.encode(), b"acetate.schema_version": SCHEMA_VERSION.encode()},
    )


FEATURES_SCHEMA: pa.Schema = features_schema()


def _as_int(name: str, value: Any, row: int) -> int | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {row}: {name} must be a whole number, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"row {row}: {name} must be a whole number, got {value!r}")
    return int(f)


def _as_float(name: str, value: Any, row: int) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {row}: {name} must be a number, got {value!r}") from None


def _as_str(name: str, value: Any, row: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"row {row}: {name} must be a string, got {value!r}")
    return value


def features_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Validate feature rows and build a table with :data:`FEATURES_SCHEMA`.

    Parameters
    ----------
    rows : iterable of dict
        Each with ``path`` (required), optionally ``track_id`` and ``error``,
        and any of :data:`FEATURE_NAMES` (as from
        :func:`acetate.pipeline.chain.analyse.fingerprint`).  Missing keys become
        null; NaN stays NaN.

    Raises
    ------
    ValueError
        On an unknown key (named), a missing or null ``path``, a non-numeric
        feature, or a non-integral ``sample_rate`` / ``channels``.
    """
    known = set(KEY_COLUMNS) | set(FEATURE_NAMES)
    columns: dict[str, list[Any]] = {name: [] for name in FEATURES_SCHEMA.names}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {i}: expected a dict, got {type(row).__name__}")
        unknown = [k for k in row if k not in known]
        if unknown:
            raise ValueError(
                f"row {i}: unknown feature column {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )
        path = _as_str("path", row.get("path"), i)
        if path is None:
            raise ValueError(f"row {i}: 'path' is required")
        columns["path"].append(path)
        columns["track_id"].append(_as_str("track_id", row.get("track_id"), i))
        columns["error"].append(_as_str("error", row.get("error"), i))
        for name in FEATURE_NAMES:
            conv = _as_int if name in INT_FEATURES else _as_float
            columns[name].append(conv(name, row.get(name), i))
    arrays = [pa.array(columns[f.name], type=f.type, from_pandas=False) for f in FEATURES_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=FEATURES_SCHEMA)
