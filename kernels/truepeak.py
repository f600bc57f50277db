"""Sample peak and true peak (ITU-R BS.1770-4 Annex 2).

True peak is the maximum absolute value of the signal oversampled by an
integer ratio with a low-pass interpolation filter. The Recommendation's
4x, 48-tap example filter is available as ``filter="annex"``; the default is a
longer Kaiser-windowed sinc (``filter="kaiser"``, 48 taps a phase) whose pass
band is flat to 0.45 fs (the Annex filter's half-sample phase droops there). An oversampling meter under-reads a peak that falls between
its points: by up to 0.55 dB at 4x near 0.45 fs, 0.14 dB at 8x, 0.03 dB at 16x
(STANDARDS.md), so ceiling checks use ``oversample=8`` or more.

Computation is exact and pruned: the interpolated value at any point is bounded
by ``max|x|`` over the filter's support times the phase's L1 norm, so only the
neighbourhoods that could reach the sample peak are interpolated (block-Toeplitz
matrix products, a stretch of the track at a time); at 16x the 4x values bound
the rest (:func:`true_peak_pair`).

Examples
--------
>>> import numpy as np
>>> fs = 48000
>>> n = np.arange(fs)
>>> fade = np.minimum(1.0, np.minimum(n, n[::-1]) / 4800)  # 100 ms fades: no onset overshoot
>>> x = np.tile(0.5 * fade * np.sin(2 * np.pi * n / 4 + np.pi / 4), (2, 1))  # samples at +-0.354
>>> round(float(20 * np.log10(true_peak(x, fs).max())), 1)
-6.0
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np

from . import backend, units

__all__ = ["sample_peak", "true_peak", "true_peak_pair", "interpolation_filter", "interpolation_gain", "to_db", "default_oversample"]

# BS.1770-4 Annex 2 example: 48 taps, 4 phases of 12.
_ANNEX_PHASE0 = [
    0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000, -0.0594482421875, 0.1373291015625,
    0.9721679687500, -0.1022949218750, 0.0476074218750, -0.0266113281250, 0.0148925781250, -0.0083007812500,
]  # fmt: skip
_ANNEX_PHASE1 = [
    -0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250, -0.1665039062500, 0.4650878906250,
    0.7797851562500, -0.2003173828125, 0.1015625000000, -0.0582275390625, 0.0330810546875, -0.0189208984375,
]  # fmt: skip

#: Taps per phase of the default Kaiser interpolator.
#: 48 taps a phase, Kaiser beta 6: every phase is flat within 0.02 dB up to
#: 0.4535 fs (20 kHz at 44.1 kHz) and -0.43 dB at 0.47 fs, so content near
#: Nyquist is not under-read (a 24-tap, beta 8 design lost 1.7 dB at 0.45 fs);
#: images are below -60 dB.
TAPS_PER_PHASE = 48
_KAISER_BETA = 6.0
_CHUNK = 1 << 20


def to_db(peak_linear: Any) -> Any:
    """20 log10 of a linear peak; -inf for 0 (:func:`acetate.kernels.units.amplitude_to_db`)."""
    return units.amplitude_to_db(peak_linear)


def default_oversample(fs: float) -> int:
    """BS.1770-4's minimum ratio: 4x below 96 kHz, 2x from 96 kHz, 1x from 192 kHz."""
    return 4 if fs < 96000 else (2 if fs < 192000 else 1)


