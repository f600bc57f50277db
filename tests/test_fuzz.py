"""Hostile input, tested by machine: property-based tests of every reader at Acetate's edges.

Manifests (CSV, Parquet), job files (YAML and the mappings they load to), audio files
(real files written here with soundfile, then truncated, bit-flipped, their headers
rewritten to claim absurd lengths, rates and channel counts) and preset banks (JSON,
Parquet) are generated and mutated by Hypothesis. Each reader must give a usable result
or its own clear error -- :class:`jobs.JobError`, :class:`audio.AudioError`, a
``ValueError``/``OSError`` for banks -- naming the problem: never another exception type,
a hang, a crash, or memory out of proportion to the file.

The example budget is small in the normal run (``ACETATE_FUZZ_EXAMPLES``, default 30 per
test) and derandomized, so CI is deterministic; a long hunt is
``ACETATE_FUZZ_EXAMPLES=5000 python3 -m pytest -m fuzz tests/test_fuzz.py``. No example
database is written (``database=None``). Every example that could hang arms a watchdog
(:func:`faulthandler.dump_traceback_later`): a reader stuck in C ends the run with every
thread's traceback instead of never ending.
"""

from __future__ import annotations

import copy
import csv
import faulthandler
import io
import json
import math
import os
import struct
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from acetate.pipeline.catalogue import jobs
from acetate.pipeline.chain import presets
from acetate.pipeline.io import audio
from acetate.schemas import bank as bank_schema

pytestmark = pytest.mark.fuzz

#: Examples per property (``ACETATE_FUZZ_EXAMPLES``; CI keeps the default).
EXAMPLES = max(1, int(os.environ.get("ACETATE_FUZZ_EXAMPLES", "30")))
#: Seconds one example may take before the watchdog ends the process (a hang, not slowness).
HANG_S = 60.0


def fuzz(examples: int = EXAMPLES, deadline_s: float = 5.0, **kw):
    """Settings of every property here: deterministic, no database, a deadline far above
    the milliseconds an example takes (only pathological slowness trips it, not a loaded CI box)."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=timedelta(seconds=deadline_s), print_blob=False, **kw)


def arm() -> None:
    """(Re)arm the watchdog for one example: a hang prints all tracebacks and exits."""
    faulthandler.dump_traceback_later(HANG_S, exit=True)


@pytest.fixture(autouse=True)
def _disarm():
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder per module: examples overwrite their files (a function-scoped tmp_path
    would be shared by all examples of a test anyway)."""
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------------------------------
# Shared strategies
# ---------------------------------------------------------------------------------------

#: Text without lone surrogates (no file or YAML document can carry those).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)

#: Cells a spreadsheet or a script might produce, and some no one should.
TRICKY_CELLS = [
    "",
    " ",
    "  padded  ",
    "a,b",
    'quo"te',
    "line\nbreak",
    "cr\ronly",
    "tab\there",
    "\ufeffbom",
    "é",
    "日本語",
    "../../etc/passwd",
    "/abs/track.wav",
    "C:\\music\\a.wav",
    "x" * 300,
    "NaN",
    "null",
    "None",
    "0",
    "-1",
    "1e400",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\u202eevil",
    "\u2028",
    "*?[",
    "~/x.flac",
]
CELL = st.one_of(TEXT, st.sampled_from(TRICKY_CELLS))


