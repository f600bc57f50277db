"""The preset bank: one row per preset, with the data selection needs, in Parquet or JSON.

A bank is plain data (numbers, strings, lists of numbers): loading one runs no
code and unpickles nothing, so a bank from elsewhere is safe to load. The same
logical table is stored either as a Parquet file (:data:`BANK_SCHEMA`, the
bank-level information in the schema metadata) or as a JSON document (the
same columns as a list of records, for banks meant to be read and edited by
people, like the shipped default bank).

Columns (one row per preset)
----------------------------
Preset fields (see :class:`acetate.pipeline.chain.presets.Preset`):
``name`` (string, not null, unique), ``description``, ``source`` (where the
target curve comes from), ``target_mid_db`` / ``target_side_db`` (list of 31
float64: band energy on the 1/3-octave grid 20 Hz .. 20 kHz, dB re. the
overall level), ``eq_max_db``, ``eq_phase``, ``crossovers_hz`` (list),
``threshold_rel_db``, ``ratio``, ``knee_db``, ``attack_s``, ``release_s``,
``width`` (lists, one value per dynamics band), ``target_lufs``,
``ceiling_dbtp``, ``limiter_lookahead_s``, ``limiter_release_s``,
``max_limiting_db``; since 1.1 (optional, so 1.0 files read as before):
``eq_mode`` (``"target"``: EQ toward ``target_mid_db``; ``"relative"``: apply
``correction_mid_db``, a learned preset's move), ``correction_mid_db`` (list of 31
float64, dB; empty for target presets) and ``content`` (``"music"`` or ``"speech"``).

Selection data:
``prototype`` (list of float64, the selection features in the order of the
bank metadata's ``selection.features``: the typical *mix* this preset suits)
and ``members`` (list of lists of float64: reference rows labelled with this
preset -- the training mixes of a learned bank, a documented synthetic
reference population for the default bank; the scaler of the selection
pipeline is fitted on all members at load time).

Learned transform (null in hand-made banks):
``eq_mid_db`` / ``eq_side_db`` (list of 31 float64, the mean smoothed
difference master - mix of the long-term spectra), ``n_pairs`` (int64),
``loudness_change_db``, ``crest_change_db``, ``lra_change_lu``,
``width_change_db`` (float64, medians over the preset's pairs).

Metadata
--------
``acetate.schema`` = ``bank``, ``acetate.schema_version`` =
:data:`SCHEMA_VERSION`, ``acetate.bank`` = a JSON object: ``name``,
``description``, ``kind`` (``"default"`` or ``"learned"``),
``band_centres_hz``, ``selection`` (``features``, ``weights``, ``clip``,
``method``; optional ``k``, ``blend_k``, ``temperature``, ``min_confidence``:
see :meth:`acetate.pipeline.chain.presets.Bank.select`) and anything else the bank's author documents (``sources``,
``report`` of a learned bank...).

Examples
--------
>>> BANK_SCHEMA.metadata[b"acetate.schema"]
b'bank'
"""

from __future__ import annotations

import json
import math
import os
import reprlib
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "PRESET_COLUMNS",
    "LEARNED_COLUMNS",
    "BANK_SCHEMA",
    "bank_schema",
    "bank_table",
    "write_bank_file",
    "read_bank_file",
]

SCHEMA_NAME = "bank"
SCHEMA_VERSION = "1.1"

_F64 = pa.float64()
_LIST = pa.list_(pa.float64())

