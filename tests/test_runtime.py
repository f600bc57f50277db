"""Process settings for per-track work: the allocator's reuse of large arrays."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from acetate.pipeline.catalogue import runtime

glibc = pytest.mark.skipif(runtime._glibc() is None, reason="needs glibc (mallopt, mallinfo2, malloc_trim)")

# A sequential run in miniature: three 'tracks' that each allocate, fill and free 96 MB
# arrays; the page faults of the last two are counted.
_FAULTS = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from acetate.pipeline.catalogue import runtime
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
    """
)

# A long track frees 200 MB (keep: 150 MB): the first release hands it back, the next
# one leaves the heap alone (no trim at every track end, though glibc still lists the
# chunks as free), an ordinary track (100 MB) changes nothing, a longer one is released.
_RELEASE = textwrap.dedent(
    """
    import numpy as np
    from acetate.pipeline.catalogue import runtime
    assert runtime.keep_arrays_in_heap()
    big = np.ones(25 << 20)  # 200 MB
    pin = np.ones(1 << 17)  # 1 MB allocated above it: the freed chunk is mid-heap
    del big
    out = [runtime.release_heap(keep_mb=150), runtime.release_heap(keep_mb=150)]
    again = np.ones(25 << 19); again[::512] = 2.0; del again  # an ordinary track
    out.append(runtime.release_heap(keep_mb=150))
    a, b = np.ones(25 << 20), np.ones(25 << 20); pin2 = np.ones(1 << 17); del a, b  # a longer one
    out.append(runtime.release_heap(keep_mb=150))
    print(" ".join(str(int(v)) for v in out))
    """
)


def _run(script: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True).stdout.strip()


@glibc
def test_large_arrays_are_reused_from_the_heap_track_after_track():
    """By default each track maps fresh pages for its large arrays (a page fault per page);
    with keep_arrays_in_heap the second and third tracks reuse the first one's."""
    default_faults = int(_run(_FAULTS, "default"))
    heap_faults = int(_run(_FAULTS, "heap"))
    assert default_faults > 100  # 2 x 192 MB of fresh pages (fewer faults where the kernel gives huge pages)
    assert heap_faults < default_faults / 10, (heap_faults, default_faults)


@glibc
def test_free_heap_is_released_once_not_at_every_track():
    assert _run(_RELEASE) == "1 0 0 1"


def test_allocator_settings_are_no_ops_without_glibc(monkeypatch):
    monkeypatch.setattr(runtime, "_glibc", lambda: None)
    assert runtime.keep_arrays_in_heap() is False
    assert runtime.release_heap() is False


@glibc
def test_heap_limit_out_of_range_is_refused():
    assert runtime.keep_arrays_in_heap(0) is False
    assert runtime.keep_arrays_in_heap(1024) is False  # 2 x 1 GiB would not fit mallopt's int