def mutate_bytes(draw, data: bytes) -> bytes:
    """Byte-level damage: truncation, flipped bits, inserted NULs or junk, a cut BOM."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "nul", "junk", "bom"]))
        n = len(out)
        if op == "truncate":
            del out[draw(st.integers(0, n)) :]
        elif op == "flip" and n:
            out[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "nul":
            out.insert(draw(st.integers(0, n)), 0)
        elif op == "junk":
            pos = draw(st.integers(0, n))
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "bom":
            out[0:0] = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb"]))
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Manifests: CSV
# ---------------------------------------------------------------------------------------

HEADER_NAMES = list(jobs.MANIFEST_COLUMNS) + ["extra", "", " path", "TRACK_ID", "notes"]


@st.composite
def csv_manifests(draw):
    """(bytes, plan): a CSV manifest, and what it should read as when nothing in it is broken."""
    header = draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=9))
    if draw(st.booleans()):  # most manifests have the required columns: reach the row checks
        header = [c for c in header if c not in ("track_id", "path")]
        header[draw(st.integers(0, len(header))) : 0] = ["track_id"]
        header[draw(st.integers(0, len(header))) : 0] = ["path"]
    rows = draw(st.lists(st.lists(CELL, max_size=len(header) + 2), max_size=6))
    if rows and draw(st.booleans()):  # unique, usable ids and paths: the rows themselves read
        ti, pi = header.index("track_id") if "track_id" in header else None, header.index("path") if "path" in header else None
        for k, r in enumerate(rows):
            while len(r) < len(header):
                r.append(draw(CELL))
            if ti is not None:
                r[ti] = f"id-{k}-{draw(TEXT)}"
            if pi is not None:
                r[pi] = draw(st.sampled_from(["a.wav", "sub/b.flac", "/abs/c.wav", "d e.wav", "é.flac", "../up.wav"]))
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    text = buf.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "utf-16-le"]))
    data = text.encode(encoding, errors="replace")
    mutated = mutate_bytes(draw, data)
    return mutated, {
        "header": header,
        "rows": rows,
        "text": text,
        "clean": mutated == data and encoding in ("utf-8", "utf-8-sig", "utf-16"),
    }


def _expected_csv(plan: dict, base: Path) -> list[dict] | None:
    """The rows a clean manifest must read as (None: the file is meant to be refused or is ambiguous)."""
    header, text = plan["header"], plan["text"]
    if not plan["clean"] or "\x00" in text or any(header.count(c) > 1 for c in jobs.MANIFEST_COLUMNS):
        return None
    if "track_id" not in header or "path" not in header or any(len(c) > 100_000 for r in plan["rows"] for c in r):
        return None
    out, seen = [], set()
    for r in plan["rows"]:
        if not r:
            return None  # a blank line: skipped by CSV readers, which shifts nothing but is not this test's point
        cells = {h: (r[j] if j < len(r) else None) for j, h in enumerate(header) if h in jobs.MANIFEST_COLUMNS}
        row = {c: ((cells.get(c) or "").strip() or None) for c in jobs.MANIFEST_COLUMNS}
        if not row["track_id"] or not row["path"] or row["track_id"] in seen:
            return None
        seen.add(row["track_id"])
        if not os.path.isabs(row["path"]):
            row["path"] = str(base / row["path"])
        out.append(row)
    return out


def _read_back(work, name: str, data: bytes, expected) -> None:
    """Write ``data`` as manifest ``name``; it reads as ``expected`` (when that is known, None:
    a damaged file) or is refused with a JobError that names it -- never a clean file refused."""
    arm()
    path = work / name
    path.write_bytes(data)
    try:
        rows = jobs.read_manifest(path)
    except jobs.JobError as exc:
        assert str(exc).startswith("manifest ") and str(path) in str(exc), exc
        assert expected is None, f"a clean manifest was refused: {exc}"
        event("JobError")
        return
    _check_manifest_rows(rows, work)
    event("rows, checked exactly" if expected is not None else "rows")
    if expected is not None:
        assert rows == expected


def _check_manifest_rows(rows, base: Path) -> None:
    assert isinstance(rows, list)
    ids = [r["track_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for r in rows:
        assert tuple(r) == jobs.MANIFEST_COLUMNS
        assert all(v is None or (isinstance(v, str) and v == v.strip() and v) for v in r.values()), r
        assert r["track_id"] and "\x00" not in r["track_id"]
        assert os.path.isabs(r["path"]) and "\x00" not in r["path"]


@fuzz()
@given(m=csv_manifests())
def test_csv_manifests_read_or_name_the_problem(work, m):
    data, plan = m
    _read_back(work, "manifest.csv", data, _expected_csv(plan, work.resolve()))


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"track_id,path\n\xff\xfe,a.wav\n", "line 2: not UTF-8"),
        (b"track_id,path\nt\x00,a.wav\n", "line 2: a NUL byte"),
        (b'track_id,path\n"' + b"a" * 200_000 + b'",a.wav\n', "not valid CSV"),
        (b"track_id,path,path\nt,a.wav,b.wav\n", "column 'path' twice"),
        (b"track_id,path\n\nt,\n", "row 3: empty path"),  # a blank line: the row number is still the file's line
    ],
    ids=["latin-1", "nul", "huge-field", "duplicate-column", "line-numbers"],
)
def test_csv_manifest_defects_are_named(tmp_path, data, needle):
    p = tmp_path / "m.csv"
    p.write_bytes(data)
    with pytest.raises(jobs.JobError, match=needle):
        jobs.read_manifest(p)


def test_csv_manifest_encodings_that_say_what_they_are(tmp_path):
    """UTF-8 with a BOM and UTF-16 with its BOM read as the same rows as plain UTF-8."""
    text = "track_id,path,artist\nt1,a.wav,Sigur Rós\nt2,b.wav,坂本龍一\n"
    got = []
    for enc in ("utf-8", "utf-8-sig", "utf-16"):
        p = tmp_path / f"{enc}.csv"
        p.write_bytes(text.encode(enc))
        got.append(jobs.read_manifest(p))
    assert got[0] == got[1] == got[2]
    assert [r["artist"] for r in got[0]] == ["Sigur Rós", "坂本龍一"]


def test_a_directory_is_not_a_manifest(tmp_path):
    d = tmp_path / "folder.csv"
    d.mkdir()
    with pytest.raises(jobs.JobError, match="not a regular file"):
        jobs.read_manifest(d)


# ---------------------------------------------------------------------------------------
# Manifests: Parquet
# ---------------------------------------------------------------------------------------

_PQ_TYPES = {
    "string": (pa.string(), st.one_of(st.none(), CELL)),
    "large_string": (pa.large_string(), st.one_of(st.none(), CELL)),
    "int64": (pa.int64(), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
    "float64": (pa.float64(), st.one_of(st.none(), st.floats())),
    "bool": (pa.bool_(), st.one_of(st.none(), st.booleans())),
    "binary": (pa.binary(), st.one_of(st.none(), st.binary(max_size=6))),
    "list": (pa.list_(pa.string()), st.one_of(st.none(), st.lists(TEXT, max_size=2))),
    "struct": (pa.struct([("a", pa.int64())]), st.one_of(st.none(), st.builds(lambda a: {"a": a}, st.integers(0, 9)))),
    "null": (pa.null(), st.none()),
}


@st.composite
def parquet_manifests(draw):
    """(bytes, expected or None): a Parquet manifest of random columns and types, maybe damaged."""
    n = draw(st.integers(0, 5))
    names = draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=6))
    if draw(st.booleans()):
        names = [c for c in names if c not in ("track_id", "path")] + ["track_id", "path"]
    arrays, plan = [], []
    for name in names:
        kind = draw(st.sampled_from(sorted(_PQ_TYPES)) if name not in ("track_id", "path") or draw(st.booleans()) else st.just("string"))
        typ, values = _PQ_TYPES[kind]
        if name == "track_id" and kind == "string" and draw(st.booleans()):
            vals = [f"t{k}" for k in range(n)]
        elif name == "path" and kind == "string" and draw(st.booleans()):
            vals = [draw(st.sampled_from(["a.wav", "/abs/b.wav", "sub/c.flac"])) for _ in range(n)]
        else:
            vals = [draw(values) for _ in range(n)]
        arrays.append(pa.array(vals, type=typ))
        plan.append((name, kind, vals))
    table = pa.Table.from_arrays(arrays, names=names) if names else pa.table({"x": pa.array([None] * n, pa.null())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    mutated = mutate_bytes(draw, data) if draw(st.booleans()) else data
    return mutated, {"plan": plan, "clean": mutated == data, "n": n}


def _expected_parquet(m: dict, base: Path) -> list[dict] | None:
    plan = m["plan"]
    if not m["clean"]:
        return None
    names = [p[0] for p in plan]
    if "track_id" not in names or "path" not in names or any(names.count(c) > 1 for c in jobs.MANIFEST_COLUMNS):
        return None
    cols = {name: (kind, vals) for name, kind, vals in plan}
    if any(cols[c][0] not in ("string", "large_string") for c in ("track_id", "path")):
        return None
    out, seen = [], set()
    for i in range(m["n"]):
        row = {}
        for c in jobs.MANIFEST_COLUMNS:
            kind, vals = cols.get(c, ("null", [None] * m["n"]))
            v = vals[i]
            if kind in ("binary", "list", "struct", "bool") and v is not None:
                return None  # not text: refused
            if kind == "float64" and v is not None and v != v:
                v = None
            row[c] = None if v is None else (str(v).strip() or None)
        if not row["track_id"] or not row["path"] or row["track_id"] in seen or "\x00" in row["track_id"] + row["path"]:
            return None
        seen.add(row["track_id"])
        if not os.path.isabs(row["path"]):
            row["path"] = str(base / row["path"])
        out.append(row)
    return out


@fuzz()
@given(m=parquet_manifests())
def test_parquet_manifests_read_or_name_the_problem(work, m):
    data, plan = m
    note(repr(plan["plan"]))
    _read_back(work, "manifest.parquet", data, _expected_parquet(plan, work.resolve()))


def test_parquet_manifest_cells_that_are_not_text_are_named(tmp_path):
    p = tmp_path / "m.parquet"
    pq.write_table(pa.table({"track_id": ["a", "b"], "path": ["a.wav", "b.wav"], "album": pa.array([b"x", None], pa.binary())}), p)
    with pytest.raises(jobs.JobError, match="row 1: album must be text, got a bytes"):
        jobs.read_manifest(p)
    pq.write_table(pa.table({"track_id": [7, 8], "path": ["a.wav", "b.wav"]}), p)  # numeric ids read as written
    assert [r["track_id"] for r in jobs.read_manifest(p)] == ["7", "8"]
    p.write_bytes(p.read_bytes()[:-9])
    with pytest.raises(jobs.JobError, match="not a readable Parquet file"):
        jobs.read_manifest(p)


# ---------------------------------------------------------------------------------------
# Job files
# ---------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    TEXT,
    st.binary(max_size=4),
    st.dates(),
    st.sampled_from(["auto", "master", "analyze", "wav24", "flac24", "mp3", "streaming", "apple", "low", "high", "cpu", "gpu", "", "\x00"]),
)
ANY = st.recursive(
    SCALARS,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.one_of(TEXT, st.integers(), st.booleans()), c, max_size=4)),
    max_leaves=16,
)


def _maybe(valid):
    """A valid value most of the time (``valid`` holds some invalid ones too), anything at all otherwise."""
    return st.integers(0, 5).flatmap(lambda i: ANY if i == 0 else valid)


_NOTHING = st.nothing()


def _section(keys: dict, extra=_NOTHING):
    return st.dictionaries(
        st.one_of(st.sampled_from(sorted(keys)), extra), st.one_of(*[keys[k] for k in sorted(keys)], ANY), max_size=len(keys) + 1
    )


_TARGET_SPEC = st.dictionaries(
    st.sampled_from(["integrated_lufs", "true_peak_dbtp", "tolerance_lu", "ceiling"]),
    st.one_of(st.floats(-80, 5), st.floats(), st.integers(-30, 3), ANY),
    max_size=3,
)
JOB = st.fixed_dictionaries(
    {},
    optional={
        "name": _maybe(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10)),
        "description": _maybe(TEXT),
        "mode": _maybe(st.sampled_from(jobs.MODES)),
        "inputs": _maybe(
            st.one_of(
                st.fixed_dictionaries({"paths": st.one_of(st.lists(TEXT, max_size=3), TEXT, ANY)}),
                st.fixed_dictionaries({"manifest": st.one_of(TEXT, ANY)}),
                st.fixed_dictionaries(
                    {
                        "demo": st.one_of(
                            st.just(True),
                            _section(
                                {
                                    "per_style": st.integers(-2, 2000),
                                    "seconds": st.floats(),
                                    "include_bad": st.booleans(),
                                    "seed": st.integers(),
                                }
                            ),
                        )
                    }
                ),
                _section({"paths": ANY, "manifest": ANY, "demo": ANY}, TEXT),
            )
        ),
        "output": _maybe(TEXT),
        "targets": _maybe(
            st.one_of(
                st.dictionaries(
                    st.one_of(st.sampled_from(["streaming", "apple", "loud", "Streaming"]), TEXT),
                    st.one_of(st.none(), _TARGET_SPEC),
                    max_size=3,
                ),
                st.lists(st.one_of(st.sampled_from(["streaming", "apple"]), ANY), max_size=3),
            )
        ),
        "target": _maybe(
            st.one_of(
                st.sampled_from(["streaming", "apple", "loud"]),
                st.lists(st.sampled_from(["streaming", "apple", "loud", "STREAMING"]), max_size=3),
            )
        ),
        "formats": _maybe(
            st.one_of(
                st.sampled_from(sorted(audio.FORMATS)), st.lists(st.sampled_from(sorted(audio.FORMATS) + ["WAV24", "ogg"]), max_size=3)
            )
        ),
        "presets": _maybe(
            _section(
                {
                    "bank": st.one_of(st.none(), TEXT),
                    "preset": st.one_of(st.none(), TEXT),
                    "intensity": st.sampled_from(["low", "medium", "high", "max", " High "]),
                }
            )
        ),
        "album_mode": _maybe(st.sampled_from(["auto", True, False, 1, 0, "yes"])),
        "options": _maybe(
            _section(
                {
                    "device": st.sampled_from(["auto", "cpu", "gpu", "tpu"]),
                    "strict": st.booleans(),
                    "retries": st.integers(-1, 10**30),
                    "max_in_flight": st.one_of(st.none(), st.integers(-1, 10**30)),
                    "progress": st.booleans(),
                    "verify": st.booleans(),
                    "allow_unsafe_levels": st.booleans(),
                }
            )
        ),
        "training": _maybe(
            _section(
                {
                    "presets": st.one_of(st.none(), st.lists(TEXT, max_size=2)),
                    "intensities": st.one_of(st.none(), st.lists(st.sampled_from(["low", "medium", "high", "max"]), max_size=3)),
                    "n_random": st.one_of(st.none(), st.integers(-1, 10**9)),
                    "seed": st.integers(),
                    "format": st.sampled_from(["flac24", "wav24", "wav32f", "mp3"]),
                }
            )
        ),
    },
)
#: A job-like mapping, or any data at all (a YAML file may hold a list, a number...).
JOB_DATA = st.integers(0, 4).flatmap(
    lambda i: [ANY, st.dictionaries(st.one_of(TEXT, st.sampled_from(sorted(jobs._TOP))), ANY, max_size=4)][i] if i < 2 else JOB
)


def _check_job(job: jobs.Job) -> None:
    """What every accepted job promises the batch: the types and ranges it will rely on."""
    assert isinstance(job.name, str) and job.name and "\x00" not in job.name
    assert job.mode in jobs.MODES
    assert isinstance(job.output, str) and job.output and "\x00" not in job.output
    assert isinstance(job.description, str)
    given_inputs = [k for k in ("demo", "paths", "manifest") if job.inputs.get(k) not in (None, False)]
    assert len(given_inputs) <= 1
    if "paths" in given_inputs:
        assert isinstance(job.inputs["paths"], list) and all(isinstance(p, str) and p and "\x00" not in p for p in job.inputs["paths"])
    if "manifest" in given_inputs:
        assert isinstance(job.inputs["manifest"], str) and "\x00" not in job.inputs["manifest"]
    if "demo" in given_inputs:
        d = job.inputs["demo"]
        assert isinstance(d["per_style"], int) and d["per_style"] >= 1 and isinstance(d["include_bad"], bool)
        assert isinstance(d["seconds"], (int, float)) and math.isfinite(d["seconds"]) and d["seconds"] > 0
    assert job.target and all(isinstance(t, str) and t in job.targets for t in job.target)
    for name, t in job.targets.items():
        assert isinstance(name, str) and set(t) == jobs._TARGET, (name, t)
        assert all(isinstance(v, float) and math.isfinite(v) for v in t.values()) and t["tolerance_lu"] > 0
    assert job.formats and all(f in audio.FORMATS for f in job.formats)
    assert len({audio.FORMATS[f][0] for f in job.formats}) == len(job.formats)
    assert job.presets["intensity"] in ("low", "medium", "high")
    assert all(job.presets[k] is None or isinstance(job.presets[k], str) for k in ("bank", "preset"))
    assert job.album_mode in ("auto", True, False) and (job.album_mode == "auto" or isinstance(job.album_mode, bool))
    o = job.options
    assert o["device"] in ("auto", "cpu", "gpu") and all(isinstance(o[k], bool) for k in ("strict", "progress", "verify"))
    assert type(o["retries"]) is int and o["retries"] >= 0
    assert o["max_in_flight"] is None or (type(o["max_in_flight"]) is int and o["max_in_flight"] >= 1)
    tr = job.training
    assert tr["format"] in ("flac24", "wav24", "wav32f")
    assert tr["intensities"] is None or (isinstance(tr["intensities"], list) and set(tr["intensities"]) <= {"low", "medium", "high"})
    assert tr["n_random"] is None or (type(tr["n_random"]) is int and tr["n_random"] >= 1)
    assert type(tr["seed"]) is int and tr["seed"] >= 0
    json.dumps(job.settings(), allow_nan=False)  # what workers receive is plain JSON
    assert len(jobs.config_hash(job)) == 16


def _outcome(fn):
    """('job', settings) or ('error', message) of ``fn()``; anything else escapes."""
    try:
        job = fn()
    except jobs.JobError as exc:
        assert str(exc), "a JobError must say what is wrong"
        event("JobError")
        return "error", str(exc)
    _check_job(job)
    event("job")
    return "job", job.settings()


@fuzz()
@given(data=JOB_DATA)
def test_parse_job_gives_a_job_or_names_the_problem(data):
    arm()
    _outcome(lambda: jobs.parse_job(data))


@fuzz()
@given(data=JOB_DATA)
def test_load_job_reads_yaml_as_parse_job_reads_the_mapping(work, data):
    """The same document through a YAML file: the same job, or the same error."""
    arm()
    path = work / "job.yaml"  # stem "job": parse_job's default name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    via_file = _outcome(lambda: jobs.load_job(path))
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    direct = _outcome(lambda: jobs.parse_job(loaded if loaded is not None else {}, default_name="job"))
    assert via_file == direct


@st.composite
def yaml_bytes(draw):
    """A YAML job file as bytes, maybe damaged: UTF-8 with and without a BOM, UTF-16,
    Latin-1, with NULs, control characters, junk, bit flips (in escapes too), truncation."""
    data = draw(JOB)
    text = yaml.safe_dump(data, allow_unicode=draw(st.booleans()), sort_keys=False)
    raw = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"])), errors="replace")
    return mutate_bytes(draw, raw)


@fuzz()
@given(raw=yaml_bytes())
def test_damaged_yaml_job_files_load_or_name_the_problem(work, raw):
    arm()
    path = work / "job.yaml"
    path.write_bytes(raw)
    _outcome(lambda: jobs.load_job(path))


def test_load_job_names_an_escape_beyond_unicode(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text('name: "\\U10010000"\n', encoding="utf-8")
    with pytest.raises(jobs.JobError):
        jobs.load_job(p)


@pytest.mark.parametrize("raw", [b"name: caf\xe9\n", "name: x\n".encode("utf-16")], ids=["latin-1", "utf-16"])
def test_load_job_names_a_file_that_is_not_utf8(tmp_path, raw):
    p = tmp_path / "job.yaml"
    p.write_bytes(raw)
    with pytest.raises(jobs.JobError):
        jobs.load_job(p)


def test_load_job_names_a_document_nested_too_deeply(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("description: " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(jobs.JobError):
        jobs.load_job(p)


def _alias_bomb(levels: int = 9) -> str:
    """A YAML list whose anchors expand to 10**levels strings in a few hundred bytes."""
    nodes = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "[" + ", ".join(nodes) + "]"


@pytest.mark.parametrize(
    "text, needle",
    [
        (f"description: {_alias_bomb()}\n", "too large"),
        (f"inputs: {{paths: {_alias_bomb()}}}\n", "too large"),
        ("inputs: &a {paths: [*a]}\n", "contains itself"),
        ("description: " + "[" * 60 + "]" * 60 + "\n", "nested too deeply"),
        ("inputs: 5\n", "inputs must be a mapping"),
        ("options: [retries, 3]\n", "options must be a mapping"),
        ("inputs: {demo: 7}\n", "inputs.demo must be a mapping"),
        ("inputs: {demo: {seconds: .nan}}\n", "inputs.demo.seconds"),
        ("inputs: {demo: {per_style: 1000000000}}\n", "inputs.demo.per_style"),
        ("targets: [[streaming]]\n", "targets must be"),
        ("targets: {loud: {integrated_lufs: -9, tolerance_lu: .inf}}\n", "tolerance_lu must be a finite"),
        ("formats: [[wav24]]\n", "unknown format"),
        ("album_mode: 1\n", "album_mode"),
        ("options: {retries: 100000000000000000000}\n", "options.retries"),
        ("training: {intensities: 3}\n", "training.intensities"),
        ("training: {seed: -1}\n", "training.seed"),
        ("description: {a: 1}\n", "description must be text"),
        ('output: "a\\0b"\n', "output must be a path"),
    ],
    ids=[
        "alias-bomb-description",
        "alias-bomb-paths",
        "recursive-alias",
        "deep",
        "inputs-int",
        "options-list",
        "demo-int",
        "demo-nan",
        "demo-huge",
        "targets-unhashable",
        "tolerance-inf",
        "formats-unhashable",
        "album-mode-int",
        "retries-huge",
        "intensities-int",
        "seed-negative",
        "description-mapping",
        "output-nul",
    ],
)
def test_hostile_job_documents_are_named_quickly(tmp_path, text, needle):
    """Each of these escaped parse_job as TypeError / ValueError, hung expanding an alias
    bomb (``str(description)`` of 10**9 strings), or was accepted as a job."""
    arm()
    p = tmp_path / "job.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(jobs.JobError, match=needle):
        jobs.load_job(p)


# ---------------------------------------------------------------------------------------
# Audio: the decoder front on mutated real files
# ---------------------------------------------------------------------------------------

FS = 44100
#: (name, soundfile format, subtype, channels) of the files the mutations start from.
AUDIO_BASES = [
    ("wav16", "WAV", "PCM_16", 2),
    ("wav24", "WAV", "PCM_24", 2),
    ("wavf", "WAV", "FLOAT", 2),
    ("wav16m", "WAV", "PCM_16", 1),
    ("flac16", "FLAC", "PCM_16", 2),
    ("flac24m", "FLAC", "PCM_24", 1),
    ("vorbis", "OGG", "VORBIS", 2),
    ("aiff16", "AIFF", "PCM_16", 2),
]


def _signal(channels: int, seconds: float = 0.6) -> np.ndarray:
    """A seeded programme (interleaved, frames x channels): a tone and noise, -12 dBFS-ish."""
    rng = np.random.default_rng(14)
    t = np.arange(int(seconds * FS)) / FS
    x = 0.25 * np.sin(2 * np.pi * 440.0 * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def audio_bases(tmp_path_factory) -> dict[str, tuple[bytes, np.ndarray, str]]:
    """name -> (file bytes, the signal written, subtype): real files, written by libsndfile."""
    d = tmp_path_factory.mktemp("bases")
    out = {}
    for name, fmt, subtype, ch in AUDIO_BASES:
        x = _signal(ch)
        p = d / f"{name}.{ {'WAV': 'wav', 'FLAC': 'flac', 'OGG': 'ogg', 'AIFF': 'aiff'}[fmt] }"
        with sf.SoundFile(p, "w", FS, ch, subtype=subtype, format=fmt) as f:
            for a in range(0, len(x), 4096):  # in blocks: libsndfile's Vorbis encoder crashes on very large writes
                f.write(x[a : a + 4096])
        out[name] = (p.read_bytes(), x, subtype)
    return out


def _header_fields(name: str, data: bytes) -> list[tuple[int, int, str]]:
    """(offset, width, struct endianness) of the header fields worth lying in."""
    f: list[tuple[int, int, str]] = []
    if data[:4] == b"RIFF":
        f += [(4, 4, "<")]
        i = data.find(b"fmt ")
        if i >= 0:
            f += [
                (i + 4, 4, "<"),
                (i + 8, 2, "<"),
                (i + 10, 2, "<"),
                (i + 12, 4, "<"),
                (i + 16, 4, "<"),
                (i + 20, 2, "<"),
                (i + 22, 2, "<"),
            ]
        i = data.find(b"data")
        if i >= 0:
            f += [(i + 4, 4, "<")]
    elif data[:4] == b"FORM":
        f += [(4, 4, ">")]
        i = data.find(b"COMM")
        if i >= 0:
            f += [(i + 4, 4, ">"), (i + 8, 2, ">"), (i + 10, 4, ">"), (i + 14, 2, ">"), (i + 16, 2, ">"), (i + 18, 4, ">")]
        i = data.find(b"SSND")
        if i >= 0:
            f += [(i + 4, 4, ">"), (i + 8, 4, ">")]
    elif data[:4] == b"fLaC":
        # STREAMINFO: block sizes, frame sizes, then rate(20) channels-1(3) bits-1(5) total samples(36)
        f += [(5, 2, ">"), (8, 2, ">"), (10, 2, ">"), (12, 2, ">"), (18, 4, ">"), (22, 4, ">"), (21, 1, ">"), (18, 8, ">")]
    elif data[:4] == b"OggS":
        i = data.find(b"\x01vorbis")
        if i >= 0:
            f += [(i + 11, 1, "<"), (i + 12, 4, "<"), (i + 16, 4, "<"), (i + 28, 1, "<")]
        last = data.rfind(b"OggS")
        f += [(last + 6, 8, "<"), (6, 8, "<")]
    return f


_OGG_CRC = []


def _ogg_crc(data: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04c11db7, unreflected, zero start)."""
    if not _OGG_CRC:
        for i in range(256):
            r = i << 24
            for _ in range(8):
                r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
            _OGG_CRC.append(r & 0xFFFFFFFF)
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ b]
    return crc