@functools.cache
def interpolation_filter(oversample: int, kind: Literal["kaiser", "annex"] = "kaiser") -> np.ndarray:
    """Polyphase interpolation filter, shape (oversample, taps_per_phase), host float64.

    Row ``k`` gives the output at fractional position ``k / oversample`` when
    correlated with ``taps_per_phase`` consecutive input samples. Cached and
    read-only: copy it to change it.
    """
    if kind == "annex":
        if oversample != 4:
            raise ValueError(f"the BS.1770 Annex 2 filter is 4x only; got oversample={oversample}")
        p0, p1 = np.array(_ANNEX_PHASE0), np.array(_ANNEX_PHASE1)
        return backend.read_only(np.stack([p0, p1, p1[::-1], p0[::-1]]))
    if kind != "kaiser":
        raise ValueError(f"filter must be 'kaiser' or 'annex', got {kind!r}")
    if oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    if oversample == 1:
        return backend.read_only(np.ones((1, 1)))
    t = TAPS_PER_PHASE
    # Continuous-time sinc interpolator sampled at the fractional offsets,
    # tapered by a Kaiser window over the t-sample support.
    pos = np.arange(t)[None, :] - (t // 2 - 1) - np.arange(oversample)[:, None] / oversample  # (phase, tap)
    window = np.kaiser(t * oversample + 1, _KAISER_BETA)
    h = np.sinc(pos) * window[np.round((pos + t / 2) * oversample).astype(int).clip(0, t * oversample)]
    # Unity DC gain per phase.
    return backend.read_only(h / h.sum(axis=1, keepdims=True))


def interpolation_gain(oversample: int, kind: Literal["kaiser", "annex"] = "kaiser") -> float:
    """Largest L1 norm of a phase of the interpolator: ``true_peak(e) <= gain * max|e|``.

    Bounds how far the true peak can move when the samples move by at most
    ``max|e|`` (rounding, dither): ``|tp(x + e) - tp(x)| <= gain * max|e|``.

    Examples
    --------
    >>> round(interpolation_gain(16), 2)  # the half-sample phase of a 48-tap sinc
    2.74
    """
    return float(np.abs(interpolation_filter(int(oversample), kind)).sum(axis=1).max())


def sample_peak(x: Any) -> Any:
    """Per-channel maximum absolute sample value (linear), shape (channels,)."""
    xp = backend.namespace(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[-1] == 0:
        return xp.zeros(x.shape[0], dtype=xp.float64)
    # max and -min: two reads of x, no |x| temporary of the track's size (NaN propagates as with abs)
    return xp.astype(xp.maximum(xp.max(x, axis=-1), -xp.min(x, axis=-1)), xp.float64) + 0.0  # + 0.0: never -0.0


def _phase_outputs(x: Any, h: Any, centres: Any, xp: Any) -> Any:
    """Interpolated values in all phases at the given sample positions.

    Returns shape (channels, len(centres), phases): for phase k at centre c the
    value between sample c and c+1 at offset k/oversample.
    """
    t = h.shape[1]
    left = t // 2 - 1
    idx = centres[:, None] + (xp.arange(t)[None, :] - left)  # (m, t)
    idx = backend.clip(idx, 0, x.shape[1] - 1)
    valid = (centres[:, None] + (xp.arange(t)[None, :] - left) >= 0) & (centres[:, None] + (xp.arange(t)[None, :] - left) < x.shape[1])
    win = xp.where(valid[None], x[:, idx], 0.0)  # (c, m, t); zeros outside the signal
    return win @ h.T  # (c, m, phases)


def _block_filter(h_host: np.ndarray, block: int) -> tuple[np.ndarray, int, float]:
    """Block-Toeplitz form of the interpolator for blocks of ``block`` centres (built once per
    interpolator and block size, read-only: see :func:`_build_block_filter`)."""
    key = (h_host.shape, h_host.tobytes(), int(block))
    hit = _BLOCK_FILTERS.get(key)
    if hit is None:
        hit = _BLOCK_FILTERS[key] = _build_block_filter(np.asarray(h_host, dtype=np.float64), int(block))
    return hit


#: :func:`_block_filter`'s designs, by interpolator and block size (a handful per process).
_BLOCK_FILTERS: dict = {}


def _build_block_filter(h_host: np.ndarray, block: int) -> tuple[np.ndarray, int, float]:
    """Block-Toeplitz form of the interpolator for blocks of ``block`` centres.

    Phases that are a unit impulse (phase 0 of the sinc interpolator) are left
    out: they reproduce the samples, which the sample peak already covers.
    Returns ``T`` of shape (nq * block, kept_phases * block) such that the
    values at centres ``bB .. bB + B - 1`` are ``concat(x[bB - left : ...]) @ T``,
    the number ``nq`` of input blocks each output block reads, and the largest
    L1 norm of a kept phase (the gain of the pruning bound).
    """
    p, t = h_host.shape
    keep = [k for k in range(p) if not np.allclose(h_host[k], np.eye(t)[t // 2 - 1], rtol=0.0, atol=1e-12)]
    if not keep:  # cannot happen for a real interpolator; keep everything rather than nothing
        keep = list(range(p))
    hk = h_host[keep]
    nq = -(-(block + t - 1) // block)
    tm = np.zeros((nq * block, len(keep) * block))
    for i in range(block):  # tiny host-side setup, not a per-sample loop
        tm[i : i + t, i * len(keep) : (i + 1) * len(keep)] = hk.T
    return backend.read_only(tm), nq, float(np.abs(hk).sum(axis=1).max())


#: Centres per block of the block-Toeplitz interpolation (a small matrix
#: product per block: 12 keeps the work near the polyphase minimum).
_BLOCK = 12
#: Blocks per matrix product on the CPU (keeps the operands in cache).
_CPU_ROWS = 4096


def _row_absmax(blk: Any, xp: Any) -> Any:
    """max |blk| along short rows, as a tree of elementwise maxima (a plain
    ``max(axis=1)`` over 12-element rows is several times slower on NumPy).

    Rows whose length is a multiple of 4 first take the maximum of each group of
    four, from a (rows, w / 4, 4) view: 2.2x faster than halving whole rows, whose
    operands are short strided pieces."""
    a = xp.abs(blk)
    r, w = a.shape
    if w % 4 == 0 and w >= 8:
        a4 = xp.reshape(a, (r, w // 4, 4))
        a = xp.maximum(xp.maximum(a4[:, :, 0], a4[:, :, 1]), xp.maximum(a4[:, :, 2], a4[:, :, 3]))
    while a.shape[1] > 1:
        h = a.shape[1] // 2
        m = xp.maximum(a[:, :h], a[:, h : 2 * h])
        a = xp.concat([m, a[:, 2 * h :]], axis=1) if a.shape[1] % 2 else m
    return a[:, 0]


def true_peak(
    x: Any,
    fs: float,
    *,
    oversample: int | None = None,
    filter: Literal["kaiser", "annex"] = "kaiser",
    chunk: int = _CHUNK,
    sample_peaks: Any = None,
) -> Any:
    """Per-channel true peak (linear) by oversampled interpolation.

    Parameters
    ----------
    x : array, shape (channels, n) or (n,)
        Audio on NumPy or CuPy. Interpolated in float64 for float64 input,
        otherwise in float32 (float32 audio: the values agree with a float64
        evaluation to float32 rounding, ~1e-7 relative).
    fs : float
        Sample rate in hertz (used for the default ratio).
    oversample : int, optional
        Oversampling ratio; default :func:`default_oversample` (BS.1770's
        4x below 96 kHz). Use 8 or 16 for ceiling checks.
    filter : {"kaiser", "annex"}
        Interpolator: a 48-tap-per-phase Kaiser sinc (default) or the
        BS.1770-4 Annex 2 example (4x only).
    chunk : int
        Samples per channel interpolated at once (bounds working memory; on
        the CPU at most 49k samples are taken at once, which keeps operands in cache).
    sample_peaks : array, shape (channels,), optional
        ``sample_peak(x)``, when the caller has it already (a meter reports both):
        not read from ``x`` again. It must be exactly that: the search skips
        the blocks that cannot beat it.

    Returns
    -------
    peak : array of float64, shape (channels,)
        Never below the sample peak. Interpolated points are those between
        sample ``c`` and ``c + 1`` for ``c = 0 .. n - 1`` (the signal is zero
        outside ``[0, n)``).

    Notes
    -----
    Every value is computed exactly (same filter, same points as a full
    polyphase pass); only blocks that provably cannot beat the sample peak
    are skipped (:func:`_block_maxima`). The signal is cut into blocks of
    ``_BLOCK`` centres; a block's values are one matrix product of the
    ``nq`` input blocks it reads with a block-Toeplitz form of the filter,
    over many blocks at once. A block's values are bounded by the largest
    |sample| it reads times the largest L1 norm of a phase, so quiet
    passages are not interpolated. The track is read a stretch at a time
    (no padded copy of it). Kaiser ratios that are multiples of 4 above 4
    go through :func:`true_peak_pair`'s two-stage search.
    """
    xp = backend.namespace(x)
    if x.ndim == 1:
        x = x[None, :]
    ratio = default_oversample(fs) if oversample is None else int(oversample)
    if ratio < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    c, n = int(x.shape[0]), int(x.shape[1])
    sp = _given_sample_peaks(x, sample_peaks)
    if ratio == 1 or n == 0:
        return sp
    if filter == "kaiser" and ratio > _COARSE and ratio % _COARSE == 0:
        return _coarse_fine(x, ratio, chunk, xp, sp)[1]
    h_host = interpolation_filter(ratio, filter)
    work = xp.float64 if x.dtype == xp.float64 else xp.float32
    nq = _block_filter(h_host, _BLOCK)[1]
    body = -(-n // _BLOCK) - 1
    tail = _last_block(x, h_host, body, nq, work, xp)  # the last block reaches past the end
    floor = xp.maximum(xp.astype(sp, work), xp.max(xp.abs(xp.reshape(tail, (c, -1))), axis=1))
    bmax = _block_maxima(x, h_host, floor, chunk, xp)[0]
    if body > 0:
        floor = xp.maximum(floor, xp.max(bmax, axis=1))
    return xp.maximum(sp, xp.astype(floor, xp.float64))


#: Coarse ratio of the two-stage search; the Kaiser design's phases at
#: multiples of ``ratio / _COARSE`` are exactly the 4x interpolator's.
_COARSE = 4


@functools.cache
def _fine_residual(ratio: int, coarse: int = _COARSE) -> float:
    """Largest L1 norm of a fine phase minus the linear interpolation of its two
    neighbouring coarse phases (0.119 at 16x over 4x with the default filter).

    Between coarse points ``v0, v1`` a fine value is ``(1-w) v0 + w v1 + r . x``,
    so ``|fine| <= max(|v0|, |v1|) + residual * max|x|`` over the filter's support.
    """
    h = interpolation_filter(ratio)
    t = h.shape[1]
    step = ratio // coarse
    ends = np.zeros((2, t))
    ends[0, t // 2 - 1] = 1.0  # the sample itself (phase 0)
    ends[1, t // 2] = 1.0  # the next sample (phase `ratio`)
    rows = [h[j] for j in range(0, ratio, step)] + [ends[1]]
    rows[0] = ends[0]
    worst = 0.0
    for j in range(ratio):
        if j % step == 0:
            continue
        k, w = j // step, (j % step) / step
        worst = max(worst, float(np.abs(h[j] - ((1.0 - w) * rows[k] + w * rows[k + 1])).sum()))
    return worst


def true_peak_pair(x: Any, fs: float, *, oversample: int = 16, chunk: int = _CHUNK, sample_peaks: Any = None) -> tuple[Any, Any]:
    """Per-channel true peaks at 4x and at ``oversample`` (a multiple of 4) in one search.

    The 4x interpolator's phases are among the finer one's (same Kaiser design),
    so the 4x values are computed first (a fifth of the 16x work; not in blocks
    whose samples are too small to reach the sample peak through any phase); a
    fine value lies within ``residual * max|x|`` of the linear interpolation of
    its two coarse neighbours (:func:`_fine_residual`), so only the blocks
    whose bound reaches the 4x peak are interpolated finely. Both results are
    exact: the same values as ``true_peak(x, fs, oversample=4)`` and
    ``true_peak(x, fs, oversample=oversample)`` (float32 rounding aside).

    Returns
    -------
    (peak4, peak) : arrays of float64, shape (channels,)

    Examples
    --------
    >>> import numpy as np
    >>> n = np.arange(48000)
    >>> fade = np.minimum(1.0, np.minimum(n, n[::-1]) / 4800)  # no onset overshoot
    >>> x = np.tile(0.5 * fade * np.sin(2 * np.pi * 0.45 * n + 0.3), (2, 1)).astype(np.float32)
    >>> p4, p16 = true_peak_pair(x, 48000)
    >>> bool(np.all(p4 <= p16)), round(float(p16.max()), 3)
    (True, 0.5)
    """
    xp = backend.namespace(x)
    if x.ndim == 1:
        x = x[None, :]
    ratio = int(oversample)
    if ratio <= _COARSE or ratio % _COARSE:
        raise ValueError(f"oversample must be a multiple of {_COARSE} above it, got {oversample!r}")
    sp = _given_sample_peaks(x, sample_peaks)
    if x.shape[1] == 0:
        return sp, sp
    return _coarse_fine(x, ratio, chunk, xp, sp)


def _given_sample_peaks(x: Any, sample_peaks: Any) -> Any:
    """``sample_peak(x)``: measured, or the caller's (float64, one per channel, checked for shape)."""
    if sample_peaks is None:
        return sample_peak(x)
    xp = backend.namespace(x)
    sp = xp.reshape(xp.astype(xp.asarray(sample_peaks), xp.float64), (-1,))
    if sp.shape[0] != x.shape[0]:
        raise ValueError(f"sample_peaks must hold one value per channel ({x.shape[0]}), got shape {tuple(xp.asarray(sample_peaks).shape)}")
    return sp


def _padded_rows(x: Any, b0: int, b1: int, nq: int, bsz: int, left: int, work: Any, xp: Any) -> Any:
    """Rows ``b0 .. b1 + nq - 2`` of the zero-padded block layout (padded sample ``j`` is
    ``x[j - left]``), shape (channels, rows, bsz): what centre blocks ``b0 .. b1 - 1`` read.
    A copy of this stretch only, never of the whole track."""
    c, n = x.shape
    lo, hi = b0 * bsz - left, (b1 + nq - 1) * bsz - left  # x's samples covered
    seg = xp.zeros((c, hi - lo), dtype=work)
    a, b = max(lo, 0), min(hi, n)
    if b > a:
        seg[:, a - lo : b - lo] = x[:, a:b]  # cast on assignment
    return xp.reshape(seg, (c, -1, bsz))


def _last_block(x: Any, h_host: np.ndarray, body: int, nq: int, work: Any, xp: Any) -> Any:
    """Every phase's values at the centres of the last block (it reaches past the end),
    centres at or after ``n`` dropped, shape (channels, centres, phases)."""
    c, n = x.shape
    t = h_host.shape[1]
    last = xp.reshape(_padded_rows(x, body, body + 1, nq, _BLOCK, t // 2 - 1, work, xp), (c, -1))
    idx = xp.arange(n - body * _BLOCK)[:, None] + xp.arange(t)[None, :]
    return backend.take(xp, last, idx, axis=1) @ backend.to_device(h_host.T, xp, dtype=work)


def _chunking(chunk: int, xp: Any) -> tuple[int, int]:
    """(blocks per matrix product, blocks per stretch of the track read at once)."""
    rows_cap = max(1, (chunk if backend.is_gpu(xp) else min(chunk, _CPU_ROWS * _BLOCK)) // _BLOCK)
    per = max(rows_cap, (chunk // _BLOCK) if backend.is_gpu(xp) else 16 * rows_cap)
    return rows_cap, per


def _block_maxima(x: Any, h_host: np.ndarray, floor: Any, chunk: int, xp: Any, *, min_gain: float = 1.0) -> tuple[Any, Any, Any]:
    """Per centre block (all but the last): the largest |interpolated value| over the
    kept phases of ``h_host``, the largest |sample| of the block's own samples and the
    one after it, and the largest |sample| over its whole support; each (c, blocks).

    Blocks whose support bound (``gain * max|x|``, ``gain`` the largest phase L1 norm
    and at least ``min_gain``) cannot exceed ``floor`` (per channel) are not
    interpolated; their maximum is left 0. The track is read a stretch of
    ``chunk`` samples at a time through a padded copy of that stretch only.
    """
    c, n = int(x.shape[0]), int(x.shape[1])
    t = h_host.shape[1]
    left = t // 2 - 1
    bsz = _BLOCK
    tm_host, nq, gain = _block_filter(h_host, bsz)
    gain = max(gain, min_gain) * (1.0 + 1e-4)  # |any value| <= gain * max|x| over its support
    work = xp.float64 if x.dtype == xp.float64 else xp.float32
    tm = backend.to_device(tm_host, xp, dtype=work)
    body = -(-n // bsz) - 1
    rows_cap, per = _chunking(chunk, xp)
    # A block's samples and the one after it lie in its rows r0 .. r1; its whole support in rows 0 .. nq - 1.
    r0, r1 = left // bsz, (left + bsz) // bsz
    bmax = xp.zeros((c, max(body, 0)), dtype=work)
    own = xp.zeros((c, max(body, 0)), dtype=work)
    a_sup = xp.zeros((c, max(body, 0)), dtype=work)
    for b0 in range(0, max(body, 0), per):  # stretches of the track (seconds each), not samples
        b1 = min(body, b0 + per)
        rows = _padded_rows(x, b0, b1, nq, bsz, left, work, xp)  # (c, b1 - b0 + nq - 1, bsz)
        rmax = xp.reshape(_row_absmax(xp.reshape(rows, (-1, bsz)), xp), (c, -1))
        m_ = b1 - b0
        sup = rmax[:, :m_]
        for s_ in range(1, nq):
            sup = xp.maximum(sup, rmax[:, s_ : s_ + m_])
        mine = rmax[:, r0 : r0 + m_]
        for s_ in range(r0 + 1, r1 + 1):
            mine = xp.maximum(mine, rmax[:, s_ : s_ + m_])
        a_sup[:, b0:b1] = sup
        own[:, b0:b1] = mine
        for ch in range(c):  # channels: a handful
            blk = rows[ch, ...]
            need = xp.nonzero(gain * sup[ch, ...] > floor[ch])[0]
            k = int(need.shape[0])
            if k > m_ // 2 or not backend.is_native(xp):  # most blocks (or no scatter in the standard): contiguous slices
                bmax[ch, b0:b1] = xp.concat(
                    [_rows_absmax_each(blk, slice(a, min(m_, a + rows_cap)), tm, nq, bsz, xp) for a in range(0, m_, rows_cap)]
                )
            else:
                for a in range(0, k, rows_cap):
                    idx = need[a : min(k, a + rows_cap)]
                    bmax[ch, b0 + idx] = _rows_absmax_each(blk, idx, tm, nq, bsz, xp)
    return bmax, own, a_sup


def _coarse_fine(x: Any, ratio: int, chunk: int, xp: Any, sp: Any) -> tuple[Any, Any]:
    """(4x peak, ``ratio`` peak) per channel; see :func:`true_peak_pair` (``sp``: the sample peaks).

    The track is read a stretch of ``chunk`` samples at a time (a padded copy of
    that stretch), twice at most: the 4x values of the blocks that could reach
    the sample peak, then the fine values of the blocks whose bound reaches the
    4x peak. Per block only a few numbers are kept (its 4x maximum and the
    largest |sample| it reads), so memory is O(n / 12), not a copy of the track.
    """
    c, n = int(x.shape[0]), int(x.shape[1])
    hf = interpolation_filter(ratio)
    hc = interpolation_filter(_COARSE)
    t = hf.shape[1]
    left = t // 2 - 1
    bsz = _BLOCK
    _, nq, _ = _block_filter(hc, bsz)
    tmf_host, nqf, _ = _block_filter(hf, bsz)
    work = xp.float64 if x.dtype == xp.float64 else xp.float32
    tmf = backend.to_device(tmf_host, xp, dtype=work)
    body = -(-n // bsz) - 1
    # The last centre block, exactly at both ratios, on its own.
    tail = _last_block(x, hf, body, nq, work, xp)  # (c, n_last, ratio)
    step = ratio // _COARSE
    tail_fine = xp.max(xp.abs(xp.reshape(tail, (c, -1))), axis=1)
    tail_coarse = xp.max(xp.abs(xp.reshape(tail[:, :, ::step], (c, -1))), axis=1)
    floor0 = xp.maximum(xp.astype(sp, work), xp.astype(tail_coarse, work))  # (c,): <= the 4x peak
    rho = _fine_residual(ratio) * (1.0 + 1e-4)  # slack for float rounding
    rows_cap, per = _chunking(chunk, xp)
    # 1. coarse (4x) maxima of the blocks that could reach the sample peak; a block
    # skipped there (gain * max|x| <= floor, with gain >= 1 + rho) cannot survive below.
    cmax, own, a_sup = _block_maxima(x, hc, floor0, chunk, xp, min_gain=1.0 + rho)
    coarse = xp.maximum(floor0, xp.max(cmax, axis=1)) if body > 0 else floor0
    # 2. fine values only where max(coarse, samples) + rho * max|x| can reach the floor
    floor = xp.maximum(coarse, xp.astype(tail_fine, work))
    if body > 0:
        bound = xp.maximum(cmax, own) + rho * a_sup
        alive = bound > floor[:, None]  # (c, body)
        taps = xp.arange(nqf * bsz) - left  # a block's support, relative to its first centre
        fine = []
        for ch in range(c):  # channels: a handful
            survivors = xp.nonzero(alive[ch, ...])[0]
            k = int(survivors.shape[0])
            f = xp.zeros((), dtype=work)
            if k > body // 2:  # dense: every block, stretch by stretch, contiguous slices
                for b0 in range(0, body, per):
                    b1 = min(body, b0 + per)
                    blk = _padded_rows(x[ch : ch + 1, :], b0, b1, nqf, bsz, left, work, xp)[0, ...]
                    for a in range(0, b1 - b0, rows_cap):
                        f = xp.maximum(f, xp.max(_rows_absmax_each(blk, slice(a, min(b1 - b0, a + rows_cap)), tmf, nqf, bsz, xp)))
            else:  # the few blocks that can reach: their supports gathered from the track
                for a in range(0, k, rows_cap):
                    pos = survivors[a : min(k, a + rows_cap), None] * bsz + taps[None, :]  # (k', nq * bsz)
                    inside = (pos >= 0) & (pos < n)
                    win = xp.where(inside, xp.astype(x[ch, backend.clip(pos, 0, n - 1)], work), 0.0)
                    vals = win @ tmf
                    f = xp.maximum(f, xp.maximum(xp.max(vals), -xp.min(vals)))
            fine.append(f)
        floor = xp.maximum(floor, xp.stack(fine))
    p4 = xp.maximum(sp, xp.astype(coarse, xp.float64))
    pf = xp.maximum(p4, xp.astype(floor, xp.float64))
    return p4, pf


def _rows_absmax_each(blk: Any, rows: Any, tm: Any, nq: int, block: int, xp: Any) -> Any:
    """Largest |interpolated value| of each centre block whose first input rows are
    ``rows`` (a slice or an index array), shape (len,).

    One matrix product, transposed: (phases x centres, nq * block) times the
    ``nq`` input rows each block reads, stacked as columns, so that the
    per-block maximum is a reduction over the leading axis (elementwise maxima
    of long rows, not a short-axis reduction).
    """
    # The columns are transposed once: the rows the blocks read, as (block, rows) in C order,
    # then the nq shifted copies are slices of contiguous rows (one transpose, not one per shift).
    if isinstance(rows, slice):
        a, b = rows.start, rows.stop
        t = xp.empty((block, b - a + nq - 1), dtype=blk.dtype)
        t[...] = blk[a : b + nq - 1, :].T
        cols = xp.concat([t[:, s : s + b - a] for s in range(nq)], axis=0)  # (nq * block, blocks)
    else:
        g = xp.reshape(backend.take(xp, blk, rows[:, None] + xp.arange(nq)[None, :], axis=0), (-1, nq * block))  # (blocks, nq * block)
        cols = xp.empty((nq * block, g.shape[0]), dtype=blk.dtype)
        cols[...] = g.T
    vals = tm.T @ cols
    return xp.maximum(xp.max(vals, axis=0), -xp.min(vals, axis=0))
