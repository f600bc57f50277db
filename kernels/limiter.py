"""A true-peak look-ahead limiter, sample-aligned, and its sparse exact meter.

:func:`true_peak_limit` holds a ceiling on the project's true-peak meter
(:func:`acetate.kernels.truepeak.true_peak`, the polyphase Kaiser interpolator
at ``verify_oversample``, 16x by default), optionally on libebur128's
interpolator too; :func:`limiter_gain` is the plain look-ahead limiter gain of
given absolute values.

Design: everything runs at the base rate, memory O(n). The value of the meter
at centre ``c`` (sample index) and phase ``k`` is ``sum_j h[k, j] x[c + j - left]``
with zeros outside the track, for every centre whose support touches the track
(``c`` in ``[-right, n - 1 + left]``). ``_Meter`` screens it rigorously:

1. blocks of centres whose samples (over the filter support) times the largest
   phase L1 norm cannot reach the threshold are skipped;
2. a 2x pre-screen (the samples and the half-sample midpoints) bounds every value
   either meter reads in a block; the blocks it cannot rule out get the
   ``oversample`` (4x) phases by one matrix product per chunk of blocks (a banded
   block-Toeplitz matrix, float32);
3. every fine phase is bounded by the nearest coarse values:
   ``|f_k| <= F * max(coarse neighbours) + rho * max|x| (support)``, with ``F``
   and ``rho`` from a small linear programme on the filters
   (``h_fine[k] = sum_i w_i h_coarse[i] + r``, ``F = sum|w|``, ``rho = sum|r|``,
   :func:`_screen_bound`); only centres whose bound reaches the threshold get all
   fine phases, exactly as the meter computes them (float64).

The needed gain is then held on a grid of knots every ``_KNOT`` samples (each
knot at most the needed gain of the centres on both sides of it), smoothed there
by the parallel forms of :mod:`acetate.kernels.windows` (look-ahead ramp: a
forward running minimum then a backward moving average; release linear in dB: a
running minimum of the gain less a line, added back) and interpolated linearly
between knots (:class:`KnotGain`): a value between two knots is at most the
larger of them, so the gain at every sample stays at or below the gain its
neighbouring peaks need. Where the needs are sparse, the smoothing runs only on
the stretches around them (``_gain_from_need``). Output samples change only
where the gain is below 1; only there (plus the meter's support) is the output
measured again, and any remaining over is corrected locally by lowering the
need there and smoothing again (which can only lower the gain).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from . import backend, units
from .windows import _attack_lookahead, _check_time, _check_width, _release_linear_db

__all__ = [
    "KnotGain",
    "limiter_gain",
    "true_peak_limit",
]

_KNOT = 8  # samples between gain knots (0.17 ms at 48 kHz)
_SCREEN_CHUNK = 8192  # blocks per matrix product (8192 x 32 centres)
_APPLY_STRETCH = 1 << 15  # knot intervals per step of a dense gain application on a CPU (262144 samples)
_EPS_REL = 1e-6  # relative slack for float32 coarse values and summation order


def limiter_gain(
    peak_abs: Any,
    ceiling_lin: float,
    lookahead_samples: int,
    release_samples: float,
    *,
    release_ref_db: float = 10.0,
) -> Any:
    """Look-ahead limiter gain from absolute sample values (linked across channels).

    Needed gain ``g = min(1, ceiling / |x|)``; then a forward running minimum
    over ``lookahead_samples`` and a backward moving average over the same
    length (a linear ramp into every peak, never above the needed gain), then
    a release linear in dB (exact closed form).

    Parameters
    ----------
    peak_abs : array, shape (n,) or (C, n)
        ``|x|`` (usually of the oversampled signal); several channels are
        linked by their maximum.
    ceiling_lin : float
        Ceiling, linear full scale (> 0).
    lookahead_samples : int
        Attack / look-ahead length ``L``, samples (>= 1).
    release_samples : float
        Samples to recover ``release_ref_db`` dB (> 0).
    release_ref_db : float
        Recovery, dB, in ``release_samples`` (default 10 dB).

    Returns
    -------
    gain : array, shape (n,), float64, ``0 < gain <= 1``; exactly 1 wherever
        no reduction is needed within reach of the look-ahead and release.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.full(100, 0.5); p[50] = 2.0
    >>> g = limiter_gain(p, 1.0, 10, 100)
    >>> float(g[50]), float(g[0])
    (0.5, 1.0)
    """
    xp = backend.namespace(peak_abs)
    if not (math.isfinite(ceiling_lin) and ceiling_lin > 0):
        raise ValueError(f"ceiling_lin must be a positive linear level, got {ceiling_lin!r}")
    lookahead_samples = _check_width(lookahead_samples)
    if not (math.isfinite(release_samples) and release_samples > 0):
        raise ValueError(f"release_samples must be a positive number of samples, got {release_samples!r}")
    if peak_abs.ndim == 2:
        peak = xp.max(xp.abs(peak_abs), axis=0)
    elif peak_abs.ndim == 1:
        peak = xp.abs(peak_abs)
    else:
        raise ValueError(f"peak_abs must have shape (n,) or (C, n), got {peak_abs.shape}")
    peak = xp.astype(peak, xp.float64)
    if not bool(xp.all(xp.isfinite(peak))):
        raise ValueError("peak_abs must be finite")
    n = peak.shape[0]
    if n == 0 or not bool(xp.any(peak > ceiling_lin)):
        return xp.ones(n, dtype=xp.float64)
    need = ceiling_lin / xp.maximum(peak, ceiling_lin)  # exactly 1 where not over
    return _gain_from_need(xp, need, lookahead_samples, release_samples, release_ref_db)


def _max_channels(xp: Any, a: Any, absolute: bool = False) -> Any:
    """Maximum (of ``|a|``) over the first axis by elementwise maxima, one channel at a time."""
    out = xp.abs(a[0, ...]) if absolute else a[0, ...]
    for k in range(1, a.shape[0]):
        out = xp.maximum(out, xp.abs(a[k, ...]) if absolute else a[k, ...])
    return out


def _halve_max(xp: Any, a: Any) -> Any:
    """Maximum over the last axis (a power of two long) by pairwise halving."""
    while a.shape[-1] > 1:
        h = a.shape[-1] // 2
        a = xp.maximum(a[..., :h], a[..., h:])
    return a[..., 0]


def _libebur128_filter(factor: int, t: int) -> np.ndarray:
    """libebur128's true-peak interpolator (49-tap Hann-windowed sinc, ``factor`` phases,
    not normalised) in the ``(phase, t)`` layout of truepeak's filters: row ``f`` gives
    the value at ``c + f / factor`` from ``x[c + j - (t // 2 - 1)]``."""
    taps, left = 49, t // 2 - 1
    delay = (taps - 1) // 2 // factor
    h = np.zeros((factor, t))
    for j in range(taps):
        m = j - (taps - 1) / 2
        c = np.sinc(m / factor) * 0.5 * (1 - np.cos(2 * np.pi * j / (taps - 1)))
        h[j % factor, left + delay - j // factor] += c
    return h


def _libebur128_factor(fs: float) -> int:
    """libebur128's true-peak oversampling: 4x below 96 kHz, 2x below 192 kHz, else none."""
    return 4 if fs < 96000 else (2 if fs < 192000 else 1)


def _screen_bound(basis: np.ndarray, targets: list) -> tuple[float, float]:
    """``(f, rho)`` with ``|v(c + pos)| <= f * max|b| + rho * max|x|`` for every target.

    ``basis`` (coarse, t) holds an interpolator's phases (row 0 the sample itself); ``b``
    are its values at the positions within ``1 / coarse`` of a target's position ``pos``
    (centres ``c - 1 .. c + 1``); ``targets`` are ``(row, pos)`` pairs of filters in the
    same tap layout, ``max|x|`` runs over the target's support widened by a sample each
    side. Each target is written as a combination of the basis values plus a residual
    filter by a linear programme minimising the two L1 norms; ``f`` and ``rho`` are
    their largest sums over the targets (``f >= 1``: the samples bound themselves).
    """
    from scipy.optimize import linprog

    coarse, t = basis.shape
    sup = t + 2  # taps c - left - 1 .. c + right + 1

    def shifted(h: np.ndarray, s: int) -> np.ndarray:
        v = np.zeros(sup)
        v[1 + s : 1 + s + t] = h
        return v

    f_max, rho_max = 1.0, 0.0
    for target, pos in targets:
        cols = [shifted(basis[p], s) for s in (-1, 0, 1) for p in range(coarse) if abs(s + p / coarse - pos) <= 1.0 / coarse + 1e-12]
        phi = np.array(cols).T
        m, nn = phi.shape[1], sup
        cost = np.ones(2 * m + 2 * nn)
        a_eq = np.hstack([phi, -phi, np.eye(nn), -np.eye(nn)])
        sol = linprog(cost, A_eq=a_eq, b_eq=shifted(target, 0), bounds=(0, None), method="highs")
        if not sol.success:  # pragma: no cover - the LP is always feasible (r = target)
            raise RuntimeError(f"screen bound LP failed: {sol.message}")
        w = sol.x[:m] - sol.x[m : 2 * m]
        r = sol.x[2 * m : 2 * m + nn] - sol.x[2 * m + nn :]
        f_max = max(f_max, float(np.abs(w).sum()))
        rho_max = max(rho_max, float(np.abs(r).sum()))
    return f_max, rho_max


@functools.cache
def _tp_plan(coarse: int, fine: int, ebur: int = 1) -> dict:
    """Host-side constants for a coarse screen at ``coarse``x checked by the ``fine``x meter
    (and, for ``ebur`` > 1, by libebur128's ``ebur``x interpolator, evaluated exactly
    alongside the coarse phases)."""
    from . import truepeak

    hf = np.asarray(truepeak.interpolation_filter(fine), np.float64)  # (fine, T)
    t = hf.shape[1]
    left = t // 2 - 1  # truepeak._phase_outputs' convention
    right = t - 1 - left
    if coarse > 1:
        hc = np.array(truepeak.interpolation_filter(coarse), np.float64)  # a copy: phase 0 is set below
        if hc.shape[1] != t:
            raise ValueError("coarse and fine interpolators must have the same taps per phase")
    else:
        hc = np.zeros((1, t))
        hc[0, left] = 1.0
    hc[0] = 0.0
    hc[0, left] = 1.0  # phase 0 is the sample itself (exact: the filters are delta there)
    blk = 32
    while blk // 2 < max(left, right) + 1:
        blk *= 2
    off = blk // 2
    # Block-Toeplitz matrix: window w in [0, 2 blk) of samples starting blk/2 before the
    # block's first centre; columns: coarse phases 1.. (phase-major) for centres 0 .. blk-1.
    nph = coarse - 1
    rows = [hc[ph] for ph in range(1, coarse)]
    if ebur > 1:
        rows += list(_libebur128_filter(ebur, t)[1:])
    mat: np.ndarray = np.zeros((2 * blk, max(len(rows), 1), blk))
    for r, h in enumerate(rows):
        for i in range(blk):
            s = off + i - left
            mat[s : s + t, r, i] = h
    mat = mat.reshape(2 * blk, -1)
    # Fine phases of the _KNOT centres of a knot interval from the _KNOT + t - 1 samples
    # they read (zeros elsewhere: the products and sums are the meter's).
    # Phases on the coarse grid are already in the coarse maximum (float32: within _EPS_REL).
    span = _KNOT + t - 1
    phases = [k for k in range(fine) if (k * coarse) % fine != 0]
    fmat = np.zeros((span, _KNOT, len(phases)))
    for i in range(_KNOT):
        fmat[i : i + t, i, :] = hf[phases].T
    fmat = fmat.reshape(span, -1)
    # Bound each fine phase by the coarse values around it (centres c-1 .. c+1).
    f_max, rho_max = _screen_bound(hc, [(hf[k], k / fine) for k in range(fine)])
    # The 2x pre-screen: every value the meters read (the fine phases, which include the
    # coarse ones, and libebur128's) bounded through the samples and the midpoints
    # (fine phase fine/2) of a block's centres; only blocks whose bound reaches the
    # threshold go on to the coarse matrix product (about 1 in 20 of a loud master's).
    h2 = np.zeros((2, t))
    h2[0, left] = 1.0
    h2[1] = hf[fine // 2]
    eb = _libebur128_filter(ebur, t) if ebur > 1 else np.zeros((1, t))
    targets = [(hf[k], k / fine) for k in range(1, fine)] + [(eb[q], q / ebur) for q in range(1, ebur)]
    f2, rho2 = _screen_bound(h2, targets)
    mat2 = np.zeros((2 * blk, blk))
    for i in range(blk):
        mat2[off + i - left : off + i - left + t, i] = h2[1]
    return {
        "fmat": fmat,
        "span": span,
        "mat": mat.astype(np.float32),
        "mat2": mat2.astype(np.float32),
        # float32 midpoints and sums: a slack far above their rounding (the bound is loose anyway)
        "f2": f2 * (1 + 1e-4) + 1e-4,
        "rho2": rho2 + 1e-4,
        "nph": nph,
        "neb": max(ebur - 1, 0),
        "t": t,
        "left": left,
        "right": right,
        "blk": blk,
        "off": off,
        "l1": truepeak.interpolation_gain(fine),
        "f": f_max * (1 + _EPS_REL) + _EPS_REL,
        "rho": rho_max + _EPS_REL,
        "front": -(-(off + right) // _KNOT) * _KNOT,
    }


class _Meter:
    """Sparse, exact evaluation of the fine true-peak meter.

    Works in a frame where the track starts ``blk`` samples in (silence before
    and after), split into rows of ``blk`` samples; centre block ``b`` holds the
    frame's centres ``[blk*b + off, blk*b + off + blk)`` and reads rows ``b``
    and ``b + 1``. The track itself is never copied into the frame: rows are
    gathered from it (views), edge rows from a small zero-padded copy.
    """

    def __init__(self, xp: Any, plan: dict, channels: int, n: int) -> None:
        self.xp, self.plan = xp, plan
        blk, off = plan["blk"], plan["off"]
        self.front = blk  # frame index of sample 0 (>= off + right, a multiple of _KNOT)
        self.nblocks = -(-(n + plan["left"] + self.front - off) // blk)  # centre blocks
        self.length = blk * (self.nblocks + 1)  # frame samples (rows 0 .. nblocks)
        self.channels, self.n = channels, n
        self.nmain = n // blk  # rows 1 .. nmain are whole rows of the track
        self.mat = backend.to_device(plan["mat"], xp, dtype=xp.float32)
        self.mat2t = backend.to_device(np.ascontiguousarray(plan["mat2"].T), xp, dtype=xp.float32)  # used transposed
        self.fmat = backend.to_device(plan["fmat"], xp, dtype=xp.float64)

    def _sources(self, src: Any) -> tuple[Any, Any]:
        xp, blk, c = self.xp, self.plan["blk"], self.channels
        main = xp.reshape(src[:, : self.nmain * blk], (c, self.nmain, blk)) if self.nmain else None
        tail = src[:, self.nmain * blk :]
        ntail = self.nblocks - self.nmain  # rows after the whole ones
        edge_flat = xp.zeros((c, (1 + ntail) * blk), dtype=src.dtype)
        edge_flat[:, blk : blk + tail.shape[1]] = tail
        return main, xp.reshape(edge_flat, (c, 1 + ntail, blk))

    def _rows(self, main: Any, edge: Any, j: Any, jmin: int, jmax: int) -> Any:
        xp = self.xp
        if main is not None and jmin >= 1 and jmax <= self.nmain:
            return xp.take(main, j - 1, axis=1)
        ej = backend.clip(xp.where(j == 0, 0, j - self.nmain), 0, edge.shape[1] - 1)
        ev = xp.take(edge, ej, axis=1)
        if main is None:
            return ev
        mv = xp.take(main, backend.clip(j - 1, 0, self.nmain - 1), axis=1)
        is_edge = (j == 0) | (j > self.nmain)
        return xp.where(is_edge[None, :, None], ev, mv)

    def candidate_blocks(self, src: Any, thr: float) -> tuple[Any, Any]:
        """Blocks whose sample bound (support max x phase L1 norm) reaches ``thr``;
        also the largest |sample| (NaN or inf when the track has any)."""
        xp = self.xp
        main, edge = self._sources(src)
        parts = [xp.zeros(1, dtype=xp.float64)]
        if main is not None:
            parts.append(xp.astype(_halve_max(xp, _max_channels(xp, main, True)), xp.float64))
        parts.append(xp.astype(_halve_max(xp, _max_channels(xp, edge[:, 1:, :], True)), xp.float64))
        r = xp.concat(parts)  # per row, rows 0 .. nblocks
        bound = xp.maximum(r[:-1], r[1:]) * (self.plan["l1"] * (1 + _EPS_REL))
        return xp.nonzero(bound >= thr)[0], xp.max(r)

    def envelope(self, src: Any, blocks: Any, thr: float) -> tuple[Any, Any]:
        """Fine-meter maxima per knot interval for ``blocks`` where the meter may reach ``thr``.

        Returns ``(intervals, peaks)``: frame knot-interval indices (``_KNOT``
        centres each) and the largest fine-meter value over their centres
        (linked over channels); every interval whose fine-meter maximum is >=
        ``thr`` is listed (others may be, with their values).
        """
        xp, p = self.xp, self.plan
        blk, off, left = p["blk"], p["off"], p["left"]
        c = self.channels
        per = blk // _KNOT
        out_i, out_v = [], []
        span = p["span"]
        taps = xp.arange(span) + (off - left)
        # On the host the block indices are at hand: chunks of whole rows take one gather; on a
        # device they are not read back, and every chunk takes the rows' general gather.
        bl_host = backend.to_host(blocks) if backend.is_numpy(xp) else None
        main, edge = self._sources(src)
        nb = int(blocks.shape[0])
        for s in range(0, nb, _SCREEN_CHUNK):
            bl = blocks[s : min(nb, s + _SCREEN_CHUNK)]
            lo, hi = (int(bl_host[s]), int(bl_host[min(s + _SCREEN_CHUNK, nb) - 1])) if bl_host is not None else (0, self.nmain + 1)
            m = int(bl.shape[0])
            win = xp.concat([self._rows(main, edge, bl, lo, hi), self._rows(main, edge, bl + 1, lo + 1, hi + 1)], axis=-1)
            w32 = xp.astype(win, xp.float32, copy=False)  # (c, m, 2 blk)
            aw = _max_channels(xp, w32, True)  # (m, 2 blk), linked |x|
            # 2x pre-screen: the samples and midpoints of a block's centres bound every value
            # either meter reads there (f2, rho2); the rest of the screen sees only the blocks
            # whose bound reaches thr.
            # |x| over every support in the block (widened by one sample each side): block-wide,
            # barely looser than per interval, far cheaper.
            a = _halve_max(xp, aw)[:, None]  # (m, 1)
            # The midpoints transposed, (c, points, m): the largest |value| per block is then
            # elementwise maxima and minima of long rows, not a reduction over a short last axis.
            mid = self.mat2t @ xp.permute_dims(w32, (0, 2, 1))
            e2 = xp.maximum(
                _max_channels(xp, xp.maximum(xp.max(mid, axis=1), -xp.min(mid, axis=1))), xp.max(aw[:, off : off + blk + 1], axis=1)
            )
            keep = xp.nonzero(p["f2"] * xp.astype(e2, xp.float64) + p["rho2"] * xp.astype(a[:, 0], xp.float64) >= thr)[0]
            if int(keep.shape[0]) == 0:
                continue
            if int(keep.shape[0]) < m:
                bl, m = xp.take(bl, keep), int(keep.shape[0])
                win = xp.take(win, keep, axis=1)
                w32 = xp.astype(win, xp.float32, copy=False)
                aw, a = xp.take(aw, keep, axis=0), xp.take(a, keep, axis=0)
            # coarse maximum per interval: its centres' coarse phases and the sample after it
            e4 = aw[:, off : off + blk]
            nph, neb = p["nph"], p["neb"]
            if nph + neb > 0:
                co = _max_channels(xp, w32 @ self.mat, True)  # (m, (nph + neb) * blk)
                for ph in range(nph):
                    e4 = xp.maximum(e4, co[:, ph * blk : (ph + 1) * blk])
            e4 = xp.maximum(_halve_max(xp, xp.reshape(e4, (m, per, _KNOT))), aw[:, off + _KNOT : off + blk + _KNOT : _KNOT])
            bound = p["f"] * e4 + p["rho"] * a
            if neb:  # libebur128's phases: exact already
                ee = co[:, nph * blk : (nph + 1) * blk]
                for ph in range(nph + 1, nph + neb):
                    ee = xp.maximum(ee, co[:, ph * blk : (ph + 1) * blk])
                e4 = xp.maximum(e4, _halve_max(xp, xp.reshape(ee, (m, per, _KNOT))))
                bound = xp.maximum(bound, e4)
            sel = xp.nonzero(xp.reshape(bound >= thr, (-1,)))[0]
            if int(sel.shape[0]) == 0:
                continue
            bi, qi = sel // per, sel % per
            idx = (bi * (2 * blk) + qi * _KNOT)[:, None] + taps[None, :]
            wf = xp.reshape(win, (c, m * 2 * blk))
            fine = xp.astype(backend.take(xp, wf, idx, axis=1), xp.float64) @ self.fmat  # (c, k, _KNOT * fine): the meter's sums
            val = xp.maximum(xp.max(_max_channels(xp, fine, True), axis=-1), xp.astype(xp.take(xp.reshape(e4, (-1,)), sel), xp.float64))
            out_i.append(xp.take(bl, bi) * per + off // _KNOT + qi)
            out_v.append(val)
        if not out_i:
            return xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float64)
        return xp.concat(out_i), xp.concat(out_v)

    def touched_blocks(self, changed: Any) -> Any:
        """Centre blocks whose meter support contains a changed knot interval."""
        xp = self.xp
        per = self.plan["blk"] // _KNOT
        q = xp.any(xp.reshape(changed, (self.nblocks + 1, per)), axis=1)
        return xp.nonzero(q[:-1] | q[1:])[0]

    def apply(self, y: Any, x: Any, g_knots: Any, intervals: Any, scale: float = 1.0) -> None:
        """``y = (x * scale) * gain`` on the given frame knot intervals, ``gain`` the knots'
        linear interpolation in float32 (:meth:`KnotGain.samples`; each product rounded to
        ``x``'s dtype, as if ``x * scale`` had been stored first). The gain is float32 so
        that the float32 product is the correctly rounded float64 product; it is made for
        the intervals applied only (a stretch at a time when most are), never for the track."""
        xp = self.xp
        lead = self.front // _KNOT
        n8 = -(-self.n // _KNOT)
        j = intervals - lead
        j = j[(j >= 0) & (j < n8)]
        k = int(j.shape[0])
        if k == 0:
            return

        def scaled(v: Any) -> Any:
            return v if scale == 1.0 else xp.astype(v * scale, v.dtype)

        gk = xp.astype(g_knots, xp.float32)
        whole = self.n // _KNOT
        if k > n8 // 4 or not backend.is_native(xp):  # dense (or no scatter: the standard's): the whole track, a stretch at a time
            step = _APPLY_STRETCH if not backend.is_gpu(xp) else n8
            for j0 in range(0, n8, step):  # a loop over stretches (a second of audio or more), not samples
                j1 = min(n8, j0 + step)
                a, b = j0 * _KNOT, min(self.n, j1 * _KNOT)
                flat = xp.reshape(_interp_knots(xp, gk, xp.arange(lead + j0, lead + j1)), (-1,))[: b - a]
                y[:, a:b] = xp.astype(scaled(x[:, a:b]) * xp.astype(flat[None, :], x.dtype), y.dtype)
            return
        gj = _interp_knots(xp, gk, j + lead)  # (k, _KNOT)
        inner = j < whole
        jw = j[inner]
        if int(jw.shape[0]):
            y8 = xp.reshape(y[:, : whole * _KNOT], (self.channels, whole, _KNOT))
            x8 = xp.reshape(x[:, : whole * _KNOT], (self.channels, whole, _KNOT))
            y8[:, jw, :] = xp.astype(scaled(x8[:, jw, :]) * xp.astype(gj[inner][None], x.dtype), y.dtype)
        rest = self.n - whole * _KNOT
        if rest and bool(xp.any(~inner)):
            gr = xp.astype(gj[~inner][0, :rest], x.dtype)
            y[:, whole * _KNOT :] = xp.astype(scaled(x[:, whole * _KNOT :]) * gr[None, :], y.dtype)


class KnotGain(NamedTuple):
    """A true-peak limiter's gain as it is computed: knots every ``_KNOT`` samples, linear
    between them (float32), exactly 1 on every interval whose two knots are 1.

    O(n / 8) memory where a per-sample gain would be a float32 copy of a channel;
    :meth:`samples` makes that copy when a caller wants it.

    Attributes
    ----------
    knots : array of float64
        Knot gains in the limiter's frame.
    lead : int
        Frame knot of sample 0 (knot ``lead + j`` sits at sample ``_KNOT * j``).
    n : int
        Samples per channel.

    Examples
    --------
    >>> import numpy as np
    >>> x = (1.5 * np.sin(np.arange(4800) * 0.3))[None].astype(np.float32)
    >>> y, g = true_peak_limit(x, 48000, -1.0, knots=True)
    >>> g.knots.shape[0] < x.shape[1] // 4, round(g.minimum(), 2), g.runs().tolist()
    (True, 0.59, [[0, 4800]])
    >>> bool(np.all(y == x * g.samples()))
    True
    """

    knots: Any
    lead: int
    n: int
    #: (:meth:`minimum`, :meth:`runs`) when the limiter read them already (with its last check).
    read: tuple[float, np.ndarray] | None = None

    def _limited(self) -> tuple[Any, Any, Any]:
        """(namespace, float32 knots from the track's first, intervals with a knot below 1)."""
        xp = backend.namespace(self.knots)
        n8 = -(-self.n // _KNOT)
        gk = xp.astype(self.knots[self.lead : self.lead + n8 + 1], xp.float32)
        return xp, gk, xp.nonzero((gk[:-1] < 1.0) | (gk[1:] < 1.0))[0]

    def samples(self) -> Any:
        """The per-sample gain the limiter applied, float32, shape (n,)."""
        xp, gk, j = self._limited()
        gain = xp.ones((-(-self.n // _KNOT), _KNOT), dtype=xp.float32)
        if int(j.shape[0]):
            gain[j] = _interp_knots(xp, gk, j)
        return xp.reshape(gain, (-1,))[: self.n]

    def _minima(self, xp: Any, gk: Any) -> tuple[Any, Any]:
        """The smallest knot gain and the smallest gain of the last (partial) interval, on the device."""
        n8 = -(-self.n // _KNOT)
        rest = self.n - (n8 - 1) * _KNOT  # samples of the last interval
        last = _interp_knots(xp, gk, xp.asarray([n8 - 1]))[0, :rest]
        return xp.min(gk[:n8]), xp.min(last)

    def minimum(self) -> float:
        """The smallest per-sample gain (linear): the deepest reduction."""
        if self.n == 0:
            return 1.0
        xp, gk, _ = self._limited()
        a, b = backend.read_together(*self._minima(xp, gk))  # one read
        return min(float(a), float(b))

    def summary(self) -> tuple[float, np.ndarray]:
        """:meth:`minimum` and :meth:`runs` from one read of the device (none when the limiter
        read them with its last check)."""
        if self.read is not None:
            return self.read
        pending = self._summary_pending()
        return pending.finish(backend.read_together(*pending.values))

    def _summary_pending(self) -> backend.Pending:
        if self.n == 0:
            return backend.Pending((), lambda host: (1.0, np.zeros((0, 2), dtype=np.int64)))
        xp, gk, j = self._limited()

        def finish(host: list[np.ndarray]) -> tuple[float, np.ndarray]:
            a, b, jh = host
            return min(float(a), float(b)), self._runs(jh.astype(np.int64))

        return backend.Pending((*self._minima(xp, gk), j), finish)

    def runs(self) -> np.ndarray:
        """``[start, end)`` sample ranges of the knot intervals with a knot below 1: every
        sample the limiter changed lies in one (host int64, shape (k, 2))."""
        _, _, j = self._limited()
        return self._runs(backend.to_host(j).astype(np.int64))

    def _runs(self, j: np.ndarray) -> np.ndarray:
        if j.size == 0:
            return np.zeros((0, 2), dtype=np.int64)
        cut = np.nonzero(np.diff(j) > 1)[0]
        first = np.concatenate([[j[0]], j[cut + 1]])
        last = np.concatenate([j[cut], [j[-1]]])
        return np.stack([first * _KNOT, np.minimum((last + 1) * _KNOT, self.n)], axis=1)


def _gain_from_need_dense(xp: Any, need: Any, lookahead: int, release_samples: float, release_ref_db: float, positions: Any = None) -> Any:
    """Look-ahead ramp + linear-in-dB release from a needed gain (linear, <= 1), every value."""
    att = _attack_lookahead(need, lookahead, beyond=1.0)
    att_db = units.amplitude_to_db(att)
    rel_db = _release_linear_db(xp, att_db, release_ref_db / release_samples, positions)
    gain = xp.minimum(units.db_to_amplitude(rel_db), need)
    gain = xp.where(gain >= need * (1.0 - 1e-12), need, gain)  # undo dB round-trip rounding
    return xp.minimum(gain, 1.0)


def _gain_from_need(xp: Any, need: Any, lookahead: int, release_samples: float, release_ref_db: float, lowest: float | None = None) -> Any:
    """Look-ahead ramp + linear-in-dB release from a needed gain (linear, <= 1, 1-D).

    The gain differs from 1 only within reach of a value below 1: ``lookahead``
    before it, the release after it (``w`` values, the deepest reduction over the
    release rate). Where those values are sparse (a limiter's needs: well under 1 %
    of a master's knots) only the stretches around them are computed, gathered with
    pads of ones between them as long as the reach, and scattered back into ones:
    on NumPy bit-identical to :func:`_gain_from_need_dense` (the pads hold what the
    track holds there, the release's drift is computed from the original positions,
    and the running sums add the same nonzero terms in the same order; a GPU's
    parallel scan may round them otherwise), at a small fraction of the cost of
    transcendental functions over every knot of the track. ``lowest``: ``min(need)``, when the
    caller has read it already (with its own figures: one read fewer).
    """
    n = int(need.shape[-1])
    low = xp.nonzero(need < 1.0)[0]
    k = int(low.shape[0])
    if k == 0:
        return xp.ones(n, dtype=need.dtype)
    rate = release_ref_db / release_samples
    if lowest is None:
        lowest = backend.to_float(xp.min(need))
    if not lowest > 0.0:
        raise ValueError(f"the needed gain must be positive (a finite ceiling over a finite peak), got a minimum of {lowest!r}")
    deepest = -units.amplitude_to_db(lowest)
    w = int(min(n, math.ceil(deepest / rate) + 1))
    reach = w + 2 * int(lookahead) + 2  # a gained value's dependencies, and a pad's length
    if k * (2 * reach + 1) > n // 8:  # dense: not worth the gathering
        return _gain_from_need_dense(xp, need, lookahead, release_samples, release_ref_db)
    lo = backend.clip(low - reach, 0, n)
    hi = backend.clip(low + reach + 1, 0, n)
    starts = xp.concat([xp.ones(1, dtype=xp.bool), lo[1:] > hi[:-1]])  # a stretch begins (sorted: no overlap)
    ends = xp.concat([starts[1:], xp.ones(1, dtype=xp.bool)])
    s_lo, s_hi = (v.astype(np.int64) for v in backend.read_together(lo[starts], hi[ends]))  # one read
    # Compact layout: run r = [pad][stretch r], the pad `reach` ones long (none before a stretch
    # that starts the track), then `reach` ones after the last stretch unless it ends the track.
    # A run is contiguous in both layouts; a pad takes the positions just before its stretch.
    lengths = s_hi - s_lo
    pads = np.full(s_lo.shape, reach, dtype=np.int64)
    pads[0] = 0 if s_lo[0] == 0 else reach
    tail = 0 if s_hi[-1] == n else reach
    run_len = pads + lengths
    run_at = np.concatenate([[0], np.cumsum(run_len)[:-1]])  # compact start of each run
    body = int(run_len.sum())
    pos = np.empty(body + tail, dtype=np.int64)  # original index of each compact value
    pos[:body] = np.repeat(s_lo - pads - run_at, run_len) + np.arange(body)
    pos[body:] = s_hi[-1] + np.arange(tail)
    kept = np.repeat(run_at + pads - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(int(lengths.sum()))
    pos_d = backend.to_device(pos, xp)
    inside = (pos_d >= 0) & (pos_d < n)  # pads before the track's start or after its end hold 1 too
    compact = xp.where(inside, xp.take(need, backend.clip(pos_d, 0, n - 1)), 1.0)
    g = _gain_from_need_dense(xp, compact, lookahead, release_samples, release_ref_db, xp.astype(pos_d, xp.float64))
    kept_d = backend.to_device(kept, xp)
    return backend.scatter(xp, xp.ones(n, dtype=g.dtype), xp.take(pos_d, kept_d), xp.take(g, kept_d))


def _knot_need(xp: Any, kint: Any) -> Any:
    """Knot ``i`` (sample ``_KNOT * i``) bounds the intervals on both sides of it."""
    one = xp.ones(1, dtype=kint.dtype)
    k = xp.concat([one, kint, one])
    return xp.minimum(k[:-1], k[1:])


def _interp_knots(xp: Any, g_knots: Any, intervals: Any) -> Any:
    """Linear interpolation of knot gains over the given knot intervals, shape (m, _KNOT)."""
    frac = xp.astype(xp.arange(_KNOT), g_knots.dtype) / _KNOT
    a = xp.take(g_knots, intervals)
    b = xp.take(g_knots, intervals + 1)
    return a[:, None] + (b - a)[:, None] * frac[None, :]


def _tp_limit_core(
    x: Any,
    fs: float,
    ceiling: float,
    oversample: int,
    verify_oversample: int,
    lookahead_s: float,
    release_s: float,
    release_ref_db: float,
    margin_db: float,
    max_passes: int,
    guard_db: float,
    ebur: bool,
    scale: float = 1.0,
) -> tuple[Any, KnotGain]:
    xp = backend.namespace(x)
    c, n = x.shape
    plan = _tp_plan(int(oversample), int(verify_oversample), _libebur128_factor(fs) if ebur else 1)
    meter = _Meter(xp, plan, c, n)
    target = ceiling * units.db_to_amplitude(-guard_db)
    check = ceiling * (1.0 - 4 * _EPS_REL)  # what the meter must not exceed (slack: summation order)
    # The input gain `scale` is folded in: the first screen reads x against target / scale
    # (the meter is linear; rounding is the check pass's business), and the output starts
    # as x * scale -- no separate scaled copy of the track.
    blocks, top = meter.candidate_blocks(x, target / scale)
    if not math.isfinite(backend.to_float(top)):
        raise ValueError("x contains NaN or infinite samples")
    ivl, peak = meter.envelope(x, blocks, target / scale)
    peak = peak * scale
    over = peak > target
    y = xp.asarray(x, copy=True) if scale == 1.0 else xp.astype(x * scale, x.dtype, copy=False)  # one copy, not two
    nint = meter.length // _KNOT
    lead = meter.front // _KNOT
    # The needs are set before it is known whether there are any, so that whether there are and
    # the deepest (min(need) = min(kint): the knots' needs are minima of the intervals') are one read.
    kint = backend.scatter(xp, xp.ones(nint, dtype=xp.float64), ivl[over], target / peak[over])  # intervals: sorted, distinct
    any_over, lowest = backend.read_together(xp.any(over), xp.min(kint))
    if not bool(any_over):  # no reduction: the gain is 1, no sample changed
        return y, KnotGain(xp.ones(nint + 1, dtype=xp.float64), lead, n, (1.0, np.zeros((0, 2), dtype=np.int64)))
    la = max(1, int(round(lookahead_s * fs / _KNOT)))
    rel = max(1e-9, release_s * fs / _KNOT)
    g = _gain_from_need(xp, _knot_need(xp, kint), la, rel, release_ref_db, float(lowest))  # knots 0 .. nint
    changed = (g[:-1] < 1.0) | (g[1:] < 1.0)
    for p in range(max_passes):
        meter.apply(y, x, g, xp.nonzero(changed)[0], scale)
        ivl, peak = meter.envelope(y, meter.touched_blocks(changed), check)
        over = peak > check
        # The corrected needs first (no change where nothing is over; unused after the last pass),
        # then whether any is over and their deepest in one read.
        aim = target * units.db_to_amplitude(-margin_db * p)
        io = ivl[over]
        local = xp.minimum(xp.take(g, io), xp.take(g, io + 1))
        kint = backend.scatter(xp, kint, io, xp.minimum(xp.take(kint, io), local * aim / peak[over]))
        gain = KnotGain(g, lead, n)
        pending = gain._summary_pending()  # the result's summary, should this pass be the last
        any_over, lowest, *host = backend.read_together(xp.any(over), xp.min(kint), *pending.values)
        if not bool(any_over) or p == max_passes - 1:
            return y, gain._replace(read=pending.finish(host))  # y is (x * scale) * gain.samples(), each product rounded to float32
        g_new = xp.minimum(_gain_from_need(xp, _knot_need(xp, kint), la, rel, release_ref_db, float(lowest)), g)
        diff = g_new != g
        changed = diff[:-1] | diff[1:]
        g = g_new
    return y, KnotGain(g, lead, n)  # not reached (max_passes >= 1: the loop returns)


def true_peak_limit(
    x: Any,
    fs: float,
    ceiling_dbtp: float = -1.0,
    oversample: int = 4,
    lookahead_s: float = 0.0015,
    release_s: float = 0.05,
    *,
    verify_oversample: int = 16,
    margin_db: float = 0.02,
    max_passes: int = 6,
    release_ref_db: float = 10.0,
    guard_db: float = 0.03,
    libebur128: bool = True,
    input_gain_db: float = 0.0,
    knots: bool = False,
) -> tuple[Any, Any]:
    """True-peak look-ahead limiter, sample-aligned (no latency in the output).

    The ceiling is held on the project's meter, :func:`acetate.kernels.truepeak.true_peak`
    at ``verify_oversample`` (its 48-tap-per-phase Kaiser interpolator, all phases,
    with the track taken as silent outside): ``true_peak(y, fs,
    oversample=verify_oversample) <= 10 ** (ceiling_dbtp / 20)`` on the output,
    unless ``max_passes`` corrections do not suffice (not seen in practice).

    Everything runs at the base rate, memory O(n):

    1. Envelope: per base sample, the fine-meter maximum over the interval that
       follows it, linked across channels; computed only where it can reach the
       target: a bound from the samples skips quiet blocks, ``oversample``
       (4x) phases by a block matrix product screen the rest, and the fine
       phases (exactly as the meter computes them) are evaluated only where a
       rigorous bound from the coarse ones reaches the target.
    2. Needed gain ``target / envelope`` on knots every 8 samples (each knot
       at most the need of the samples on both sides), then a look-ahead ramp
       of ``lookahead_s`` (forward running minimum + backward moving average)
       and a release linear in dB at ``release_ref_db / release_s`` dB/s (a
       windowed running minimum), interpolated linearly to the samples: never
       above the needed gain, exactly 1 away from any limiting.
    3. The output is measured again by the same exact meter where it changed;
       remaining overs (from the gain modulation) lower the need there, the
       gain is smoothed again (it can only fall) and re-applied locally; at most
       ``max_passes`` measurements in all.

    ``target = ceiling - guard_db``; a signal whose meter already reads at or
    below the target everywhere comes back bit-identical with gain exactly 1
    (cost: about one true-peak measurement).

    Parameters
    ----------
    x : array, shape (C, n)
        Audio, float32 (float64 accepted).
    fs : float
        Sample rate, hertz.
    ceiling_dbtp : float
        Ceiling, dBTP.
    oversample : int
        Coarse screening grid (4x by default; any factor up to
        ``verify_oversample``). Affects speed, not the result's guarantee.
    lookahead_s : float
        Look-ahead (attack ramp) length, seconds (> 0); rounded to 8 samples.
    release_s : float
        Time to recover ``release_ref_db`` dB, seconds (linear in dB).
    verify_oversample : int
        Ratio of the meter the ceiling is held on (>= 2, >= ``oversample``;
        16 by default, the renderer's check; 8x under-reads by up to 0.14 dB).
    margin_db : float
        Extra headroom, dB, per corrective pass after the first.
    max_passes : int
        Measurements of the output (>= 1): the first plus corrections.
    release_ref_db : float
        Recovery, dB, that ``release_s`` refers to (default 10 dB).
    guard_db : float
        Aim this far below the ceiling, dB (>= 0; default 0.03): room for the
        gain modulation, so that corrections are rare and small.
    libebur128 : bool
        Also hold the ceiling on libebur128's true-peak interpolator (what
        pyebur128 reports: a 49-tap Hann-windowed sinc, 4x below 96 kHz, 2x
        below 192 kHz, not normalised), evaluated exactly at every screened
        sample. On limited material it reads up to ~0.3 dB above the 16x
        Kaiser meter (its short filter overshoots near flattened peaks), so
        without it pyebur128 can report overs. Default True.
    input_gain_db : float
        Gain applied to ``x`` before limiting, dB: the result is that of
        limiting ``x * 10**(input_gain_db/20)`` (rounded to ``x``'s dtype)
        without a scaled copy of the track being made first.
    knots : bool
        Return the gain as the limiter holds it, a :class:`KnotGain` (knots every 8
        samples: O(n / 8) memory, with its deepest reduction and the changed ranges),
        instead of a per-sample array (a float32 copy of a channel).

    Returns
    -------
    y : array, shape (C, n), dtype of ``x``: ``(x * gain)`` rounded to the dtype
        (``x`` taken after ``input_gain_db``, itself rounded to the dtype).
    gain : array, shape (1, n), float32, ``0 < gain <= 1`` (float32 products are exact in
        float64, so ``y == (x64 * gain64)`` rounded to float32); with ``knots``, a
        :class:`KnotGain` whose :meth:`KnotGain.samples` is that array.

    Examples
    --------
    >>> import numpy as np
    >>> from acetate.kernels import truepeak
    >>> x = (1.5 * np.sin(np.arange(4800) * 0.3))[None].astype(np.float32)
    >>> y, g = true_peak_limit(x, 48000, -1.0)
    >>> bool(truepeak.true_peak(y, 48000, oversample=16).max() <= 10 ** (-1 / 20)), bool(g.max() <= 1)
    (True, True)
    """
    xp = backend.namespace(x)
    fs = backend.check_fs(fs)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (channels, n), got {x.shape}")
    if not math.isfinite(ceiling_dbtp):
        raise ValueError(f"ceiling_dbtp must be finite, got {ceiling_dbtp!r}")
    for name, v in (("oversample", oversample), ("verify_oversample", verify_oversample), ("max_passes", max_passes)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if verify_oversample < oversample:
        raise ValueError(f"verify_oversample ({verify_oversample}) must be >= oversample ({oversample})")
    if verify_oversample < 2:
        raise ValueError(f"verify_oversample must be >= 2 (an oversampled meter), got {verify_oversample!r}")
    _check_time("lookahead_s", lookahead_s, allow_zero=False)
    _check_time("release_s", release_s, allow_zero=False)
    if not (math.isfinite(margin_db) and margin_db >= 0):
        raise ValueError(f"margin_db must be >= 0 dB, got {margin_db!r}")
    if not (math.isfinite(guard_db) and guard_db >= 0):
        raise ValueError(f"guard_db must be >= 0 dB, got {guard_db!r}")
    if not (math.isfinite(release_ref_db) and release_ref_db > 0):
        raise ValueError(f"release_ref_db must be a positive number of dB, got {release_ref_db!r}")
    ceiling = units.db_to_amplitude(ceiling_dbtp)
    if not math.isfinite(input_gain_db):
        raise ValueError(f"input_gain_db must be finite, got {input_gain_db!r}")
    scale = units.db_to_amplitude(input_gain_db) if input_gain_db else 1.0
    if x.shape[1] == 0:
        empty = KnotGain(xp.ones(1, dtype=xp.float64), 0, 0)
        return xp.asarray(x, copy=True), (empty if knots else xp.ones((1, 0), dtype=xp.float32))
    y, g = _tp_limit_core(
        x,
        fs,
        ceiling,
        int(oversample),
        int(verify_oversample),
        lookahead_s,
        release_s,
        release_ref_db,
        margin_db,
        int(max_passes),
        guard_db,
        bool(libebur128),
        scale,
    )
    return y, (g if knots else g.samples()[None, :])