def _fix_ogg_pages(data: bytearray) -> None:
    """Recompute every page's checksum, so a mutation reaches the codec instead of being
    dropped by the container as a corrupt page."""
    pos = 0
    while True:
        i = data.find(b"OggS", pos)
        if i < 0 or i + 27 > len(data):
            return
        nseg = data[i + 26]
        end = i + 27 + nseg + sum(data[i + 27 : i + 27 + nseg])
        if end > len(data):
            return
        data[i + 22 : i + 26] = b"\0\0\0\0"
        data[i + 22 : i + 26] = struct.pack("<I", _ogg_crc(bytes(data[i:end])))
        pos = end


LIES = [0, 1, 2, 3, 7, 8, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 4_000_000_000, 0x7FFFFFFF, 0xFFFFFFFF, 2**36 - 1, 2**63 - 1, 2**64 - 1]


@st.composite
def damaged_audio(draw, bases):
    name = draw(st.sampled_from([b[0] for b in AUDIO_BASES]))
    data = bytearray(bases[name][0])
    fields = _header_fields(name, bytes(data))
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["field", "field", "truncate", "flip", "flip_header", "splice"]))
        n = len(data)
        if op == "field" and fields:
            off, width, endian = draw(st.sampled_from(fields))
            v = draw(st.one_of(st.sampled_from(LIES), st.integers(0, 2 ** (8 * width) - 1))) % (2 ** (8 * width))
            if off + width <= n:
                data[off : off + width] = v.to_bytes(width, "little" if endian == "<" else "big")
            ops.append((op, off, width, v))
        elif op == "truncate":
            cut = draw(st.integers(0, n))
            del data[cut:]
            ops.append((op, cut))
        elif op in ("flip", "flip_header") and n:
            pos = draw(st.integers(0, min(n, 128) - 1 if op == "flip_header" else n - 1))
            bit = draw(st.integers(0, 7))
            data[pos] ^= 1 << bit
            ops.append((op, pos, bit))
        elif op == "splice":
            pos = draw(st.integers(0, n))
            junk = draw(st.binary(min_size=1, max_size=64))
            data[pos : pos + draw(st.integers(0, 64))] = junk
            ops.append((op, pos, len(junk)))
    if data[:4] == b"OggS" and draw(st.booleans()):
        _fix_ogg_pages(data)
        ops.append(("ogg-crc",))
    return name, bytes(data), ops


