"""Process settings for per-track work: the allocator's reuse of large arrays."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from acetate.pipeline import runtime

glibc = pytest.mark.skipif(runtime._glibc() is None, reason="needs glibc (mallopt, malloc_trim)")

# A sequential run in miniature: three 'tracks' that each allocate, fill and free 96 MB
# arrays; the page faults of the last two are counted.
_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from acetate.pipeline import runtime
    if sys.argv[1] == "heap":
        assert runtime.keep_arrays_in_heap()
    def track():
        a = np.ones(12 << 20)  # 96 MB, float64
        b = a * 2.0
        return float(b[-1])
    track()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    track(); track()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    freed = runtime.release_heap(keep_mb=0)
    print(int(freed))
    """
)


def _faults(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


@glibc
def test_large_arrays_are_reused_from_the_heap_track_after_track():
    """By default each track maps fresh pages for its large arrays (a page fault per page);
    with keep_arrays_in_heap the second and third tracks reuse the first one's, and
    release_heap can still hand the free pages back."""
    default_faults, _ = _faults("default")
    heap_faults, released = _faults("heap")
    assert default_faults > 100  # 2 x 192 MB of fresh pages (fewer faults where the kernel gives huge pages)
    assert heap_faults < default_faults / 10, (heap_faults, default_faults)
    assert released == 1


def test_allocator_settings_are_no_ops_without_glibc(monkeypatch):
    monkeypatch.setattr(runtime, "_glibc", lambda: None)
    assert runtime.keep_arrays_in_heap() is False
    assert runtime.release_heap() is False