#: Preset columns and their Arrow types (exactly the fields of ``Preset``).
PRESET_COLUMNS: dict[str, pa.DataType] = {
    "name": pa.string(),
    "description": pa.string(),
    "target_mid_db": _LIST,
    "target_side_db": _LIST,
    "eq_max_db": _F64,
    "eq_phase": pa.string(),
    "crossovers_hz": _LIST,
    "threshold_rel_db": _LIST,
    "ratio": _LIST,
    "knee_db": _LIST,
    "attack_s": _LIST,
    "release_s": _LIST,
    "width": _LIST,
    "target_lufs": _F64,
    "ceiling_dbtp": _F64,
    "limiter_lookahead_s": _F64,
    "limiter_release_s": _F64,
    "max_limiting_db": _F64,
    "source": pa.string(),
    "eq_mode": pa.string(),
    "correction_mid_db": _LIST,
    "content": pa.string(),
}
#: Preset columns added in 1.1: optional (a 1.0 file lacks them; the preset's defaults apply).
OPTIONAL_PRESET_COLUMNS = ("eq_mode", "correction_mid_db", "content")
#: The values the string columns may take (null: the default).
_CHOICES = {"eq_mode": ("target", "relative"), "content": ("music", "speech")}
#: Selection columns.
SELECTION_COLUMNS: dict[str, pa.DataType] = {"prototype": _LIST, "members": pa.list_(_LIST)}
#: Learned-transform columns (nullable; null in hand-made banks).
LEARNED_COLUMNS: dict[str, pa.DataType] = {
    "eq_mid_db": _LIST,
    "eq_side_db": _LIST,
    "n_pairs": pa.int64(),
    "loudness_change_db": _F64,
    "crest_change_db": _F64,
    "lra_change_lu": _F64,
    "width_change_db": _F64,
}
_REQUIRED = tuple(k for k in PRESET_COLUMNS if k not in OPTIONAL_PRESET_COLUMNS) + tuple(SELECTION_COLUMNS)


def bank_schema(meta: Mapping[str, Any] | None = None) -> pa.Schema:
    """The explicit Arrow schema of a bank; ``meta`` goes (as JSON) under ``acetate.bank``."""
    fields = [pa.field(k, t, nullable=(k != "name")) for k, t in PRESET_COLUMNS.items()]
    fields += [pa.field(k, t, nullable=False) for k, t in SELECTION_COLUMNS.items()]
    fields += [pa.field(k, t, nullable=True) for k, t in LEARNED_COLUMNS.items()]
    md = {b"acetate.schema": SCHEMA_NAME.encode(), b"acetate.schema_version": SCHEMA_VERSION.encode()}
    if meta is not None:
        md[b"acetate.bank"] = json.dumps(dict(meta), allow_nan=False, sort_keys=True).encode()
    return pa.schema(fields, metadata=md)


BANK_SCHEMA: pa.Schema = bank_schema()


def _short(v: Any) -> str:
    """``repr(v)``, bounded (a hostile file's value may be huge or deeply nested)."""
    return _REPR.repr(v)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def _float(a: Any) -> float:
    try:
        return float(a)
    except OverflowError:  # an integer of hundreds of digits
        return math.inf if a > 0 else -math.inf


def _number(name: str, v: Any, row: int, *, nullable: bool = True) -> float | None:
    if v is None:
        if nullable:
            return None
        raise ValueError(f"preset row {row}: {name} is required")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"preset row {row}: {name} must be a number, got {_short(v)}")
    return _float(v)


def _numbers(name: str, v: Any, row: int, depth: int = 1) -> Any:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"preset row {row}: {name} must be a list, got {type(v).__name__}")
    if depth == 2:
        rows = [_numbers(name, r, row) for r in v]
        if any(r is None for r in rows):
            raise ValueError(f"preset row {row}: {name} must be a list of lists of numbers, got a null row")
        return rows
    out = []
    for a in v:
        if a is None:
            out.append(math.nan)  # JSON has no NaN: missing values are stored as null
        elif isinstance(a, bool) or not isinstance(a, (int, float)):
            raise ValueError(f"preset row {row}: {name} must hold numbers, got {_short(a)}")
        else:
            out.append(_float(a))
    return out


#: Number of 1/3-octave bands of the target and learned curves (20 Hz .. 20 kHz).
N_BANDS = 31