#: Most bytes a decode may allocate at its peak, whatever the header claims (the old
#: decoder allocated channels x header frames up front: gigabytes for a patched FLAC).
PEAK_LIMIT = 160 * 2**20


def _decode_checked(path: Path, fn):
    """``fn(path)`` under tracemalloc: (result or AudioError, peak bytes)."""
    tracemalloc.start()
    try:
        try:
            res = fn(path)
        except audio.AudioError as exc:
            res = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return res, peak


def _check_decoded(res, path: Path, size: int, subtype: str | None = None) -> None:
    if isinstance(res, audio.AudioError):
        assert str(res) and os.fspath(path) in str(res), res
        return
    x, fs = res
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous
    assert x.shape[0] >= 1 and x.shape[1] >= 1
    assert audio.MIN_RATE <= fs <= audio.MAX_RATE and isinstance(fs, int)
    assert np.isfinite(x).all()
    if subtype in ("PCM_16", "PCM_24", "FLOAT") and path.suffix in (".wav", ".aiff"):
        bits = {"PCM_16": 16, "PCM_24": 24, "FLOAT": 32}[subtype]
        assert x.shape[1] * x.shape[0] * bits <= 8 * size  # no more samples than the file's bytes hold


@fuzz(deadline_s=10.0)
@given(data=st.data())
def test_damaged_audio_decodes_or_is_refused_clearly(work, audio_bases, data):
    name, raw, ops = data.draw(damaged_audio(audio_bases))
    note(f"{name}: {ops}")
    arm()
    path = work / f"damaged.{ {'w': 'wav', 'f': 'flac', 'v': 'ogg', 'a': 'aiff'}[name[0]] }"
    path.write_bytes(raw)
    try:
        meta = audio.info(path)
    except audio.AudioError as exc:
        assert str(path) in str(exc)
        meta = None
    res, peak = _decode_checked(path, audio.decode)
    event(f"{name}: " + ("decoded" if not isinstance(res, audio.AudioError) else str(res).split(":")[0].split(" ")[0]))
    assert peak <= PEAK_LIMIT, f"decode allocated {peak / 2**20:.0f} MiB for a {len(raw)}-byte file"
    subtype = meta.subtype if meta is not None else None
    _check_decoded(res, path, len(raw), subtype if meta is not None and meta.format in ("WAV", "AIFF") else None)
    prog, _ = _decode_checked(path, audio.decode_programme)
    assert type(prog) is type(res)
    if not isinstance(res, audio.AudioError):
        x, fs = res
        y, fs2 = prog
        assert fs2 == fs and y.shape[0] == max(2, x.shape[0]) and y.shape[1] == x.shape[1]
        np.testing.assert_array_equal(y[: x.shape[0]], x)


