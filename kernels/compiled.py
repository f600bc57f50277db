"""Compiled CPU loops (Numba) for the one recursion NumPy cannot vectorise: the K-filter.

A biquad cascade is a recursion: every output sample depends on the two
before it. On a GPU it is run in parallel form (CuPy's ``sosfilt``); on one CPU
core the fastest form is the recursion itself, compiled. SciPy's ``sosfilt``
is such a loop, but it runs the channels one after another (or as one
complex signal) and stores the filtered signal, which then takes two more
passes to square, weight and sum between the loudness windows' edges.

:func:`kweighted_sums` does all of it in one loop over the samples: the
K-filter's two sections for every channel (the channels' recursions are
independent, so a core overlaps them), the channel-weighted square (BS.1770-4
eq. 2's ``sum_i G_i y_i^2``) and its sum between the given edges, storing
nothing of the signal's length. The arithmetic is SciPy's transposed direct
form II in float64, operation for operation (so the filtered samples are
bit-identical to ``sosfilt``'s; the sums differ from NumPy's pairwise
``add.reduceat`` by float64 rounding only). On one core it is 3-4x faster
than ``sosfilt`` + square + ``reduceat``.

Numba is installed with Acetate but optional at run time: the loops are
compiled the first time one is wanted (cached on disk where a cache location is
writable, else in memory), and where Numba is missing or cannot compile them,
or with the environment variable ``ACETATE_NO_JIT=1``, :func:`available` is
False and :mod:`acetate.kernels.loudness` filters with SciPy. Mono and stereo
are compiled; other layouts use SciPy. Loading Numba costs a process about
0.4 s once and about 100 MB of memory (LLVM).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["available", "kweighted_sums"]

_LOOP: Any = None  # the compiled loop, once Numba is imported
_TRIED = False


def _compile() -> Any:
    """Import Numba and compile the loops for float32 and float64 samples; None where that
    fails (no Numba, or it cannot compile here): the callers then use SciPy."""
    try:
        import numba
        from numba import float32, float64, int64, types
    except ImportError:
        return None
    # The signatures the meter calls with (rows of a (C, n) array: any layout; read-only,
    # which a writable array converts to and a read-only buffer or mono's stride-0 view
    # needs), compiled eagerly so that a failure shows here, once, and not mid-track.
    samples = [types.Array(t, 2, "A", readonly=True) for t in (float32, float64)]
    sigs = [(t, float64[:, :], float64[:], int64[:], int64, float64[:, :, :]) for t in samples]
    try:
        return _define(numba, sigs, cache=True)  # compiled once per machine, loaded by later processes
    except Exception:  # no writable cache location (read-only install and home): compile in memory
        try:
            return _define(numba, sigs, cache=False)
        except Exception:
            return None


def _define(numba: Any, sigs: list, cache: bool) -> Any:
    # nogil: a Dask worker's threads filter tracks at the same time (as sosfilt, which
    # releases the GIL too). One loop, two channels: mono rides it as a stereo view
    # (:func:`kweighted_sums`).
    def jit(fn: Any) -> Any:
        return numba.njit(sigs, cache=cache, nogil=True)(fn)

    @jit
    def stereo(x: Any, sos: Any, g: Any, starts: Any, end: int, z: Any) -> Any:  # pragma: no cover - compiled
        b00, b01, b02, a01, a02 = sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5]
        b10, b11, b12, a11, a12 = sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5]
        lu0, lu1, lv0, lv1 = z[0, 0, 0], z[0, 0, 1], z[1, 0, 0], z[1, 0, 1]
        ru0, ru1, rv0, rv1 = z[0, 1, 0], z[0, 1, 1], z[1, 1, 0], z[1, 1, 1]
        k = starts.shape[0]
        out = np.empty(k, dtype=np.float64)
        g0, g1 = g[0], g[1]
        xl, xr = x[0], x[1]
        for i in range(-1, k):  # segment -1: the warm-up before starts[0], filtered, not summed
            lo = 0 if i < 0 else starts[i]
            hi = starts[0] if i < 0 else (starts[i + 1] if i + 1 < k else end)
            acc = 0.0
            for j in range(lo, hi):
                sl = np.float64(xl[j])
                sr = np.float64(xr[j])
                yl = b00 * sl + lu0
                yr = b00 * sr + ru0
                lu0 = b01 * sl - a01 * yl + lu1
                ru0 = b01 * sr - a01 * yr + ru1
                lu1 = b02 * sl - a02 * yl
                ru1 = b02 * sr - a02 * yr
                wl = b10 * yl + lv0
                wr = b10 * yr + rv0
                lv0 = b11 * yl - a11 * wl + lv1
                rv0 = b11 * yr - a11 * wr + rv1
                lv1 = b12 * yl - a12 * wl
                rv1 = b12 * yr - a12 * wr
                acc += g0 * (wl * wl) + g1 * (wr * wr)
            if i >= 0:
                out[i] = acc
        z[0, 0, 0], z[0, 0, 1], z[1, 0, 0], z[1, 0, 1] = lu0, lu1, lv0, lv1
        z[0, 1, 0], z[0, 1, 1], z[1, 1, 0], z[1, 1, 1] = ru0, ru1, rv0, rv1
        return out

    return stereo


def available(channels: int, sections: int) -> bool:
    """True when a compiled loop serves ``channels`` channels through ``sections`` biquads
    (1 or 2 channels, 2 sections: the K-filter), Numba is installed and the
    environment does not set ``ACETATE_NO_JIT=1``."""
    global _LOOP, _TRIED
    if sections != 2 or channels not in (1, 2) or os.environ.get("ACETATE_NO_JIT", "") == "1":
        return False
    if not _TRIED:  # two threads may both compile at first: the same loop, harmless
        _LOOP = _compile()
        _TRIED = True
    return _LOOP is not None


def kweighted_sums(
    x: np.ndarray, sos: np.ndarray, weights: np.ndarray, starts: np.ndarray, zi: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Filter ``x`` through a two-section biquad cascade and sum its channel-weighted power
    between edges, in one compiled pass.

    Parameters
    ----------
    x : ndarray, shape (C, m), C in (1, 2)
        Samples (float32 or float64, each row contiguous), filtered in float64.
    sos : ndarray, shape (2, 6)
        Second-order sections ``[b0, b1, b2, 1, a1, a2]`` (``a0`` normalised to 1).
    weights : ndarray, shape (C,)
        Channel weights ``G_i``.
    starts : ndarray of int, shape (k,)
        Strictly increasing segment starts in ``[0, m)``; segment ``i`` is
        ``[starts[i], starts[i + 1])``, the last one runs to ``m``. Samples before
        ``starts[0]`` are filtered (a warm-up) but not summed.
    zi : ndarray, shape (2, C, 2), or None
        Filter state (SciPy's transposed-direct-form-II layout per section and
        channel); None: at rest.

    Returns
    -------
    sums : ndarray, float64, shape (k,)
        ``sum_{n in segment i} sum_c G_c y_c[n]^2``.
    zf : ndarray, shape (2, C, 2)
        The state after the last sample (pass it as ``zi`` for the next chunk).

    Raises
    ------
    ValueError
        A layout no compiled loop serves (check :func:`available` first), a
        ``sos``, ``weights`` or ``zi`` of another shape (or a complex state:
        SciPy's packed stereo one), or ``starts`` not strictly increasing in ``[0, m)``.

    Examples
    --------
    >>> import numpy as np, scipy.signal
    >>> from acetate.kernels import loudness
    >>> x = np.random.default_rng(0).standard_normal((2, 48000)).astype(np.float32)
    >>> sos = loudness.k_weighting_sos(48000)
    >>> starts = np.arange(0, 48000, 4800)
    >>> sums, zf = kweighted_sums(x, sos, np.array([1.0, 1.0]), starts, None)
    >>> y, ref_zf = scipy.signal.sosfilt(sos, x.astype(np.float64), axis=-1, zi=np.zeros((2, 2, 2)))
    >>> bool(np.allclose(sums, np.add.reduceat((y * y).sum(axis=0), starts), rtol=1e-12)), bool(np.array_equal(zf, ref_zf))
    (True, True)
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (channels, samples), got {x.shape}")
    c, m = x.shape
    if not available(c, sos.shape[0]):
        raise ValueError(f"no compiled K-filter loop for {c} channel(s) and {sos.shape[0]} sections (or Numba is absent)")
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    if sos.shape != (2, 6) or not np.all(sos[:, 3] == 1.0):
        raise ValueError(f"sos must be two normalised sections (shape (2, 6), a0 = 1), got shape {sos.shape}")
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if weights.shape != (c,):
        raise ValueError(f"weights must hold one value per channel ({c}), got shape {weights.shape}")
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    if starts.size and (starts[0] < 0 or starts[-1] >= m or np.any(np.diff(starts) <= 0)):
        raise ValueError(f"starts must increase strictly within [0, {m}), got {starts[:3].tolist()}...{starts[-3:].tolist()}")
    if zi is not None and (np.shape(zi) != (2, c, 2) or np.iscomplexobj(zi)):
        raise ValueError(f"zi must be a real state of shape (2, {c}, 2), got {np.asarray(zi).dtype} {np.shape(zi)}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.strides[-1] != x.itemsize:
        x = np.ascontiguousarray(x)
    z = np.zeros((2, 2, 2), dtype=np.float64)
    if zi is not None:
        z[:, :c] = zi
    if c == 1:  # mono runs as stereo whose second channel reads the first (a stride-0 view) at
        # weight 0: its recursion rides alongside in the core's spare lanes (1.25x a mono-only loop)
        x = np.broadcast_to(x, (2, m))
        weights = np.array([weights[0], 0.0])
    edges = starts if starts.size else np.array([m], dtype=np.int64)  # no segment: all warm-up
    sums = _LOOP(x, sos, weights, edges, m, z)
    return sums[: starts.size], z[:, :c].copy()