#: What a usable preset's numbers may be: column -> (low, high, low included); every value
#: finite (lists: every element) unless the column is in :data:`_MISSING_OK`. Beyond these a
#: preset would render NaN, unstable filters, windows of hours, or could not render at all.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "target_mid_db": (-200.0, 200.0, True),
    "target_side_db": (-200.0, 200.0, True),
    "eq_max_db": (0.0, 48.0, True),
    "crossovers_hz": (0.0, 96000.0, False),
    "threshold_rel_db": (-100.0, 100.0, True),
    "ratio": (1.0, 1000.0, True),
    "knee_db": (0.0, 100.0, True),
    "attack_s": (0.0, 1.0, True),
    "release_s": (0.0, 10.0, True),
    "width": (0.0, 4.0, True),
    "target_lufs": (-60.0, 0.0, True),  # pipeline.levels.HARD_TARGET_LUFS
    "ceiling_dbtp": (-30.0, 0.0, True),  # HARD_CEILING_DBTP's low end; a preset's ceiling is <= 0 dBTP
    "limiter_lookahead_s": (0.0, 0.1, False),
    "limiter_release_s": (0.0, 10.0, False),
    "max_limiting_db": (0.0, 100.0, True),
    "correction_mid_db": (-48.0, 48.0, True),
    "prototype": (-1e6, 1e6, True),
    "members": (-1e6, 1e6, True),
    "eq_mid_db": (-200.0, 200.0, True),
    "eq_side_db": (-200.0, 200.0, True),
    "loudness_change_db": (-200.0, 200.0, True),
    "crest_change_db": (-200.0, 200.0, True),
    "lra_change_lu": (-200.0, 200.0, True),
    "width_change_db": (-200.0, 200.0, True),
}
#: Columns whose lists may hold missing values (NaN / JSON null): selection features a
#: reference row lacks (bands above its Nyquist), learned bands with no data.
_MISSING_OK = frozenset({"prototype", "members", "eq_mid_db", "eq_side_db"})
#: Most crossover edges (bands - 1) of a preset.
MAX_CROSSOVERS = 15


def _check_values(name: str, k: str, v: Any) -> None:
    """Raise ValueError naming preset ``name``'s column ``k`` if a value is out of :data:`_RANGES`."""
    rng = _RANGES.get(k)
    if rng is None or v is None:
        return
    lo, hi, lo_in = rng
    flat = [a for r in v for a in r] if k == "members" else (v if isinstance(v, list) else [v])
    for a in flat:
        if a != a and k in _MISSING_OK:
            continue
        if not (math.isfinite(a) and (lo <= a if lo_in else lo < a) and a <= hi):
            where = f"[{lo}, {hi}]" if lo_in else f"({lo}, {hi}]"
            raise ValueError(f"preset {name!r}: {k} must hold finite values in {where}, got {_short(a)}")
    if k in ("target_mid_db", "target_side_db", "eq_mid_db", "eq_side_db") and len(v) != N_BANDS:
        raise ValueError(f"preset {name!r}: {k} needs {N_BANDS} bands, got {len(v)}")
    if k == "correction_mid_db" and len(v) not in (0, N_BANDS):
        raise ValueError(f"preset {name!r}: {k} needs {N_BANDS} bands, got {len(v)}")
    if k == "crossovers_hz":
        if len(v) > MAX_CROSSOVERS:
            raise ValueError(f"preset {name!r}: crossovers_hz has {len(v)} edges, at most {MAX_CROSSOVERS}")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"preset {name!r}: crossovers_hz must be strictly increasing, got {_short(v)}")
    if k == "prototype" and v and not any(a == a for a in v):
        raise ValueError(f"preset {name!r}: prototype has no values (all missing)")


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(_float(v))