def test_undamaged_bases_decode_to_what_was_written(work, audio_bases):
    """The fuzz starts from real files that decode: exactly (float), to the word length (PCM), to the codec (Vorbis)."""
    for name, fmt, subtype, ch in AUDIO_BASES:
        raw, x, _ = audio_bases[name]
        path = work / f"clean-{name}.{ {'WAV': 'wav', 'FLAC': 'flac', 'OGG': 'ogg', 'AIFF': 'aiff'}[fmt] }"
        path.write_bytes(raw)
        y, fs = audio.decode(path)
        assert fs == FS and y.shape == (ch, x.shape[0]), name
        if subtype == "VORBIS":  # lossy: the same programme, not the same samples
            assert np.corrcoef(y.ravel(), x.T.ravel())[0, 1] > 0.95, name
        else:
            assert np.max(np.abs(y - x.T)) <= {"FLOAT": 0.0, "PCM_16": 2.0**-15, "PCM_24": 2.0**-23}[subtype], name


def _wav_with(raw: bytes, field: str, value: int) -> bytes:
    b = bytearray(raw)
    fmt, data = b.find(b"fmt "), b.find(b"data")
    off, width = {
        "channels": (fmt + 10, 2),
        "rate": (fmt + 12, 4),
        "bits": (fmt + 22, 2),
        "align": (fmt + 20, 2),
        "data": (data + 4, 4),
        "riff": (4, 4),
    }[field]
    b[off : off + width] = value.to_bytes(width, "little")
    return bytes(b)


