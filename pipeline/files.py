"""Atomic file writes: the files the pipeline delivers (masters, Parquet parts, ledgers,
training tables). A preset bank is written by ``schemas.bank.write_bank_file`` with its own
temp-and-rename: ``schemas`` imports nothing from ``pipeline``.

One mechanism for all of them: the content goes to a hidden temporary file
beside the final name, is flushed to disk, gets the mode a plain ``open()``
would give it under the process umask (``mkstemp`` makes 0600, which would
hide reports and masters from the rest of a label's team), and is renamed into
place. A crash leaves either the old file or the new one under the name, never
half of one; a failed writer leaves nothing.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write"]

# The process umask, read once at import (os.umask can only be read by setting it,
# which would race with other threads creating files).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> str:
    """Call ``writer(tmp_path)`` to write a temporary file beside ``path``, then make it ``path``.

    The temporary name starts with ``.`` and ends with ``.tmp`` (dataset readers
    skip it); it is fsynced before the rename, given mode ``0666 & ~umask``, and
    removed if ``writer`` raises. Parent folders are created.

    Returns
    -------
    str
        The final path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> p = atomic_write(d / "a.txt", lambda tmp: pathlib.Path(tmp).write_text("hi"))
    >>> pathlib.Path(p).read_text(), sorted(f.name for f in d.iterdir())
    ('hi', ['a.txt'])
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:  # on disk before the name says it is done
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return str(final)