def _check_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the bank metadata: names, ``selection`` (features, weights, clip, method, k)."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"bank metadata must be a JSON object, got {type(meta).__name__}")
    for k in ("name", "description", "kind"):
        if meta.get(k) is not None and not isinstance(meta[k], str):
            raise ValueError(f"bank metadata: {k} must be a string, got {_short(meta[k])}")
    sel = meta.get("selection")
    if not isinstance(sel, Mapping) or not isinstance(sel.get("features"), list) or not sel["features"]:
        raise ValueError("bank metadata needs selection.features (a non-empty list of fingerprint feature names)")
    feats = sel["features"]
    if not all(isinstance(f, str) and f for f in feats):
        bad = next(f for f in feats if not (isinstance(f, str) and f))
        raise ValueError(f"bank metadata: selection.features must be feature names (strings), got {_short(bad)}")
    if len(set(feats)) != len(feats):
        dup = next(f for i, f in enumerate(feats) if f in feats[:i])
        raise ValueError(f"bank metadata: selection.features names {dup!r} twice")
    w = sel.get("weights")
    if w is not None and not (isinstance(w, list) and len(w) == len(feats) and all(_finite_number(a) and a >= 0 for a in w)):
        raise ValueError(f"bank metadata: selection.weights must be {len(feats)} finite non-negative numbers, got {_short(w)}")
    clip = sel.get("clip")
    if clip is not None:
        if not isinstance(clip, Mapping):
            raise ValueError(f"bank metadata: selection.clip must map a feature (or 'ltas') to [low, high], got {_short(clip)}")
        for name, lo_hi in clip.items():
            ok = isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2 and all(_finite_number(a) for a in lo_hi)
            if not ok or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"bank metadata: selection.clip.{name} must be [low, high] (finite, low <= high), got {_short(lo_hi)}")
    method = sel.get("method")
    if method is not None and not isinstance(method, str):
        raise ValueError(f"bank metadata: selection.method must be a string, got {_short(method)}")
    k = sel.get("k")
    if "k" in sel and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100_000):
        raise ValueError(f"bank metadata: selection.k must be a whole number in [1, 100000], got {_short(k)}")
    bk = sel.get("blend_k")
    if "blend_k" in sel and (isinstance(bk, bool) or not isinstance(bk, int) or not 1 <= bk <= 1000):
        raise ValueError(f"bank metadata: selection.blend_k must be a whole number in [1, 1000], got {_short(bk)}")
    t = sel.get("temperature")
    if "temperature" in sel and not (_finite_number(t) and t > 0):
        raise ValueError(f"bank metadata: selection.temperature must be a positive number, got {_short(t)}")
    mc = sel.get("min_confidence")
    if "min_confidence" in sel and not (_finite_number(mc) and 0 <= mc <= 1):
        raise ValueError(f"bank metadata: selection.min_confidence must be within [0, 1], got {_short(mc)}")
    return dict(meta)


def bank_table(rows: Iterable[Mapping[str, Any]], meta: Mapping[str, Any]) -> pa.Table:
    """Validate bank rows and build a table with the bank schema.

    Parameters
    ----------
    rows : iterable of mapping
        One per preset, keys the columns above (learned columns optional).
    meta : mapping
        Bank metadata (JSON-able; needs ``selection.features``).

    Raises
    ------
    ValueError
        On an unknown or missing column (named), a wrongly typed value, a
        value no render can use (NaN, infinite, or outside :data:`_RANGES`: a
        negative attack, a ratio below 1, crossovers not increasing...), a
        target or learned curve not of :data:`N_BANDS` bands, metadata of the
        wrong shape (:func:`_check_meta`), a duplicate preset name, or a
        prototype/member row whose length is not the number of selection features.
    """
    meta = _check_meta(meta)
    n_feat = len(meta["selection"]["features"])
    schema = bank_schema(meta)
    cols: dict[str, list[Any]] = {f.name: [] for f in schema}
    seen: set[str] = set()
    for i, row in enumerate(rows):
        unknown = [k for k in row if k not in cols]
        if unknown:
            raise ValueError(f"preset row {i}: unknown bank column {unknown[0]!r}")
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            raise ValueError(f"preset row {i}: missing bank column {missing[0]!r}")
        name = row["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"preset row {i}: name must be a non-empty string, got {name!r}")
        if name in seen:
            raise ValueError(f"duplicate preset name {name!r}")
        seen.add(name)
        for k, t in schema_types(schema).items():
            v = row.get(k)
            if t == pa.string():
                if v is not None and not isinstance(v, str):
                    raise ValueError(f"preset {name!r}: {k} must be a string, got {v!r}")
                if v is not None and k in _CHOICES and v not in _CHOICES[k]:
                    raise ValueError(f"preset {name!r}: {k} must be one of {_CHOICES[k]}, got {_short(v)}")
            elif t == _LIST:
                v = _numbers(k, v, i)
            elif t == pa.list_(_LIST):
                v = _numbers(k, v, i, depth=2)
            elif t == pa.int64():
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v < 2**63) or v != int(v)):
                    raise ValueError(f"preset {name!r}: {k} must be a whole number >= 0, got {_short(v)}")
                v = None if v is None else int(v)
            else:
                v = _number(k, v, i)
            if v is None and k in SELECTION_COLUMNS:
                raise ValueError(f"preset {name!r}: {k} is required (a list), got null")
            _check_values(name, k, v)
            cols[k].append(v)
        if len(cols["prototype"][-1]) != n_feat:
            raise ValueError(f"preset {name!r}: prototype has {len(cols['prototype'][-1])} values, selection has {n_feat} features")
        for r in cols["members"][-1]:
            if len(r) != n_feat:
                raise ValueError(f"preset {name!r}: a member row has {len(r)} values, selection has {n_feat} features")
    if not seen:
        raise ValueError("a bank needs at least one preset")
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in schema], schema=schema)


