"""Parquet datasets and small JSON records under a job's output root, written atomically.

Layout of an output root ``OUT``::

    OUT/masters/<name>.<ext>              masters (the write stage, chain.deliver; atomic)
    OUT/<dataset>/<part>.parquet          one part file per track (or per run), see schemas.registry
    OUT/.acetate/ledger/<name>.json       per-track state: key, status, attempts, planned or
                                          delivered files (the resume ledger)
    OUT/.acetate/measure/<hash>.json      cached input measurements, by content hash
    OUT/.acetate/track_ids.json           the id each folder or glob input was given (path -> id)
    OUT/.acetate/lock                     the running run's advisory lock (run, pid, host, since)

``<name>`` is :func:`safe_name` of the track id.

Every file is written under a temporary name that starts with ``.`` in the
same folder, then moved into place with :func:`os.replace`; readers skip
names starting with ``.`` or ``_``, so a crash never leaves a half-written
file that a later run or reader would take for done.  A track's part file has
the same name on every attempt, so redoing a track replaces its rows instead
of adding to them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import tempfile
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from acetate.pipeline.io import files
from acetate.schemas import registry

__all__ = [
    "STATE_DIR",
    "safe_name",
    "name_key",
    "check_distinct",
    "dataset_dir",
    "write_json",
    "read_json",
    "write_part",
    "remove_part",
    "read_dataset",
    "list_parts",
    "OutputBusy",
    "output_lock",
    "lock_holder",
    "check_output_root",
]

#: Hidden folder of the ledger and caches inside an output root.
STATE_DIR = ".acetate"

#: Names kept as they are: lower-case ASCII letters, digits, ``.``, ``_`` and ``-``, starting
#: with a letter or digit. Lower case only, so that two names kept as they are never differ by
#: case alone (macOS and Windows file systems fold case).
_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]*")
#: What a hashed name ends with: ``-`` and 16 hex digits. A plain id that ends like this is
#: hashed too, so it can never meet the hashed name of another id.
_HASHED_TAIL = re.compile(r"-[0-9a-f]{16}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Device names Windows reserves whatever the extension (``aux.wav`` is the device AUX).
_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))})
#: Longest name kept as it is; a hashed name is at most ``100 + 17`` characters, so a part
#: file's name with its run id and a temporary file's decorations stay well under 255 bytes.
_MAX_PLAIN = 120


def safe_name(track_id: str) -> str:
    """The file name (without extension) of ``track_id``: file-system safe, and one per id.

    An id is kept as it is when it is *plain*: lower-case ASCII letters, digits, ``.``,
    ``_`` and ``-``, starting with a letter or digit, not ending with ``.``, at most 120
    characters, not a device name Windows reserves (``con``, ``aux.wav``, ``lpt1`` ...), and
    not ending like a hashed name. Any other id becomes its characters with every unsafe one
    replaced by ``_`` (at most 100 of them), then ``-`` and 16 hex digits of the blake2b hash
    of the id's UTF-8 bytes. So two distinct ids never share a name, on a file system that
    folds case (plain names have no upper case; hashed names differ in their hash) or one that
    normalises Unicode (the hash is of the raw bytes, the name itself is ASCII); the batch
    still checks every plan for collisions (:func:`check_distinct`).

    Examples
    --------
    >>> safe_name("pop-01")
    'pop-01'
    >>> safe_name("Track")
    'Track-2402e228f58d0e96'
    >>> safe_name("x/y")
    'x_y-8158958a3ec8aebb'
    >>> safe_name(safe_name("x/y")) != safe_name("x/y")
    True
    """
    if not isinstance(track_id, str) or not track_id:
        raise ValueError(f"track_id must be a non-empty string, got {track_id!r}")
    if (
        _PLAIN.fullmatch(track_id)
        and len(track_id) <= _MAX_PLAIN
        and not track_id.endswith(".")
        and track_id.split(".", 1)[0] not in _RESERVED
        and not _HASHED_TAIL.search(track_id)
    ):
        return track_id
    digest = hashlib.blake2b(track_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    clean = _UNSAFE.sub("_", track_id).lstrip("._")[:100].rstrip(".") or "track"
    head, dot, rest = clean.partition(".")
    if head.lower() in _RESERVED:  # 'aux.wav-<hash>' would still be the device AUX on Windows
        clean = f"{head}_{dot}{rest}"
    return f"{clean}-{digest}"


def name_key(name: str) -> str:
    """How a file system that folds case and normalises Unicode may see ``name`` (for collision checks)."""
    return unicodedata.normalize("NFC", name).casefold()


def check_distinct(names: dict[str, str], what: str = "track") -> None:
    """Raise ``ValueError`` naming both ids when two ids of ``names`` (id -> file name) share one file.

    Names are compared as a case-folding, Unicode-normalising file system would.
    """
    seen: dict[str, str] = {}
    for tid, name in names.items():
        k = name_key(name)
        if k in seen and seen[k] != tid:
            raise ValueError(f"{what}s {seen[k]!r} and {tid!r} would share the output name {name!r}; rename one of them")
        seen[k] = tid


def dataset_dir(out_root: str | os.PathLike, dataset: str) -> Path:
    """``OUT/<dataset>`` for a known dataset name."""
    registry.schema(dataset)  # validates the name
    return Path(out_root) / dataset


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`acetate.pipeline.io.files.atomic_write`)."""
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
    files of an earlier minor version of the schema (:func:`acetate.schemas.registry.is_older`)
    are read with the columns added since filled with nulls; a part whose schema
    differs otherwise raises ``ValueError`` naming the file.
    """
    schema = registry.schema(dataset)
    parts = list_parts(out_root, dataset)
    if not parts:
        return schema.empty_table()
    older = []
    for p in parts:
        got = pq.read_schema(p)
        try:
            registry.check(dataset, got, older=True)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None
        if registry.is_older(dataset, got):
            older.append(p)
    if not older:
        return pads.dataset(parts, schema=schema, format="parquet").to_table().replace_schema_metadata(schema.metadata)
    tables = []
    for p in parts:  # in part order, the older ones filled out with the columns added since
        t = pq.read_table(p)
        cols = [t.column(f.name) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in schema]
        tables.append(pa.Table.from_arrays(cols, schema=schema))
    return pa.concat_tables(tables).replace_schema_metadata(schema.metadata)


# --- the output root: one run at a time, writable -------------------------------------

#: The advisory lock file of a run: ``OUT/.acetate/lock`` (JSON: pid, host, run, since).
LOCK_NAME = "lock"


class OutputBusy(RuntimeError):
    """Another run holds the output root (the message names it)."""


_HELD: dict[str, list] = {}  # realpath -> [open lock file, depth]: re-entrant within a process


@contextlib.contextmanager
def output_lock(out_root: str | os.PathLike, *, run_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold ``OUT/.acetate/lock`` for the duration of a run; raise :class:`OutputBusy` if another holds it.

    The lock is an advisory ``flock`` on the file, so it dies with its process: a run
    killed outright leaves the file but no lock, and the next run takes it over (the
    file's old holder is then *stale*, and the returned record says so). The file
    says who holds it -- pid, host, run id and since when -- for the message another
    run gets. Re-entrant within one thread (another thread of the process is another
    run: it is refused like one). On a file system without locks (``flock`` answers
    neither "held" nor "granted") the run goes on unlocked, and the record's ``unlocked``
    says why. Yields the lock record, with ``stale`` (the previous holder's record, or None).
    """
    import fcntl
    import threading

    root = Path(out_root)
    key = f"{os.path.realpath(root)}:{threading.get_ident()}"
    if key in _HELD:
        if run_id and not _HELD[key][2].get("run_id"):
            _HELD[key][2]["run_id"] = run_id
        _HELD[key][1] += 1
        try:
            yield _HELD[key][2]
        finally:
            _HELD[key][1] -= 1
        return
    path = root / STATE_DIR / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    unlocked = None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # no locks here (ENOLCK, ENOSYS ...)
            unlocked = f"the file system of {root} does not support locks ({exc.strerror or exc}): make sure no other run uses it"
        else:
            fh.seek(0)
            holder = _parse_lock(fh.read())
            fh.close()
            who = "another acetate run"
            if holder:
                who = (
                    f"run {holder.get('run_id') or '?'} (pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')})"
                )
            raise OutputBusy(f"the output folder {root} is in use by {who}; wait for it to finish or use another --out") from None
    fh.seek(0)
    stale = _parse_lock(fh.read()) or None
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run_id": run_id,
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(record))
    fh.flush()
    record = {**record, "stale": stale, "unlocked": unlocked}
    _HELD[key] = [fh, 1, record]
    try:
        yield record
    finally:
        _HELD.pop(key, None)
        try:
            fh.seek(0)
            fh.truncate()  # an empty lock file: nobody holds it, nothing stale
        finally:
            fh.close()  # releases the flock


