"""Sliding windows along the last axis, and the gain smoothers built on them.

Every kernel here is a whole-array operation (no per-sample Python loop); each
recursion a compressor or limiter would run sample by sample has an exact
parallel form:

* sliding minimum / maximum over ``width`` samples (:func:`sliding_min`,
  :func:`sliding_max`): a doubling (sparse-table) minimum. After pass ``j``,
  ``m[i] = min(p[i : i + 2**j])`` (one elementwise minimum of two shifted
  views per pass); the largest power ``k <= width`` and one more minimum of two
  overlapping windows of ``k`` give the exact window minimum in
  ``ceil(log2 width)`` passes, O(n log width) work. NumPy uses it up to
  ``_CPU_DOUBLING_MAX_WIDTH`` samples and ``ndimage.minimum_filter1d`` (O(n)
  whatever the width) beyond; on a GPU, where CuPy's filter costs
  O(n * width), it is used for every window wider than
  ``_GPU_DOUBLING_MIN_WIDTH`` samples. A maximum is the minimum of ``-x``.
* moving averages (:func:`moving_average`, :func:`rms_envelope`): the
  difference of two entries of a float64 prefix sum (cumulative sum) of the
  padded signal, divided by the width.
* a release linear in dB (``_release_linear_db``): the recursion
  ``y[n] = min(g[n], y[n-1] + r)`` has the closed form
  ``y[n] = r*n + min_{k<=n}(g[k] - r*k)``, a running minimum of the gain less
  a line of slope ``r``, with the line added back. Since ``g`` is bounded, only
  the last ``(max g - min g) / r + 1`` samples can attain that minimum, so a
  causal sliding minimum of that width is exact.
* a look-ahead attack (``_attack_lookahead``): a forward running minimum over
  ``L`` samples followed by a backward moving average over ``L``. Every value
  averaged at ``n`` is a minimum over a window that contains ``n``, so the
  result is never above the input at any sample (in particular at a peak), and
  a step becomes a linear ramp of ``L`` samples ending at the step.

Offline the whole track is at hand, so look-ahead needs no delay: outputs are
sample-aligned with inputs.

Release convention (:mod:`acetate.kernels.compressor`,
:mod:`acetate.kernels.limiter`): ``release_s`` is the time the gain takes to
recover by ``release_ref_db`` dB (default 10 dB), i.e. a rate of
``release_ref_db / release_s`` dB per second, linear in dB.

The argument checks shared by the compressor and the limiter (``_check_width``,
``_check_time``) live here too; the sample-rate check is ``backend.check_fs``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import backend

__all__ = [
    "sliding_min",
    "sliding_max",
    "moving_average",
    "rms_envelope",
]

_ALIGNS = ("centre", "past", "future")
_GPU_DOUBLING_MIN_WIDTH = 32
_CPU_DOUBLING_MAX_WIDTH = 4096  # NumPy: log2(width) vector passes beat ndimage's filter up to here


def _check_width(width: Any) -> int:
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be an integer >= 1 (samples), got {width!r}")
    return int(width)


def _check_time(name: str, value: float, allow_zero: bool = True) -> float:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} time in seconds, got {value!r}")
    return float(value)


def _pad_amounts(width: int, align: str) -> tuple[int, int]:
    if align == "centre":
        return width // 2, (width - 1) // 2
    if align == "past":
        return width - 1, 0
    if align == "future":
        return 0, width - 1
    raise ValueError(f"align must be one of {_ALIGNS}, got {align!r}")


def _pad_last(xp: Any, x: Any, before: int, after: int, mode: str, cval: float) -> Any:
    """Pad the last axis by edge repetition (``"nearest"``) or a constant."""
    if before == 0 and after == 0:
        return x
    lead = tuple(x.shape[:-1])
    if mode == "nearest":
        left = xp.broadcast_to(x[..., :1], lead + (before,))
        right = xp.broadcast_to(x[..., -1:], lead + (after,))
    elif mode == "constant":
        left = xp.full(lead + (before,), cval, dtype=x.dtype)
        right = xp.full(lead + (after,), cval, dtype=x.dtype)
    else:
        raise ValueError(f"mode must be 'nearest' or 'constant', got {mode!r}")
    return xp.concat([left, x, right], axis=-1)


def _valid_window_min(xp: Any, p: Any, width: int) -> Any:
    """``out[i] = min(p[..., i:i+width])`` for every full window (length L-width+1)."""
    n_out = p.shape[-1] - width + 1
    if width == 1:
        return p
    if (
        (backend.is_gpu(xp) and width > _GPU_DOUBLING_MIN_WIDTH)
        or (backend.is_numpy(xp) and width <= _CPU_DOUBLING_MAX_WIDTH)
        or not backend.is_native(xp)  # standard calls only: no ndimage for another namespace
    ):
        return _doubling_window_min(xp, p, width)
    nd = backend.ndimage(xp)
    return nd.minimum_filter1d(p, width, axis=-1, origin=-(width // 2), mode="nearest")[..., :n_out]


def _doubling_window_min(xp: Any, p: Any, width: int) -> Any:
    """Sparse-table window minimum: O(n log width) work, log2(width) vector passes."""
    n_out = p.shape[-1] - width + 1
    m = p
    k = 1
    while 2 * k <= width:
        m = xp.minimum(m[..., :-k], m[..., k:])  # now m[i] = min p[i : i + 2k]
        k *= 2
    if k == width:
        return m[..., :n_out]
    return xp.minimum(m[..., :n_out], m[..., width - k : width - k + n_out])


def sliding_min(x: Any, width: int, *, align: str = "centre", mode: str = "nearest", cval: float = 0.0) -> Any:
    """Minimum over a sliding window along the last axis.

    Parameters
    ----------
    x : array, shape (..., n)
    width : int
        Window length, samples (>= 1).
    align : {"centre", "past", "future"}
        ``"centre"``: window ``[n - width//2, n + (width-1)//2]``;
        ``"past"`` (causal): ``[n - width + 1, n]``;
        ``"future"`` (look-ahead): ``[n, n + width - 1]``.
    mode : {"nearest", "constant"}
        Values outside ``[0, n)``: the edge sample repeated, or ``cval``.
    cval : float
        Fill value for ``mode="constant"`` (may be ``inf``).

    Returns
    -------
    array, same shape and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> sliding_min(np.array([3., 1., 4., 1., 5.]), 2, align="future").tolist()
    [1.0, 1.0, 1.0, 1.0, 5.0]
    """
    xp = backend.namespace(x)
    width = _check_width(width)
    before, after = _pad_amounts(width, align)
    if x.shape[-1] == 0:
        return x
    return _valid_window_min(xp, _pad_last(xp, x, before, after, mode, cval), width)


def sliding_max(x: Any, width: int, *, align: str = "centre", mode: str = "nearest", cval: float = 0.0) -> Any:
    """Maximum over a sliding window along the last axis (see :func:`sliding_min`).

    Examples
    --------
    >>> import numpy as np
    >>> sliding_max(np.array([3., 1., 4., 1., 5.]), 2, align="past").tolist()
    [3.0, 3.0, 4.0, 4.0, 5.0]
    """
    return -sliding_min(-x, width, align=align, mode=mode, cval=-cval)


def moving_average(x: Any, width: int, *, align: str = "past", mode: str = "nearest", cval: float = 0.0) -> Any:
    """Mean over a sliding window, by a difference of float64 cumulative sums.

    Parameters
    ----------
    x : array, shape (..., n)
    width : int
        Window length, samples.
    align : {"past", "centre", "future"}
        Window placement, as in :func:`sliding_min` (default causal).
    mode, cval
        Edge handling, as in :func:`sliding_min`.

    Returns
    -------
    array, shape of ``x``, float64.

    Examples
    --------
    >>> import numpy as np
    >>> moving_average(np.array([0., 0., 3., 3.]), 3, mode="constant").tolist()
    [0.0, 0.0, 1.0, 2.0]
    """
    xp = backend.namespace(x)
    width = _check_width(width)
    before, after = _pad_amounts(width, align)
    if x.shape[-1] == 0:
        return xp.astype(x, xp.float64)
    if mode not in ("nearest", "constant"):
        raise ValueError(f"mode must be 'nearest' or 'constant', got {mode!r}")
    # One float64 buffer: a zero, the padded signal, then its running sum in place (no
    # padded copy and no prepended zero as separate arrays).
    n = x.shape[-1]
    c = xp.empty(tuple(x.shape[:-1]) + (1 + before + n + after,), dtype=xp.float64)
    c[..., 0] = 0.0
    c[..., 1 + before : 1 + before + n] = x
    c[..., 1 : 1 + before] = x[..., :1] if mode == "nearest" else cval
    c[..., 1 + before + n :] = x[..., -1:] if mode == "nearest" else cval
    if not backend.is_numpy(xp):  # a scan into its own input is NumPy's guarantee, not every library's
        c[..., 1:] = backend.cumsum(xp, c[..., 1:], axis=-1)
    else:
        xp.cumsum(c[..., 1:], axis=-1, out=c[..., 1:])
    return (c[..., width:] - c[..., :-width]) / width


def rms_envelope(x: Any, fs: float, window_s: float, *, link: bool = False) -> Any:
    """RMS over a centred window (float64 cumulative sums of ``x**2``).

    Parameters
    ----------
    x : array, shape (C, n)
        Audio.
    fs : float
        Sample rate, hertz.
    window_s : float
        Window length, seconds (at least one sample). Outside the track the
        signal counts as silence.
    link : bool
        ``False``: one envelope per channel, shape (C, n). ``True``: the
        maximum over channels, shape (1, n).

    Returns
    -------
    array, float64 RMS (linear, not dB).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((2, 100), np.float32)
    >>> float(rms_envelope(x, 1000, 0.01)[0, 50])
    1.0
    """
    xp = backend.namespace(x)
    fs = backend.check_fs(fs)
    _check_time("window_s", window_s, allow_zero=False)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (channels, n), got {x.shape}")
    width = max(1, int(round(window_s * fs)))
    x64 = xp.astype(x, xp.float64)
    ms = moving_average(x64 * x64, width, align="centre", mode="constant", cval=0.0)
    rms = xp.sqrt(xp.maximum(ms, 0.0))
    if link:
        rms = xp.max(rms, axis=0, keepdims=True)
    return rms


# ----------------------------------------------- gain smoothing in parallel form
# Shared by the compressor (attack_release_db) and the limiter (_gain_from_need).


def _release_linear_db(xp: Any, g_db: Any, rate_db_per_sample: float, positions: Any = None) -> Any:
    """Exact parallel form of ``y[n] = min(g[n], y[n-1] + r)`` along the last axis.

    ``positions`` (optional, float64) are the samples' indices in a longer signal
    that this one is a gathered part of (``acetate.kernels.limiter._gain_from_need``):
    the drift is computed from them, so the values are bit-identical to the whole
    signal's.
    """
    n = g_db.shape[-1]
    if n == 0 or rate_db_per_sample == math.inf:
        return g_db
    span = backend.to_float(xp.max(g_db) - xp.min(g_db))
    if span == 0.0:
        return g_db
    w = int(min(n, math.ceil(span / rate_db_per_sample) + 1))
    drift = (xp.arange(n, dtype=xp.float64) if positions is None else positions) * rate_db_per_sample
    m = sliding_min(g_db - drift, w, align="past", mode="constant", cval=math.inf)
    return xp.minimum(m + drift, g_db)


def _attack_lookahead(x: Any, width: int, *, beyond: float) -> Any:
    """Forward running min over ``width`` then backward moving average over ``width``.

    Never above ``x`` at any sample. ``beyond`` is the value assumed after the
    end (the no-reduction value). The average is taken of ``beyond - m`` so
    long stretches without reduction add exact zeros to the prefix sums.
    """
    if width <= 1:
        return x
    xp = backend.namespace(x)
    m = sliding_min(x, width, align="future", mode="constant", cval=beyond)
    a = beyond - moving_average(beyond - m, width, align="past", mode="nearest")
    return xp.minimum(a, x)