def schema_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """Column name -> Arrow type."""
    return {f.name: f.type for f in schema}


def _json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [_json_safe(a) for a in v]
    return v


def write_bank_file(table: pa.Table, path: str | os.PathLike) -> str:
    """Write a bank table to ``path``: JSON if it ends in ``.json``, else Parquet. Atomic (temp + rename)."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.part")
    try:
        if path.lower().endswith(".json"):
            md = table.schema.metadata
            doc = {
                "acetate.schema": SCHEMA_NAME,
                "acetate.schema_version": SCHEMA_VERSION,
                "bank": json.loads(md[b"acetate.bank"]),
                "presets": [{k: _json_safe(v) for k, v in r.items()} for r in table.to_pylist()],
            }
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=1, allow_nan=False)
                fh.write("\n")
        else:
            pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _check_version(name: Any, version: Any, path: str) -> None:
    if name != SCHEMA_NAME:
        raise ValueError(f"{path}: not a preset bank (acetate.schema is {name!r}, expected {SCHEMA_NAME!r})")
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ValueError(
            f"{path}: bank schema version {version!r} is not readable by this version (reads {SCHEMA_VERSION.split('.')[0]}.x)"
        )


def read_bank_file(path: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read and validate a bank file (Parquet or JSON by extension).

    Returns
    -------
    rows : list of dict
        One per preset (all columns; JSON nulls in number lists become NaN).
    meta : dict
        The bank metadata.

    Raises
    ------
    ValueError
        If the file is not a bank, has an unreadable major version, or fails
        :func:`bank_table`'s validation.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such bank file: {path}")
    if path.lower().endswith(".json"):
        with open(path, "rb") as fh:
            data = fh.read()
        try:  # bytes: UTF-8 (a BOM allowed), -16 or -32, as JSON allows
            doc = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError(f"{path}: not valid JSON: nested too deeply") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a JSON bank must be an object")
        _check_version(doc.get("acetate.schema"), doc.get("acetate.schema_version"), path)
        rows, meta = doc.get("presets"), doc.get("bank")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: 'presets' must be a list of objects")
    else:
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError on garbage
            raise ValueError(f"{path}: not a readable Parquet bank: {exc}") from None
        md = table.schema.metadata or {}
        _check_version(
            md.get(b"acetate.schema", b"").decode(errors="replace"),
            md.get(b"acetate.schema_version", b"").decode(errors="replace"),
            path,
        )
        try:
            meta = json.loads(md.get(b"acetate.bank", b"null"))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
            raise ValueError(f"{path}: acetate.bank metadata is not valid JSON: {_clean(exc)}") from None
        try:
            rows = table.to_pylist()
        except (ValueError, ArithmeticError) as exc:  # values Python cannot hold (dates out of range, overflows)
            raise ValueError(f"{path}: unreadable values in the Parquet bank: {_clean(exc)}") from None
    if meta is None:
        raise ValueError(f"{path}: bank metadata (acetate.bank) is missing")
    try:
        table = bank_table(rows, meta)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return table.to_pylist(), dict(meta)


def _clean(exc: BaseException) -> str:
    return str(exc).replace("\n", " ").strip()[:300] or type(exc).__name__