def lock_holder(out_root: str | os.PathLike) -> dict[str, Any]:
    """The record of the run that holds (or last held, if it was killed) ``OUT/.acetate/lock``; ``{}`` when none."""
    try:
        with open(Path(out_root) / STATE_DIR / LOCK_NAME) as fh:
            return _parse_lock(fh.read())
    except OSError:
        return {}


def _parse_lock(text: str) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def check_output_root(out_root: str | os.PathLike, option: str = "--out") -> Path:
    """Make sure ``out_root`` is (or can become) a writable folder; return it as an absolute path.

    Raises ``ValueError`` with one sentence: a path that is an existing file, a folder
    that cannot be created or written (permissions, a read-only file system), or a
    full disk. Checked before any work starts, so nothing is rendered to be thrown away.
    """
    root = Path(os.path.abspath(os.fspath(out_root)))
    if root.exists() and not root.is_dir():
        raise ValueError(f"{option} {out_root} is an existing file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"{option} {out_root}: a part of the path is an existing file, not a folder") from None
    except OSError as exc:
        raise ValueError(f"{option} {out_root}: cannot create the folder: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".acetate-probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ValueError(files.no_space_message(root)) from None
        raise ValueError(f"{option} {out_root}: cannot write there: {exc.strerror or exc}") from None
    st = os.statvfs(root)
    if st.f_bavail * st.f_frsize < (1 << 20):
        raise ValueError(f"{option} {out_root}: no space left on device (under 1 MiB free)")
    return root
