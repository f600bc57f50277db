"""Process-level settings for per-track work.

:func:`gc_paused` keeps Python's cyclic garbage collector out of one track's
processing. A track allocates thousands of short-lived small objects (array
headers, tuples of shapes), which trigger collections that scan every object
the process holds (NumPy, SciPy, Arrow: hundreds of thousands); measured with
``perf`` on a 111 s mix, those scans took about 2.5 % of the CPU time of
``acetate master``. Arrays are freed by reference counting either way; cycles
made during a track are collected (young generations only, a cheap pass) when it ends.

Examples
--------
>>> import gc
>>> with gc_paused():
...     gc.isenabled()
False
>>> gc.isenabled()
True
"""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

__all__ = ["gc_paused"]

# The collector is process-wide and a Dask worker runs tracks in several threads: the
# first track in pauses it, the last one out restores it (if it was on at the first).
_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector for the ``with`` block (or a decorated call).

    Nested and concurrent uses (threads of one worker) count: the collector comes
    back on when the last of them ends, and only if it was on when the first began.
    """
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
        # The young generations hold what this track made (nothing is promoted while the
        # collector is off): collect them now, cheaply, so a cycle holding an array never
        # outlives its track even when overlapping tracks keep the collector off.
        gc.collect(1)