@pytest.mark.parametrize(
    "field, value, outcome",
    [
        ("channels", 0, "cannot read"),
        ("channels", 65535, "cannot read"),
        ("rate", 0, "cannot read"),
        ("rate", 1, "outside the supported"),
        ("rate", 4_000_000_000, "cannot read"),
        ("rate", 7999, "outside the supported"),
        ("rate", 192001, "outside the supported"),
        ("bits", 0, "cannot read"),
        ("data", 0, "no audio samples"),
        ("data", 0xFFFFFFFF, None),  # libsndfile sizes the data by the file: the frames that are there
        ("riff", 0xFFFFFFFF, None),
    ],
)
def test_wav_header_lies(tmp_path, audio_bases, field, value, outcome):
    raw, x, _ = audio_bases["wav16"]
    p = tmp_path / "lie.wav"
    p.write_bytes(_wav_with(raw, field, value))
    res, peak = _decode_checked(p, audio.decode)
    assert peak < 16 * 2**20
    if outcome is None:
        y, fs = res
        assert fs == FS and y.shape == (2, x.shape[0])
        np.testing.assert_allclose(y, x.T, atol=2.0**-15)
    else:
        assert isinstance(res, audio.AudioError) and outcome in str(res), res


def _flac_total(raw: bytes, total: int) -> bytes:
    """The FLAC file with STREAMINFO's 36-bit total-samples field set to ``total``."""
    b = bytearray(raw)
    v = int.from_bytes(b[18:26], "big")
    b[18:26] = ((v & ~((1 << 36) - 1)) | total).to_bytes(8, "big")
    return bytes(b)


def test_a_flac_header_claiming_hours_allocates_only_what_the_file_holds(tmp_path, audio_bases):
    """Defect (fixed in audio._read_planar): a 60 kB FLAC whose STREAMINFO claims 3 hours
    made the decoder allocate np.empty((2, 476 million)) -- 3.8 GB -- before reading a byte."""
    raw, x, _ = audio_bases["flac16"]
    p = tmp_path / "lie.flac"
    p.write_bytes(_flac_total(raw, FS * 3 * 3600))
    assert audio.info(p).frames == FS * 3 * 3600
    res, peak = _decode_checked(p, audio.decode)
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert isinstance(res, audio.AudioError) and "cannot decode" in str(res)
    p.write_bytes(_flac_total(raw, 0))  # total 0 = unknown: libsndfile says SF_COUNT_MAX frames
    with pytest.raises(audio.AudioError, match="no usable length"):
        audio.decode(p)
    p.write_bytes(_flac_total(raw, 1000))  # fewer than there are: the header's length, as before
    y, _ = audio.decode(p)
    np.testing.assert_allclose(y, x[:1000].T, atol=2.0**-15)


