"""A band compressor: RMS detector, static soft-knee curve, look-ahead attack, linear-in-dB release.

The chain (:func:`compress`): an RMS envelope over a centred window (float64
prefix sums, :func:`acetate.kernels.windows.rms_envelope`), its level in dBFS,
the static curve (:func:`compressor_gain_db`), then the gain smoothed by
:func:`attack_release_db`: a look-ahead attack (forward running minimum, then
backward moving average: never less reduction than asked for, a linear ramp
into each event) and a release linear in dB (a running minimum of the gain less
a line, added back; exact). Both are the parallel forms described in
:mod:`acetate.kernels.windows`; no per-sample loop.

At a control rate (``control_hop`` > 1, :func:`compressor_gain`): the detector
and gain computer run on the mean square of each hop of ``hop`` samples, and
the gain is interpolated linearly back to the samples (:func:`interpolate_hops`:
each hop's samples a fixed mix of three hop-centre values, one small matrix
product), a stretch at a time if the caller wishes.

Release convention: ``release_s`` is the time the gain takes to recover by
``release_ref_db`` dB (default 10 dB), i.e. ``release_ref_db / release_s`` dB
per second, linear in dB.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import backend, units
from .windows import _attack_lookahead, _check_time, _release_linear_db, moving_average, rms_envelope

__all__ = [
    "attack_release_db",
    "compressor_gain_db",
    "compress",
    "compressor_gain",
    "interpolate_hops",
]


def attack_release_db(gain_db: Any, fs: float, attack_s: float, release_s: float, *, release_ref_db: float = 10.0) -> Any:
    """Smooth a gain curve (dB) with a look-ahead attack and a linear-in-dB release.

    The output is never above ``gain_db`` (never less reduction than asked
    for), falls ahead of each event over ``attack_s`` and recovers no faster
    than ``release_ref_db / release_s`` dB per second.

    Parameters
    ----------
    gain_db : array, shape (..., n)
        Requested gain, dB (usually <= 0), finite.
    fs : float
        Sample rate, hertz.
    attack_s : float
        Look-ahead attack time, seconds: the gain starts to fall up to
        ``attack_s`` before an event and reaches the requested reduction at
        the event (for a step, a linear ramp in dB over ``attack_s``). 0: none.
    release_s : float
        Release time, seconds: the time to recover by ``release_ref_db`` dB
        (linear in dB). 0: instantaneous recovery.
    release_ref_db : float
        The recovery, dB, that takes ``release_s`` (default 10 dB).

    Returns
    -------
    array, shape of ``gain_db``, float64, dB.

    Examples
    --------
    >>> import numpy as np
    >>> g = np.zeros(1000); g[500:600] = -10.0
    >>> y = attack_release_db(g, 1000, 0.01, 0.1)       # 100 dB/s release
    >>> round(float(y[495]), 3), float(y[550]), round(float(y[650]), 3)
    (-5.0, -10.0, -4.9)
    """
    xp = backend.namespace(gain_db)
    fs = backend.check_fs(fs)
    _check_time("attack_s", attack_s)
    _check_time("release_s", release_s)
    if not (math.isfinite(release_ref_db) and release_ref_db > 0):
        raise ValueError(f"release_ref_db must be a positive number of dB, got {release_ref_db!r}")
    g = xp.astype(gain_db, xp.float64)
    finite, top = backend.read_together(xp.all(xp.isfinite(g)), xp.max(g) if g.size else 0.0)  # one read
    if not bool(finite):
        raise ValueError("gain_db must be finite everywhere (clip levels before converting to dB)")
    width = int(round(attack_s * fs))
    beyond = float(top)
    y = _attack_lookahead(g, width, beyond=max(beyond, 0.0))
    rate = math.inf if release_s == 0 else release_ref_db / (release_s * fs)
    return _release_linear_db(xp, y, rate)


def compressor_gain_db(level_db: Any, threshold_db: float, ratio: float, knee_db: float = 0.0) -> Any:
    """Static soft-knee compressor curve (Giannoulis, Massberg & Reiss 2012).

    With ``x = level_db``, ``T = threshold_db``, ``R = ratio``, ``W = knee_db``::

        y = x                                  if 2 (x - T) < -W
        y = x + (1/R - 1) (x - T + W/2)^2 / (2W) if 2 |x - T| <= W
        y = T + (x - T) / R                    if 2 (x - T) >  W

    and the gain is ``y - x`` (<= 0 dB).

    Parameters
    ----------
    level_db : array
        Detector level, dB (``-inf`` allowed; levels below -300 dB are clipped).
    threshold_db : float
        Threshold ``T``, dB.
    ratio : float
        Ratio ``R >= 1`` (``inf``: limiting).
    knee_db : float
        Knee width ``W >= 0``, dB.

    Returns
    -------
    array, gain in dB (<= 0), float64, shape of ``level_db``.

    Examples
    --------
    >>> import numpy as np
    >>> compressor_gain_db(np.array([-30.0, -10.0]), -20.0, 4.0).tolist()
    [0.0, -7.5]
    """
    xp = backend.namespace(level_db)
    if not math.isfinite(threshold_db):
        raise ValueError(f"threshold_db must be finite, got {threshold_db!r}")
    if not (ratio >= 1):
        raise ValueError(f"ratio must be >= 1, got {ratio!r}")
    if not (math.isfinite(knee_db) and knee_db >= 0):
        raise ValueError(f"knee_db must be a finite width >= 0 dB, got {knee_db!r}")
    slope = -1.0 if math.isinf(ratio) else 1.0 / ratio - 1.0  # <= 0
    x = backend.clip(xp.astype(level_db, xp.float64), -300.0, 300.0)
    over = x - threshold_db
    gain_above = slope * over
    if knee_db > 0:
        gain_knee = slope * (over + knee_db / 2) ** 2 / (2 * knee_db)
        gain = xp.where(2 * over < -knee_db, 0.0, xp.where(2 * over > knee_db, gain_above, gain_knee))
    else:
        gain = xp.where(over > 0, gain_above, 0.0)
    return xp.minimum(gain, 0.0)


def compress(
    x: Any,
    fs: float,
    threshold_db: float,
    ratio: float,
    knee_db: float = 6.0,
    attack_s: float = 0.01,
    release_s: float = 0.2,
    makeup_db: float = 0.0,
    link: bool = True,
    *,
    window_s: float = 0.01,
    release_ref_db: float = 10.0,
    control_hop: int = 1,
) -> tuple[Any, Any]:
    """A full band compressor: RMS envelope -> static curve -> smoothing -> apply.

    Parameters
    ----------
    x : array, shape (C, n)
        Audio (float32).
    fs : float
        Sample rate, hertz.
    threshold_db, ratio, knee_db : float
        Static curve (:func:`compressor_gain_db`); the detector level is the
        RMS over ``window_s`` in dBFS (a full-scale sine reads -3.01 dB).
    attack_s : float
        Look-ahead attack, seconds (see :func:`attack_release_db`).
    release_s : float
        Time to recover ``release_ref_db`` dB, seconds.
    makeup_db : float
        Gain added after compression, dB.
    link : bool
        ``True``: one gain for all channels (from the loudest channel's
        envelope); ``False``: one gain per channel.
    window_s : float
        RMS detector window, seconds (centred).
    release_ref_db : float
        Recovery in dB that ``release_s`` refers to (default 10 dB).
    control_hop : int
        Run the detector and gain computer every ``control_hop`` samples and
        interpolate the gain linearly to the samples (1: per sample). For the
        gain alone, not applied, see :func:`compressor_gain`.

    Returns
    -------
    y : array, shape (C, n), dtype of ``x``.
    gain_db : array, shape (1, n) when linked else (C, n), float64: the gain
        applied, dB, makeup included.

    Examples
    --------
    >>> import numpy as np
    >>> x = (0.5 * np.sin(np.arange(48000) * 0.05))[None].astype(np.float32)
    >>> y, g = compress(x, 48000, -20.0, 4.0)
    >>> round(float(g[0, 24000]), 2)
    -8.35
    """
    xp = backend.namespace(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (channels, n), got {x.shape}")
    if not math.isfinite(makeup_db):
        raise ValueError(f"makeup_db must be finite, got {makeup_db!r}")
    if not (isinstance(control_hop, (int, np.integer)) and control_hop >= 1):
        raise ValueError(f"control_hop must be a positive integer, got {control_hop!r}")
    if control_hop > 1:
        return _compress_control_rate(
            x, fs, threshold_db, ratio, knee_db, attack_s, release_s, makeup_db, link, window_s, release_ref_db, int(control_hop)
        )
    rms = rms_envelope(x, fs, window_s, link=link)
    level_db = units.power_to_db(rms * rms, floor=1e-30)
    static = compressor_gain_db(level_db, threshold_db, ratio, knee_db)
    gain_db = attack_release_db(static, fs, attack_s, release_s, release_ref_db=release_ref_db) + makeup_db
    y = xp.astype(x, xp.float64) * units.db_to_amplitude(gain_db)
    return xp.astype(y, x.dtype), gain_db


@functools.cache
def _hop_mix(hop: int) -> np.ndarray:
    """(3, hop) weights of the previous, own and next hop centre for each sample of a hop.

    Value ``j`` sits at the hop's centre ``(hop - 1) / 2``: the samples before it ramp
    from the previous centre, the samples after it towards the next one.
    """
    half = (hop - 1) / 2.0
    split = int(math.ceil(half))  # samples of a hop before its centre
    i = np.arange(hop, dtype=np.float64)
    w_lo = (i[:split] + (hop - half)) / hop  # from the previous centre
    w_hi = (i[split:] - half) / hop  # towards the next centre
    mix = np.zeros((3, hop))
    mix[0, :split], mix[1, :split] = 1.0 - w_lo, w_lo
    mix[1, split:], mix[2, split:] = 1.0 - w_hi, w_hi
    return mix


def interpolate_hops(g: Any, hop: int, n: int, start: int = 0, stop: int | None = None) -> Any:
    """Per-sample values of control-rate values ``g``, linearly interpolated, for samples ``[start, stop)``.

    Value ``j`` of ``g`` sits at sample ``j * hop + (hop - 1) / 2`` (the centre of
    hop ``j``); before the first and after the last centre the end value holds
    (as ``numpy.interp``). Each hop's samples are a fixed mix of three centre
    values (:func:`_hop_mix`: its first part ramps from the previous centre, its
    second part towards the next), all hops in one small matrix product. A stretch
    ``[start, stop)`` reads only its own hops and their neighbours, so a caller
    can use the gain a cache-sized stretch at a time and never hold it for a whole track.

    Parameters
    ----------
    g : array, shape (rows, nh) or (nh,)
        Control values, ``nh = ceil(n / hop)``.
    hop : int
        Samples per control value (>= 1).
    n : int
        Samples in the whole signal.
    start, stop : int
        The stretch, samples; ``start`` a multiple of ``hop``; ``stop`` default ``n``.

    Returns
    -------
    array, shape (rows, stop - start) (or (stop - start,) for 1-D ``g``), ``g``'s dtype.

    Examples
    --------
    >>> import numpy as np
    >>> interpolate_hops(np.array([0.0, 4.0]), 4, 8).tolist()
    [0.0, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0, 4.0]
    >>> interpolate_hops(np.array([0.0, 4.0]), 4, 8, start=4).tolist()
    [2.5, 3.5, 4.0, 4.0]
    """
    xp = backend.namespace(g)
    one_d = g.ndim == 1
    if one_d:
        g = g[None, :]
    rows, nh = g.shape
    stop = n if stop is None else min(int(stop), n)
    if nh != -(-n // hop) or not (0 <= start <= stop) or start % hop:
        raise ValueError(
            f"need ceil(n / hop) = {-(-n // hop)} values and a stretch starting on a hop, got {nh} values and [{start}, {stop})"
        )
    h0, h1 = start // hop, -(-stop // hop)
    parts = ([g[:, :1]] if h0 == 0 else []) + [g[:, max(h0 - 1, 0) : min(h1 + 1, nh)]] + ([g[:, -1:]] if h1 >= nh else [])
    ge = xp.concat(parts, axis=1)  # values at hops h0 - 1 .. h1 (ends clamped)
    # Each hop's samples are a fixed mix of the previous, own and next centre values: one
    # (rows * hops, 3) x (3, hop) matrix product (long loops; a broadcast over 16-sample
    # rows spends its time in per-row overhead).
    g3 = xp.stack([ge[:, :-2], ge[:, 1:-1], ge[:, 2:]], axis=-1)  # (rows, h1 - h0, 3)
    mix = backend.to_device(_hop_mix(hop), xp, dtype=xp.float64 if g.dtype == xp.float64 else xp.float32)
    out = xp.reshape(xp.reshape(g3, (-1, 3)) @ mix, (rows, (h1 - h0) * hop))[:, : stop - start]
    return out[0, :] if one_d else out


def _control_rate_gain_db(
    x: Any,
    fs: float,
    threshold_db: float,
    ratio: float,
    knee_db: float,
    attack_s: float,
    release_s: float,
    makeup_db: float,
    link: bool,
    window_s: float,
    release_ref_db: float,
    hop: int,
) -> Any:
    """The compressor's gain (dB, float64) at the control rate ``fs / hop``: one value per
    hop of ``hop`` samples, centred on it (see :func:`_compress_control_rate`)."""
    xp = backend.namespace(x)
    c, n = x.shape
    whole = n // hop

    def hop_energy(v: Any, m: int) -> Any:  # sum of squares per hop of (c, m * hop) samples
        v = xp.reshape(v, (c, m, hop))
        return backend.einsum(xp, "cij,cij->ci", v, v)

    # Sum of squares per hop, in the audio's dtype (a detector level: 1e-7 relative
    # is plenty); einsum avoids the slow short-axis reduction with a cast. A last,
    # partial hop counts as zero-padded, from a small copy (not a padded copy of x).
    ss = hop_energy(x[:, : whole * hop], whole)
    if whole * hop < n:
        tail = xp.zeros((c, hop), dtype=x.dtype)
        tail[:, : n - whole * hop] = x[:, whole * hop :]
        ss = xp.concat([ss, hop_energy(tail, 1)], axis=1)
    ms_hop = xp.astype(ss, xp.float64) / hop
    del ss
    width = max(1, int(round(window_s * fs / hop)))
    ms = moving_average(ms_hop, width, align="centre", mode="constant", cval=0.0)
    if link:
        ms = xp.max(ms, axis=0, keepdims=True)
    level_db = units.power_to_db(ms, floor=1e-30)
    static = compressor_gain_db(level_db, threshold_db, ratio, knee_db)
    return attack_release_db(static, fs / hop, attack_s, release_s, release_ref_db=release_ref_db) + makeup_db


def _compress_control_rate(
    x: Any,
    fs: float,
    threshold_db: float,
    ratio: float,
    knee_db: float,
    attack_s: float,
    release_s: float,
    makeup_db: float,
    link: bool,
    window_s: float,
    release_ref_db: float,
    hop: int,
) -> tuple[Any, Any]:
    """:func:`compress` with the detector and gain computer at ``fs / hop`` (a control rate).

    The mean square of each hop of ``hop`` samples feeds the RMS window, static
    curve and attack/release smoothing at the control rate; the gain is then
    interpolated linearly back to every sample (:func:`interpolate_hops`). With the
    RMS window many hops long (10 ms = 30 hops of 16 samples at 48 kHz) the
    detector sees what the per-sample one sees to within a few per cent of a
    window, at 1/hop of the work. Returns the same ``(y, gain_db)`` as :func:`compress`.
    """
    n = x.shape[1]
    g_hop = _control_rate_gain_db(x, fs, threshold_db, ratio, knee_db, attack_s, release_s, makeup_db, link, window_s, release_ref_db, hop)
    return x * interpolate_hops(_linear(g_hop, x.dtype), hop, n), interpolate_hops(g_hop, hop, n)


def _linear(g_db: Any, dtype: Any) -> Any:
    """Control-rate gains from dB to linear, in the audio's dtype (gains are O(1): float32
    holds them to 1e-7). Interpolated like the dB curve, the two agree within ~1e-4 dB
    between hops, and no per-sample power is taken."""
    xp = backend.namespace(g_db)
    if dtype == xp.float32:  # 10 ** (g / 20) by exp, cheaper than pow; the two differ by an ulp
        return xp.astype(units.db_to_amplitude_exp(g_db), dtype)  # of float64, not at float32
    return xp.astype(units.db_to_amplitude(g_db), dtype)


def compressor_gain(
    x: Any,
    fs: float,
    threshold_db: float,
    ratio: float,
    knee_db: float = 6.0,
    attack_s: float = 0.01,
    release_s: float = 0.2,
    *,
    window_s: float = 0.01,
    release_ref_db: float = 10.0,
    control_hop: int = 16,
    at_hops: bool = False,
) -> Any:
    """The linked, linear gain :func:`compress` would apply to ``x`` (not applied).

    For callers that apply it themselves, e.g. one weighted sum over the bands
    of a multiband compressor (no per-band product and running sum).

    Parameters
    ----------
    x : array, shape (C, n)
    fs, threshold_db, ratio, knee_db, attack_s, release_s, window_s, release_ref_db
        As :func:`compress` (no makeup; one gain for all channels).
    control_hop : int
        As :func:`compress` (>= 2: this function is the control-rate form).
    at_hops : bool
        Return the gain at the control rate, one value per hop (shape
        ``(ceil(n / control_hop),)``), for :func:`interpolate_hops` to give per
        sample where the caller applies it (a stretch at a time: no gain array
        of the track's length).

    Returns
    -------
    gain : array, shape (n,) (or per hop, ``at_hops``), dtype of ``x``;
        ``compress(x, ..., control_hop=h)[0]`` equals ``x * gain``, and
        ``gain == interpolate_hops(compressor_gain(..., at_hops=True), h, n)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = (0.5 * np.sin(np.arange(48000) * 0.05))[None].astype(np.float32)
    >>> g = compressor_gain(x, 48000, -20.0, 4.0)
    >>> round(float(20 * np.log10(g[24000])), 2)
    -8.35
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (channels, n), got {x.shape}")
    if not (isinstance(control_hop, (int, np.integer)) and control_hop >= 2):
        raise ValueError(f"control_hop must be an integer >= 2, got {control_hop!r}")
    g_hop = _linear(
        _control_rate_gain_db(
            x, fs, threshold_db, ratio, knee_db, attack_s, release_s, 0.0, True, window_s, release_ref_db, int(control_hop)
        )[0, :],
        x.dtype,
    )
    return g_hop if at_hops else interpolate_hops(g_hop, int(control_hop), x.shape[1])
