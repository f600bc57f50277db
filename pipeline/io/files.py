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

import errno
import os
import re
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["atomic_write", "DiskFull", "error_message", "input_problem", "TEMP_PATTERN", "remove_stale_temporaries", "no_space_message"]

# The process umask, read once at import (os.umask can only be read by setting it,
# which would race with other threads creating files).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _host_token() -> str:
    """8 hex digits naming this host *and* this process's PID namespace and boot: a pid in a
    temporary's name means a process only where all three agree (a container sharing the
    host's name, or a cloned VM, has another namespace or boot id)."""
    import hashlib

    parts = [socket.gethostname()]
    for probe in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(open(probe).read().strip() if probe.endswith("boot_id") else os.readlink(probe))
        except OSError:
            parts.append("?")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=4).hexdigest()


#: This host, PID namespace and boot, as the temporaries' names carry it.
_HOST = _host_token()

#: The names :func:`atomic_write` gives its temporaries: ``.<final name>.acetate-<host>-<pid>-<random>.tmp``.
#: Only names of this form are ever cleaned up (:func:`remove_stale_temporaries`): never a user's file.
TEMP_PATTERN = re.compile(r"\.(?P<final>.+)\.acetate-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[a-z0-9_]+\.tmp")


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> str:
    """Call ``writer(tmp_path)`` to write a temporary file beside ``path``, then make it ``path``.

    The temporary name starts with ``.`` and ends with ``.tmp`` (dataset readers
    skip it) and names the writing host and process (:data:`TEMP_PATTERN`), so a
    later run can tell a dead writer's leftovers from a live one's; it is fsynced
    before the rename, given mode ``0666 & ~umask``, and removed if ``writer``
    raises. Parent folders are created. A write that fails because the disk is
    full raises :class:`DiskFull` (an ``OSError``, ENOSPC) saying so and naming ``path``.

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
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.acetate-{_HOST}-{os.getpid()}-", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:  # on disk before the name says it is done
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, final)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, Exception) and not isinstance(exc, DiskFull) and _disk_full(exc, final.parent):
            raise DiskFull(final) from exc
        raise
    return str(final)


class DiskFull(OSError):
    """A write that failed because the file system is full (``errno`` ENOSPC; the message names the file)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(errno.ENOSPC, no_space_message(path), os.fspath(path))

    def __str__(self) -> str:
        return self.strerror


def error_message(exc: BaseException) -> str:
    """``exc`` as one line a label's engineer can read (its class name when it says nothing).

    Examples
    --------
    >>> error_message(ValueError("two  spaced\tlines")), error_message(KeyError())
    ('two spaced lines', 'KeyError')
    """
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def no_space_message(path: str | os.PathLike) -> str:
    """The one sentence a full disk gets."""
    return f"no space left on device while writing {os.fspath(path)}"


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (an OSError, or a codec's opaque "System error.") is a full disk."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "system error" not in str(exc).lower():  # any other error keeps its own name
        return False
    try:  # libsndfile reports ENOSPC as "System error.": ask the file system
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def input_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an input file, or None for a regular file.

    Checked before the file is opened: opening a FIFO blocks until a writer comes,
    a device can be endless. Symbolic links are followed; a loop or a dangling
    link is named as such.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> input_problem(d).startswith("not a regular file: a directory")
    True
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop: {p}"
        if os.path.islink(p):
            return f"dangling symbolic link (its target does not exist): {p} -> {os.readlink(p)}"
        if exc.errno == errno.ENOENT:
            return f"no such file: {p}"
        return f"cannot read {p}: {exc.strerror or exc}"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), f"a special file (mode {stat.filemode(mode)})")
    return f"not a regular file: {kind}: {p}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(folders: Iterable[str | os.PathLike], *, older_than_s: float = 3600.0) -> list[str]:
    """Remove the temporaries :func:`atomic_write` left behind under ``folders`` (recursively).

    A temporary is stale when its writer is a process of this host that no longer
    runs, or when it has not been touched for ``older_than_s`` seconds (a writer on
    another host: its liveness cannot be asked). Only names of :data:`TEMP_PATTERN`
    are considered, so nobody else's file is ever removed. Returns the removed paths.
    """
    removed = []
    now = time.time()
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for p in root.rglob(".*.tmp"):
            m = TEMP_PATTERN.fullmatch(p.name)
            if m is None:
                continue
            try:
                st = p.lstat()
                if not stat.S_ISREG(st.st_mode):
                    continue
                mine = m["host"] == _HOST
                if (mine and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))) or now - st.st_mtime > older_than_s:
                    p.unlink()
                    removed.append(str(p))
            except FileNotFoundError:  # its writer finished meanwhile
                continue
    return removed