@pytest.mark.parametrize("name", ["flac16", "vorbis", "wav24"])
def test_a_buffer_grown_as_data_arrives_decodes_bit_identically(tmp_path, monkeypatch, name):
    """Where the first allocation is short (a stream compressing better than
    _FRAMES_PER_BYTE), the buffer grows: the same samples, contiguous, as one allocation."""
    x = np.random.default_rng(5).uniform(-0.5, 0.5, (3 * FS, 2)).astype(np.float32)
    fmt, subtype, ext = {"flac16": ("FLAC", "PCM_16", "flac"), "vorbis": ("OGG", "VORBIS", "ogg"), "wav24": ("WAV", "PCM_24", "wav")}[name]
    p = tmp_path / f"g.{ext}"
    with sf.SoundFile(p, "w", FS, 2, subtype=subtype, format=fmt) as f:
        for a in range(0, len(x), 4096):
            f.write(x[a : a + 4096])
    whole, _ = audio.decode(p)
    calls = []
    real_grow = audio._grow
    monkeypatch.setattr(audio, "_grow", lambda *a: calls.append(a[1:]) or real_grow(*a))
    monkeypatch.setattr(audio, "_FRAMES_PER_BYTE", 0)  # first allocation: one PyAV chunk
    monkeypatch.setattr(audio, "_FIXED_BITS", {})  # PCM treated as compressed: grown too
    grown, _ = audio.decode(p)
    assert calls, "the buffer never grew: the test does not test growth"
    assert grown.flags.c_contiguous and grown.shape == whole.shape
    np.testing.assert_array_equal(grown, whole)
    if name == "vorbis":  # and through libsndfile, where PyAV is not used
        monkeypatch.setattr(audio, "_AV_FORMATS", frozenset())
        calls.clear()
        via_sndfile, _ = audio.decode(p)
        assert calls and via_sndfile.shape == whole.shape


# ---------------------------------------------------------------------------------------
# Preset banks
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank_doc() -> dict:
    return json.loads(presets.DEFAULT_BANK_PATH.read_text())


JSON_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(TEXT, c, max_size=4)),
    max_leaves=20,
)
#: Values to put where a bank holds numbers or lists of them.
BANK_VALUES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, -1e308, 10**400, 0.5, 1.0, 2.0, 1e6, True, None, "x", [], {}, [[]]]),
    st.floats(),
    st.integers(),
    st.lists(st.one_of(st.floats(), st.integers(-10, 10), st.none()), max_size=40),
    st.lists(st.lists(st.floats(), max_size=33), max_size=3),
    JSON_ANY,
)
_ROW_FIELDS = sorted(bank_schema.PRESET_COLUMNS) + sorted(bank_schema.SELECTION_COLUMNS) + sorted(bank_schema.LEARNED_COLUMNS) + ["colour"]
_META_FIELDS = ["features", "weights", "clip", "method", "k"]


@st.composite
def mutated_banks(draw, doc):
    """A default-bank document with fields mutated: wrong types, NaN, infinities, negative and
    huge values, empty and wrongly sized lists, one value of a list replaced, rows removed or doubled."""
    d = copy.deepcopy(doc)
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["field", "field", "nudge", "nudge", "nudge", "element", "delete", "meta", "rows", "top"]))
        rows = d.get("presets") if isinstance(d.get("presets"), list) else []
        if op in ("field", "element", "delete") and rows and isinstance(rows[0], dict):
            r = draw(st.integers(0, len(rows) - 1))
            k = draw(st.sampled_from(_ROW_FIELDS))
            if op == "field":
                rows[r][k] = draw(BANK_VALUES)
            elif op == "nudge":  # a plausible edit: scaled, shifted, some in range and some not
                a, b = draw(st.floats(-3, 3)), draw(st.floats(-20, 20))
                v = rows[r].get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    rows[r][k] = a * v + b
                elif isinstance(v, list) and v and all(isinstance(e, (int, float)) for e in v):
                    rows[r][k] = sorted(a * e + b for e in v) if k == "crossovers_hz" and a > 0 else [a * e + b for e in v]
            elif op == "element" and isinstance(rows[r].get(k), list) and rows[r][k]:
                i = draw(st.integers(0, len(rows[r][k]) - 1))
                rows[r][k][i] = draw(st.one_of(st.floats(), st.sampled_from([None, 10**400, "3", True])))
            else:
                rows[r].pop(k, None)
            ops.append((op, r, k))
        elif op == "meta" and isinstance(d.get("bank"), dict) and isinstance(d["bank"].get("selection"), dict):
            k = draw(st.sampled_from(_META_FIELDS))
            d["bank"]["selection"][k] = draw(BANK_VALUES)
            ops.append((op, k))
        elif op == "rows":
            how = draw(st.sampled_from(["empty", "double", "drop", "rename"]))
            if how == "empty":
                d["presets"] = []
            elif how == "double" and rows:
                rows.append(copy.deepcopy(rows[0]))
            elif how == "drop" and len(rows) > 1:
                rows.pop()
            elif how == "rename" and rows and isinstance(rows[-1], dict):
                rows[-1]["name"] = draw(st.one_of(TEXT, st.sampled_from(["balanced", "", 5])))
            ops.append((op, how))
        elif op == "top":
            k = draw(st.sampled_from(["acetate.schema", "acetate.schema_version", "bank", "presets"]))
            d[k] = draw(st.one_of(BANK_VALUES, st.sampled_from(["bank", "1.0", "1.7", "2.0"])))
            ops.append((op, k))
    return d, ops


def _check_bank(bank: presets.Bank) -> None:
    """What a loaded bank promises the renderer and the selector (stated here, not read off the validator)."""
    assert len(bank) >= 1 and len(set(bank.names)) == len(bank.names) and all(isinstance(n, str) and n for n in bank.names)
    fin = lambda v: all(isinstance(a, float) and math.isfinite(a) for a in (v if isinstance(v, tuple) else (v,)))  # noqa: E731
    for p in bank:
        nb = len(p.crossovers_hz) + 1
        for k in ("threshold_rel_db", "ratio", "knee_db", "attack_s", "release_s", "width"):
            assert len(getattr(p, k)) == nb and fin(getattr(p, k)), (p.name, k)
        assert fin(p.crossovers_hz) and all(a < b for a, b in zip((0.0,) + p.crossovers_hz, p.crossovers_hz))  # > 0, increasing
        assert len(p.target_mid_db) == len(p.target_side_db) == 31 and fin(p.target_mid_db) and fin(p.target_side_db)
        assert all(r >= 1 for r in p.ratio) and all(a >= 0 for a in p.attack_s + p.release_s + p.knee_db + p.width)
        assert fin(p.eq_max_db) and p.eq_max_db >= 0 and p.eq_phase in ("linear", "minimum")
        assert fin(p.target_lufs) and -60 <= p.target_lufs <= 0 and fin(p.ceiling_dbtp) and p.ceiling_dbtp <= 0
        assert fin(p.limiter_lookahead_s) and p.limiter_lookahead_s > 0 and fin(p.limiter_release_s) and p.limiter_release_s > 0
        assert fin(p.max_limiting_db) and p.max_limiting_db >= 0
    # every prototype, as a track's fingerprint, selects a preset of the bank at a finite distance
    for proto in bank.prototypes:
        fp = {f: (float(v) if math.isfinite(v) else math.nan) for f, v in zip(bank.features, proto)}
        sel = bank.select(fp)
        assert sel.preset.name in bank.names and math.isfinite(sel.distance)


def _load_outcome(path: Path):
    try:
        bank = presets.load_bank(path)
    except (ValueError, OSError) as exc:
        assert str(exc), "the error must say what is wrong"
        event("refused")
        return exc
    _check_bank(bank)
    event("loaded")
    return bank


@fuzz(deadline_s=10.0)
@given(data=st.data())
def test_mutated_json_banks_load_valid_or_name_the_problem(work, bank_doc, data):
    d, ops = data.draw(mutated_banks(bank_doc))
    note(repr(ops))
    arm()
    p = work / "bank.json"
    p.write_text(json.dumps(d))  # NaN and infinities as JSON's extensions NaN / Infinity
    _load_outcome(p)


@fuzz()
@given(
    doc=st.one_of(
        JSON_ANY,
        st.fixed_dictionaries(
            {
                "acetate.schema": st.just("bank"),
                "acetate.schema_version": st.just("1.0"),
                "bank": JSON_ANY,
                "presets": st.lists(st.dictionaries(st.sampled_from(_ROW_FIELDS), BANK_VALUES), max_size=3),
            }
        ),
    )
)
def test_random_json_is_refused_as_a_bank(work, doc):
    arm()
    p = work / "random.json"
    p.write_text(json.dumps(doc))
    res = _load_outcome(p)
    assert isinstance(res, ValueError), "random JSON loaded as a bank"


@fuzz()
@given(data=st.data())
def test_damaged_bank_files_load_valid_or_name_the_problem(work, bank_doc, data):
    """JSON and Parquet bank files cut short, bit-flipped, junk inserted, not UTF-8."""
    ext = data.draw(st.sampled_from(["json", "parquet"]))
    arm()
    p = work / f"damaged.{ext}"
    presets.save_bank(presets.load_bank(), p)
    p.write_bytes(mutate_bytes(data.draw, p.read_bytes()))
    _load_outcome(p)


@pytest.mark.parametrize(
    "where, value, needle",
    [
        (("ratio",), [math.nan] * 4, "ratio must hold finite values"),
        (("ratio",), [1e308] * 4, "ratio must hold finite values"),
        (("attack_s",), [-1.0] * 4, "attack_s"),
        (("limiter_lookahead_s",), 1e9, "limiter_lookahead_s"),
        (("crossovers_hz",), [1000.0, 120.0, 6000.0], "strictly increasing"),
        (("target_mid_db",), [math.nan] * 31, "target_mid_db"),
        (("eq_mid_db",), [0.0] * 3, "eq_mid_db needs 31"),
        (("n_pairs",), 1e30, "n_pairs must be a whole number"),
        (("n_pairs",), 2.5, "n_pairs must be a whole number"),
        (("ratio",), [10**400] * 4, "ratio must hold finite values"),
        (("selection", "clip"), 5, "selection.clip"),
        (("selection", "k"), 0, "selection.k"),
        (("selection", "k"), None, "selection.k"),
        (("prototype",), None, "prototype is required"),
        (("members",), [None], "members must be a list of lists"),
        (("selection", "weights"), "abc", "selection.weights"),
        (("selection", "features"), [1, 2], "selection.features"),
    ],
)
def test_bank_values_that_loaded_or_crashed_are_named(tmp_path, bank_doc, where, value, needle):
    """Each of these loaded as a bank that could not render (NaN ratios, a negative attack, a
    lookahead of 30 years...), or escaped as OverflowError / AttributeError."""
    d = copy.deepcopy(bank_doc)
    if where[0] == "selection":
        d["bank"]["selection"][where[1]] = value
    else:
        d["presets"][1][where[0]] = value
    p = tmp_path / "b.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=needle):
        presets.load_bank(p)


def test_bank_files_that_are_not_utf8_or_too_deep_are_named(tmp_path):
    p = tmp_path / "b.json"
    p.write_bytes(b'{"acetate.schema": "bank", "name": "caf\xe9"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        presets.load_bank(p)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        presets.load_bank(p)


def test_parquet_banks_with_wrong_types_or_metadata_are_named(tmp_path):
    table = bank_schema.bank_table(presets.load_bank().to_rows(), presets.load_bank().meta)
    p = tmp_path / "b.parquet"
    bad = table.set_column(table.schema.get_field_index("ratio"), "ratio", pa.array([["2"] * 4] * len(table), pa.list_(pa.string())))
    pq.write_table(bad, p)
    with pytest.raises(ValueError, match="ratio must hold numbers"):
        presets.load_bank(p)
    md = dict(table.schema.metadata)
    for junk, needle in (
        (b"\xff\xfe{", "not valid JSON"),
        (b"[" * 50_000, "not valid JSON"),
        (b'{"selection": {"features": ["a"]}}', "prototype has"),
    ):
        md[b"acetate.bank"] = junk
        pq.write_table(table.replace_schema_metadata(md), p)
        with pytest.raises(ValueError, match=needle):
            presets.load_bank(p)


def test_a_bank_at_the_edges_of_what_loads_still_renders(tmp_path, bank_doc):
    """The bank's limits are what the renderer can take: a preset at every extreme still
    masters a real signal to a finite file at the target."""
    from acetate.pipeline import mastering
    from acetate.pipeline.chain import render

    d = copy.deepcopy(bank_doc)
    r = d["presets"][0]
    r.update(
        ratio=[1000.0, 1.0, 1000.0, 1.0],
        attack_s=[0.0, 1.0, 0.0, 1.0],
        release_s=[0.0, 10.0, 0.0, 10.0],
        knee_db=[0.0, 100.0, 0.0, 100.0],
        width=[0.0, 4.0, 0.0, 4.0],
        threshold_rel_db=[-100.0, 100.0, -100.0, 100.0],
        eq_max_db=48.0,
        limiter_lookahead_s=0.1,
        limiter_release_s=10.0,
        max_limiting_db=100.0,
        target_mid_db=[200.0] + [-200.0] * 30,
    )
    p = tmp_path / "edges.json"
    p.write_text(json.dumps(d))
    bank = presets.load_bank(p)
    x = _signal(2, seconds=3.0)
    src = tmp_path / "in.wav"
    sf.write(src, x, FS, subtype="FLOAT")
    row = mastering.master_file(str(src), tmp_path / "out", render.MasterSettings(target_lufs=-16.0), preset=r["name"], bank=bank)
    assert "error" not in row, row
    y, _ = audio.decode(row["outputs"][0]["path"])
    assert np.isfinite(y).all() and y.shape == (2, x.shape[0])
    assert row["output"]["integrated_lufs"] == pytest.approx(-16.0, abs=0.5)
