"""FIR design from a gain curve, FFT convolution, DC/subsonic high-pass, crossovers.

Every filter here is applied by FFT convolution (``oaconvolve``) along the last
axis, so one call serves NumPy and CuPy and costs a few milliseconds a track on
a GPU. Linear-phase filters are odd-length and symmetric; :func:`fft_filter`
removes their ``(n_taps - 1) / 2`` delay so outputs stay sample-aligned with
their inputs (a click stays at its index), with zero-padded ends.

Filter taps are float64 (they are small); audio is float32 in and float32 out,
and convolutions accumulate in float64.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from . import backend, units

__all__ = [
    "highpass_taps",
    "design_from_gain",
    "fft_filter",
    "highpass_dc",
    "lowpass_fir",
    "crossover_filters",
    "crossover_bands",
    "crossover_plan",
    "CrossoverPlan",
    "MAX_CROSSOVER_FRACTION",
]


def _xp_of(*candidates: Any, xp: ModuleType | None = None) -> ModuleType:
    """The namespace of the first array-like candidate, or ``xp``, or NumPy."""
    if xp is not None:
        return xp
    arrays = [c for c in candidates if hasattr(c, "__array_namespace__") or type(c).__module__.startswith(("numpy", "cupy"))]
    if arrays:
        try:
            return backend.namespace(*arrays)
        except TypeError:
            pass
    return backend.array_module("cpu")


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def design_from_gain(
    freqs_hz: Sequence[float] | Any,
    gains_db: Sequence[float] | Any,
    fs: float,
    n_taps: int,
    phase: str = "linear",
    *,
    window: str | tuple = "hann",
    xp: ModuleType | None = None,
) -> Any:
    """Design an FIR whose magnitude follows a gain curve (frequency sampling).

    The curve ``(freqs_hz, gains_db)`` is interpolated linearly in dB against
    log-frequency onto a dense rfft grid (held flat below the first and above
    the last point), turned into an impulse response and windowed.

    Parameters
    ----------
    freqs_hz : sequence of float
        Strictly increasing frequencies of the curve, hertz, all > 0.
    gains_db : sequence of float
        Gain at each frequency, dB (finite, within -200 .. +60 dB).
    fs : float
        Sample rate, hertz.
    n_taps : int
        Filter length. Odd for ``phase="linear"`` (delay ``(n_taps-1)/2``
        samples); any length >= 3 for ``"minimum"``. Frequency resolution is
        about ``4 * fs / n_taps`` Hz (Hann main lobe), so an EQ that must hold
        down to 30 Hz wants ``n_taps`` of several thousand at 48 kHz.
    phase : {"linear", "minimum"}
        ``"linear"``: symmetric, zero phase apart from the pure delay.
        ``"minimum"``: minimum phase built with the homomorphic (cepstral)
        method from the *target* log-magnitude (unlike
        ``scipy.signal.minimum_phase``, the magnitude is not halved in dB);
        energy sits at the start, no pre-ringing, non-constant group delay.
    window : str or tuple
        Window name for ``get_window`` (full window for linear phase, its
        decaying half for minimum phase).
    xp : module, optional
        Namespace to build the taps in; by default the namespace of the
        inputs if they are arrays, else NumPy. A namespace other than NumPy's
        or CuPy's gets taps designed on the host (interpolation, cepstrum) and
        moved to it once.

    Returns
    -------
    h : array, shape (n_taps,), float64

    Examples
    --------
    >>> h = design_from_gain([100, 1000, 10000], [3.0, 0.0, -2.0], 48000, 4095)
    >>> h.shape
    (4095,)
    """
    xp = _xp_of(freqs_hz, gains_db, xp=xp)
    out_xp = xp
    if not backend.is_native(xp):  # a filter design: on the host (the standard has no interp), moved once
        xp = backend.array_module("cpu")
    fs = backend.check_fs(fs)
    if phase not in ("linear", "minimum"):
        raise ValueError(f"phase must be 'linear' or 'minimum', got {phase!r}")
    if not isinstance(n_taps, (int, np.integer)) or n_taps < 3:
        raise ValueError(f"n_taps must be an integer >= 3, got {n_taps!r}")
    n_taps = int(n_taps)
    if phase == "linear" and n_taps % 2 == 0:
        raise ValueError(f"n_taps must be odd for a linear-phase FIR, got {n_taps}")
    f = np.asarray(backend.to_host(freqs_hz), dtype=np.float64).ravel()
    g = np.asarray(backend.to_host(gains_db), dtype=np.float64).ravel()
    if f.size == 0 or f.size != g.size:
        raise ValueError(f"freqs_hz and gains_db must be non-empty and the same length, got {f.size} and {g.size}")
    if not np.all(np.isfinite(f)) or np.any(f <= 0) or np.any(np.diff(f) <= 0):
        raise ValueError(f"freqs_hz must be finite, > 0 and strictly increasing, got {f.tolist()}")
    if not np.all(np.isfinite(g)) or np.any(g < -200) or np.any(g > 60):
        raise ValueError(f"gains_db must be finite and within [-200, 60] dB, got {g.tolist()}")

    nfft = max(_next_pow2(8 * n_taps), 4096)
    grid = xp.arange(nfft // 2 + 1, dtype=xp.float64) * (fs / nfft)
    lf = xp.log(xp.maximum(grid, grid[1] * 1e-3))  # DC gets the held first value
    curve_db = xp.interp(lf, xp.asarray(np.log(f)), xp.asarray(g))
    # The window is filter design: computed on the host by SciPy (identical taps on
    # every backend, no dependence on cupyx's window helpers) and moved to ``xp``.
    import scipy.signal as win_mod

    if phase == "linear":
        mag = units.db_to_amplitude(curve_db)
        h0 = xp.fft.irfft(mag.astype(xp.complex128), n=nfft)  # real, even, centred at 0
        half = (n_taps - 1) // 2
        h = xp.concat([h0[nfft - half :], h0[: half + 1]])
        w = backend.to_device(win_mod.get_window(window, n_taps, fftbins=False), xp, dtype=xp.float64)
        return _moved(h * w, out_xp)

    # minimum phase: fold the real cepstrum of the log-magnitude (natural log)
    logmag = units.db_to_nepers(curve_db)
    cep = xp.fft.irfft(logmag.astype(xp.complex128), n=nfft)
    fold = xp.zeros(nfft, dtype=xp.float64)
    fold[0] = cep[0]
    fold[1 : nfft // 2] = 2.0 * cep[1 : nfft // 2]
    fold[nfft // 2] = cep[nfft // 2]
    spec = xp.exp(xp.fft.rfft(fold))
    h = xp.fft.irfft(spec, n=nfft)[:n_taps]
    w = backend.to_device(win_mod.get_window(window, 2 * n_taps - 1, fftbins=False), xp, dtype=xp.float64)[n_taps - 1 :]
    return _moved(h * w, out_xp)


def _moved(h: Any, xp: ModuleType) -> Any:
    """Taps designed in one namespace as an array of ``xp`` (the same array when it is ``xp``'s)."""
    return h if backend.namespace(h) is xp else backend.to_device(h, xp)


def _delay(compensate_delay: bool | int, m: int) -> int:
    """Samples of delay to drop for ``m``-tap filters: True -> (m-1)//2, False -> 0, or an int in [0, m)."""
    if compensate_delay is True:
        return (m - 1) // 2
    if compensate_delay is False:
        return 0
    if isinstance(compensate_delay, (int, np.integer)) and 0 <= compensate_delay < m:
        return int(compensate_delay)
    raise ValueError(f"compensate_delay must be a bool or an int in [0, {m}), got {compensate_delay!r}")


def fft_filter(x: Any, h: Any, *, compensate_delay: bool | int = True) -> Any:
    """Convolve ``x`` with FIR ``h`` along the last axis by FFT (overlap-add).

    Parameters
    ----------
    x : array, shape (..., n)
        Signal, e.g. (channels, n) float32 audio.
    h : array, shape (m,) or broadcastable (..., m)
        Taps; a 1-D filter is applied to every channel.
    compensate_delay : bool or int
        ``True``: drop the ``(m-1)//2`` samples of delay of a linear-phase
        filter, so the output is sample-aligned with ``x``. ``False``: no
        compensation (minimum-phase or causal filters). An ``int``: drop that
        many samples.

    Returns
    -------
    y : array, same length ``n`` as ``x`` (leading axes broadcast); float32
        when ``x`` is float32, else float64. Ends are zero-padded (the signal
        is taken as silent outside ``[0, n)``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((2, 100), np.float32); x[:, 50] = 1
    >>> y = fft_filter(x, np.array([0.25, 0.5, 0.25]))
    >>> float(y[0, 50])
    0.5
    """
    xp = backend.namespace(x, h)
    if x.ndim < 1 or h.ndim < 1:
        raise ValueError(f"x and h must have at least one axis, got shapes {x.shape} and {h.shape}")
    n = x.shape[-1]
    m = h.shape[-1]
    if m < 1:
        raise ValueError("h must have at least one tap")
    d = _delay(compensate_delay, m)
    out_dtype = xp.float32 if x.dtype == xp.float32 else xp.float64
    if n == 0:
        return xp.zeros(x.shape, dtype=out_dtype)
    nd = max(x.ndim, h.ndim)
    # float32 audio is convolved in float32 (FFT round-off ~1e-7 of full scale, below
    # 24-bit resolution; half the memory and time); float64 stays float64.
    xx = xp.astype(xp.reshape(x, (1,) * (nd - x.ndim) + tuple(x.shape)), out_dtype, copy=False)
    hh = xp.astype(xp.reshape(h, (1,) * (nd - h.ndim) + tuple(h.shape)), out_dtype)
    sig = backend.signal(xp)
    if h.ndim == 1 and m >= 64 and n >= 64:  # one filter for every channel: overlap-save
        flat = xp.reshape(x, (-1, n))
        return xp.astype(xp.reshape(fft_filter_bank(flat, h, compensate_delay=d)[0, ...], tuple(x.shape)), out_dtype, copy=False)
    if m == 1:
        y = xx * hh
    elif min(n, m) < 64:
        y = sig.fftconvolve(xx, hh, mode="full", axes=-1)
    else:
        y = sig.oaconvolve(xx, hh, mode="full", axes=-1)
    return xp.astype(y[..., d : d + n], out_dtype)


def _ols_nfft(m: int, n: int) -> int:
    """FFT length for overlap-save of ``n`` samples through filters of ``m`` taps.

    The power of two minimising the transform work ``frames * nfft * log2(nfft)``
    with ``frames = ceil(n / (nfft - m + 1))``, from just above ``m`` (and at
    least 4096, so that a frame is worth a Python loop step) up to 2**17 (longer
    frames leave the cache: measured slower on one core), and no longer than one frame
    covering the whole signal.

    Examples
    --------
    >>> _ols_nfft(23000, 3_000_000), _ols_nfft(101, 500), _ols_nfft(101, 10**6)
    (131072, 1024, 4096)
    """
    whole = 1 << max(1, (n + m - 2).bit_length())  # one frame holds everything
    best, best_cost = whole, math.inf
    for p in range(max(1, (m - 1).bit_length()), 18):
        nfft = 1 << p
        if nfft > whole:
            break
        if nfft > m - 1 and nfft >= min(4096, whole):
            cost = -(-n // (nfft - m + 1)) * nfft * p
            if cost < best_cost:
                best, best_cost = nfft, cost
    return best


def fft_filter_bank(x: Any, hs: Any, *, compensate_delay: bool | int = True, nfft: int | None = None) -> Any:
    """Filter ``x`` through every FIR of a bank at once: overlap-save with shared input spectra.

    Each frame of ``x`` is transformed once and multiplied by every filter's
    spectrum, so ``K`` filters cost one forward and ``K`` inverse transforms
    per frame (the crossover of a multiband compressor, with the EQ folded into
    its bands, is one such pass). On a CPU a stereo ``x`` goes through as one
    complex signal, ``L + iR`` (:func:`_stereo_bank`); dual mono (two equal
    channels) as one channel, so that its outputs stay equal bit for bit.

    Parameters
    ----------
    x : array, shape (C, n) or (n,)
        Signal (float32 stays float32, other floats are filtered in float64).
    hs : array, shape (K, m) or (m,)
        Filter taps, all of one length ``m`` (zero-pad shorter ones).
    compensate_delay : bool or int
        As :func:`fft_filter`: ``True`` drops the ``(m-1)//2`` samples of
        delay of linear-phase filters (odd ``m``: sample-aligned output).
    nfft : int, optional
        FFT length (> m - 1); default :func:`_ols_nfft`'s cheapest power of two.

    Returns
    -------
    y : array, shape (K, C, n) (or (K, n) for 1-D ``x``), float32 for float32
        ``x``. Same values as :func:`fft_filter` per filter, to FFT rounding.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((2, 10000)).astype(np.float32)
    >>> hs = crossover_filters(48000, (200.0, 2000.0), 1201)
    >>> y = fft_filter_bank(x, hs)
    >>> y.shape, bool(np.abs(y.sum(axis=0) - x).max() < 1e-5)
    ((3, 2, 10000), True)
    """
    xp = backend.namespace(x, hs)
    one_d = x.ndim == 1
    if one_d:
        x = x[None, :]
    if hs.ndim == 1:
        hs = hs[None, :]
    if x.ndim != 2 or hs.ndim != 2:
        raise ValueError(f"x must have shape (C, n) or (n,) and hs (K, m) or (m,), got {x.shape} and {hs.shape}")
    c, n = x.shape
    k, m = hs.shape
    if m < 1 or k < 1:
        raise ValueError(f"hs must hold at least one filter of at least one tap, got shape {hs.shape}")
    d = _delay(compensate_delay, m)
    work = xp.float32 if x.dtype == xp.float32 else xp.float64
    if nfft is None:
        nfft = _ols_nfft(m, n)
    elif not (isinstance(nfft, (int, np.integer)) and nfft > m - 1):
        raise ValueError(f"nfft must be an integer longer than the filters' m - 1 = {m - 1}, got {nfft!r}")
    out = xp.empty((k, c, n), dtype=work)
    if n == 0:
        return out[:, 0] if one_d else out
    fft = backend.fft(xp)
    step = nfft - m + 1  # new output samples per frame
    frames = -(-n // step)
    # Overlap-save: xpad[j] = x[j - (m - 1 - d)], so frame f's valid outputs (its
    # last `step` circular-convolution samples) are y[f * step : (f + 1) * step].
    lead = m - 1 - d

    def frame(f: int) -> Any:  # the frame reads x[s0 : s0 + nfft], zeros outside the signal
        s0 = f * step - lead
        if x.dtype == work and s0 >= 0 and s0 + nfft <= n:
            return x[:, s0 : s0 + nfft]  # a view: no padded copy of the signal
        seg = xp.zeros((c, nfft), dtype=work)
        lo, hi = max(s0, 0), min(s0 + nfft, n)
        if hi > lo:
            seg[:, lo - s0 : hi - s0] = x[:, lo:hi]
        return seg

    if backend.is_numpy(xp) and c == 2:
        if _identical_rows(x, xp):  # dual mono: one channel's pass, so the two stay bit-identical
            out[:, 0] = fft_filter_bank(x[0], hs, compensate_delay=compensate_delay, nfft=nfft)
            out[:, 1] = out[:, 0]
        else:
            _stereo_bank(frame, frames, step, xp.astype(hs, work), out, fft, xp)
        return out
    spec = fft.rfft(xp.astype(hs, work), n=nfft, axis=-1)[:, None, None, :]  # (K, 1, 1, nfft/2+1)
    if backend.is_numpy(xp):
        spec = spec[:, :, 0, :]  # (K, 1, nfft/2+1)
        # A CPU core (here: mono, or more than two channels) takes a frame or a few at a time
        # (operands near the cache), at least four rows per transform: pocketfft runs four
        # transforms in SIMD lanes, 2.2x faster per row than one or two.
        per = max(1, -(-4 // c))
        for f0 in range(0, frames, per):  # a loop over frames (a second or more of audio each), not samples
            group = range(f0, min(frames, f0 + per))
            seg = frame(f0) if len(group) == 1 else xp.concat([frame(f) for f in group], axis=0)  # (rows, nfft)
            prod = fft.rfft(seg, axis=-1)[None] * spec  # (K, rows, nfft/2+1)
            y = fft.irfft(prod, n=nfft, axis=-1, overwrite_x=True)
            for j, f in enumerate(group):
                a = f * step
                b = min(n, a + step)
                out[:, :, a:b] = y[:, j * c : (j + 1) * c, m - 1 : m - 1 + b - a]
        return out[:, 0] if one_d else out
    # A GPU (or any namespace but NumPy's) takes many frames per transform, from one padded copy of the signal.
    xpad = xp.zeros((c, (frames - 1) * step + nfft), dtype=work)
    xpad[:, lead : lead + n] = x
    group = max(1, (1 << 24) // (nfft * c * (k + 1)))
    for f0 in range(0, frames, group):  # many frames per transform keep a GPU busy
        g = min(group, frames - f0)
        seg = xp.stack([xpad[:, (f0 + j) * step : (f0 + j) * step + nfft] for j in range(g)], axis=1)  # (C, g, nfft)
        y = fft.irfft(fft.rfft(seg, axis=-1)[None, ...] * spec, n=nfft, axis=-1)[..., m - 1 :]  # (K, C, g, step)
        a = f0 * step
        b = min(n, a + g * step)
        out[:, :, a:b] = xp.reshape(y, (k, c, g * step))[:, :, : b - a]
    return out[:, 0, :] if one_d else out


def _identical_rows(x: Any, xp: Any) -> bool:
    """Whether the two rows of ``x`` are equal sample for sample (a look at the first few
    thousand samples first: real stereo differs there at once)."""
    head = min(int(x.shape[1]), 4096)
    return bool(xp.array_equal(x[0, :head], x[1, :head])) and bool(xp.array_equal(x[0], x[1]))


#: Frames per transform in :func:`_stereo_bank`: complex transforms of 4 rows and more run in
#: a core's SIMD lanes (2 frames a group measured 25 % slower; 8 slower in isolation, the
#: operands leaving the cache).
_STEREO_FRAMES = 4


def _stereo_bank(frame: Callable[[int], Any], frames: int, step: int, hs: Any, out: Any, fft: Any, xp: Any) -> None:
    """:func:`fft_filter_bank`'s overlap-save for a stereo signal on a CPU, into ``out`` (K, 2, n):
    ``frame(f)`` is frame ``f``'s (2, nfft) samples, ``step`` its new outputs.

    The two channels travel as one complex signal ``w = L + iR``: for a real
    filter ``h``, ``h * w = h * L + i (h * R)``, so one complex transform of a
    frame and one inverse per filter give both channels' outputs, as the real and
    imaginary parts. Per frame that is 1 + K complex transforms in place of 2 + 2K
    real ones: about 10 % less time for the bank on one core (the filters' spectra
    are Hermitian to rounding, so each channel sees the other at the float
    rounding floor, below -120 dB). Same values as the real path to FFT rounding.
    """
    m = hs.shape[1]
    n = out.shape[-1]
    nfft = step + m - 1
    spec = fft.fft(hs, n=nfft, axis=-1)[:, None, :]  # (K, 1, nfft)
    w = xp.empty((_STEREO_FRAMES, nfft), dtype=spec.dtype)
    for f0 in range(0, frames, _STEREO_FRAMES):  # a loop over groups of frames (seconds of audio), not samples
        g = min(_STEREO_FRAMES, frames - f0)
        for j in range(g):
            seg = frame(f0 + j)
            w[j].real = seg[0]
            w[j].imag = seg[1]
        z = fft.ifft(fft.fft(w[:g], axis=-1)[None] * spec, axis=-1, overwrite_x=True)  # (K, g, nfft)
        for j in range(g):
            a = (f0 + j) * step
            b = min(n, a + step)
            part = z[:, j, m - 1 : m - 1 + b - a]  # the frame's valid outputs
            out[:, 0, a:b] = xp.real(part)
            out[:, 1, a:b] = xp.imag(part)


def lowpass_fir(fs: float, cutoff_hz: float, n_taps: int, *, window: str | tuple = "hamming", xp: ModuleType | None = None) -> Any:
    """Linear-phase windowed-sinc low-pass (``firwin``), -6 dB at ``cutoff_hz``.

    Parameters
    ----------
    fs : float
        Sample rate, hertz.
    cutoff_hz : float
        -6 dB point, hertz, in (0, fs/2).
    n_taps : int
        Odd length; the transition width is about ``3.3 * fs / n_taps`` Hz
        (Hamming), wider for Kaiser windows with large beta.
    window : str or tuple
        Window for ``firwin``.
    xp : module, optional
        Namespace of the returned taps (NumPy by default).

    Returns
    -------
    h : array, shape (n_taps,), float64, DC gain exactly 1 (taps sum to 1).

    Examples
    --------
    >>> h = lowpass_fir(48000, 1000.0, 1023)
    >>> round(float(h.sum()), 12)
    1.0
    """
    fs = backend.check_fs(fs)
    if not (0 < cutoff_hz < fs / 2):
        raise ValueError(f"cutoff_hz must be in (0, fs/2 = {fs / 2}), got {cutoff_hz!r}")
    if not isinstance(n_taps, (int, np.integer)) or n_taps < 3 or n_taps % 2 == 0:
        raise ValueError(f"n_taps must be an odd integer >= 3, got {n_taps!r}")
    h = _lowpass_design(float(fs), float(cutoff_hz), int(n_taps), window if not isinstance(window, list) else tuple(window))
    xp = xp or backend.array_module("cpu")
    return backend.to_device(h.copy(), xp, dtype=xp.float64)  # the caller's own


@functools.lru_cache(maxsize=64)
def _lowpass_design(fs: float, cutoff_hz: float, n_taps: int, window: str | tuple) -> np.ndarray:
    """:func:`lowpass_fir`'s taps, designed on the host (a few thousand taps, identical on
    every backend) once per set of parameters: every track at a rate uses the same
    high-pass and crossovers. Read-only: callers share it."""
    import scipy.signal

    h = scipy.signal.firwin(n_taps, cutoff_hz, window=window, fs=fs)
    return backend.read_only(h / h.sum())


def highpass_taps(fs: float, cutoff_hz: float = 20.0, n_taps: int | None = None, *, xp: ModuleType | None = None) -> Any:
    """Taps of :func:`highpass_dc`'s linear-phase high-pass (odd length, exact DC null).

    ``delta - lowpass`` with a Kaiser (beta 8) low-pass; default length
    ``8 * fs / cutoff_hz`` rounded to odd. Convolve with other linear-phase
    taps (an EQ) to run both in one FFT pass.
    """
    xp = _xp_of(xp=xp)
    fs = backend.check_fs(fs)
    if not (0 < cutoff_hz < fs / 4):
        raise ValueError(f"cutoff_hz must be in (0, fs/4 = {fs / 4}), got {cutoff_hz!r}")
    if n_taps is None:
        n_taps = int(round(8 * fs / cutoff_hz)) | 1
    lp = lowpass_fir(fs, cutoff_hz, n_taps, window=("kaiser", 8.0), xp=xp)
    hp = -lp
    hp[(n_taps - 1) // 2] += 1.0
    return hp - xp.mean(hp)  # exact DC null


def highpass_dc(x: Any, fs: float, cutoff_hz: float = 20.0, n_taps: int | None = None) -> Any:
    """Remove DC and subsonic content with a linear-phase FIR high-pass.

    The per-channel mean is subtracted first (a float64 mean), then a
    linear-phase high-pass ``delta - lowpass`` (Kaiser beta 8, about -80 dB
    stop band, taps summing to exactly zero so DC is nulled) is applied by FFT
    and its delay removed.

    Why a linear-phase FIR rather than zero-phase ``sosfiltfilt``: both leave
    the bass phase untouched and the output sample-aligned, but the FIR (a)
    has an exact, known magnitude (filtfilt squares the IIR magnitude and
    needs edge padding that colours the first and last seconds), (b) nulls
    DC exactly, and (c) is one FFT convolution, parallel in time on a GPU,
    where an IIR recursion is serial along the track. The price is symmetric
    pre-/post-ringing at the cutoff frequency, below ~20 Hz and inaudible.

    Parameters
    ----------
    x : array, shape (C, n)
        Audio, float32 (or float64).
    fs : float
        Sample rate, hertz.
    cutoff_hz : float
        -6 dB point of the high-pass, hertz (default 20 Hz).
    n_taps : int, optional
        Odd filter length; default ``8 * fs / cutoff_hz`` rounded to odd
        (19201 at 48 kHz / 20 Hz: transition about 14 Hz to 26 Hz).

    Returns
    -------
    y : array, same shape and dtype as ``x``, sample-aligned.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.full((2, 48000), 0.1, np.float32)
    >>> float(abs(highpass_dc(x, 48000)).max()) < 1e-6
    True
    """
    xp = backend.namespace(x)
    hp = highpass_taps(fs, cutoff_hz, n_taps, xp=xp)
    mean = xp.mean(x.astype(xp.float64), axis=-1, keepdims=True)
    y = fft_filter(x.astype(xp.float64) - mean, hp)
    return y.astype(x.dtype)


def _crossover_taps(fs: float, edges_hz: Sequence[float]) -> int:
    """Default crossover length: ``6 * fs / edges[0]`` rounded to odd (2401 taps at 48 kHz,
    120 Hz; the same 50 ms at every rate); one tap (the identity) without edges."""
    return int(round(6 * fs / float(edges_hz[0]))) | 1 if len(edges_hz) else 1


def _crossover_lowpasses(fs: float, edges_hz: Sequence[float], n_taps: int | None, xp: ModuleType) -> Any:
    """The linear-phase low-passes at each crossover edge, shape (K-1, n_taps), validated.

    Default length :func:`_crossover_taps` (2401 taps at 48 kHz, 120 Hz).
    """
    fs = backend.check_fs(fs)
    edges = [float(e) for e in edges_hz]
    if len(edges) == 0 or any(not (0 < e < fs / 2) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges_hz must be strictly increasing and within (0, fs/2 = {fs / 2}), got {edges}")
    if n_taps is None:
        n_taps = _crossover_taps(fs, edges)
    return xp.stack([lowpass_fir(fs, e, n_taps, xp=xp) for e in edges])


#: Highest crossover edge a plan keeps, as a fraction of the sample rate (0.8 of Nyquist):
#: above it the top band would be a sliver between the edge's transition and Nyquist, where
#: resamplers and anti-alias filters roll off (and :func:`acetate.pipeline.chain.render.eq_curve`
#: stops at 0.45 fs): nothing a band compressor or a width stage could use.
MAX_CROSSOVER_FRACTION = 0.4

#: Transition width of :func:`lowpass_fir`'s Hamming design, in units of ``fs / n_taps``
#: (about 3.3: pass band to 53 dB stop band).
_HAMMING_TRANSITION = 3.3


class CrossoverPlan(NamedTuple):
    """The crossover a sample rate allows for a requested set of edges (:func:`crossover_plan`).

    Attributes
    ----------
    edges_hz : tuple of float
        The edges kept, increasing (possibly none: one full-band band).
    sources : tuple of int
        Per band of the plan (``len(edges_hz) + 1``), the requested band it stands for:
        where an edge is dropped, the band above it merges into the band below, and the
        merged band takes the lower band's index (its parameters).
    dropped : tuple of (float, str)
        Each dropped edge (hertz) with the reason, in increasing order.
    n_taps : int
        The band filters' length (:func:`crossover_filters`' default for the kept edges,
        or the length asked for).
    """

    edges_hz: tuple[float, ...]
    sources: tuple[int, ...]
    dropped: tuple[tuple[float, str], ...]
    n_taps: int


def crossover_plan(
    fs: float, edges_hz: Sequence[float], n_taps: int | None = None, *, max_fraction: float = MAX_CROSSOVER_FRACTION
) -> CrossoverPlan:
    """Which of the requested crossover edges the band filters can realise at ``fs``.

    A preset's edges are fixed in hertz (120 Hz, 1 kHz, 6 kHz), but the rates a
    master may run at go down to 8 kHz, where 6 kHz lies above Nyquist. Going up
    from the lowest edge, an edge is kept when

    * it lies below ``max_fraction * fs`` (0.4 fs: 3.2 kHz at 8 kHz, 4.41 kHz at
      11.025 kHz, 6.4 kHz at 16 kHz), and its low-pass's transition band
      (``3.3 * fs / n_taps`` wide, centred on the edge) lies inside ``(0, fs/2)``;
    * it lies at least one transition width above the last edge kept, so the band
      between the two reaches unity gain (closer edges give a band whose filter
      never passes anything at full level).

    A dropped edge merges the band above it into the band below, which keeps the
    lower band's parameters (:attr:`CrossoverPlan.sources`). The filters' default
    length follows the lowest edge kept (as :func:`crossover_filters`), so where no
    edge is dropped the plan is the request and the filters are unchanged.

    Parameters
    ----------
    fs : float
        Sample rate, hertz.
    edges_hz : sequence of float
        Requested edges, hertz: positive, finite, strictly increasing.
    n_taps : int, optional
        Odd band-filter length; default :func:`crossover_filters`' (``6 * fs / edges[0]``).
    max_fraction : float
        Highest edge kept, as a fraction of ``fs`` (in (0, 0.5]).

    Returns
    -------
    CrossoverPlan

    Raises
    ------
    ValueError
        Edges not positive, finite and strictly increasing (a broken preset, whatever the rate).

    Examples
    --------
    >>> p = crossover_plan(8000, (120.0, 1000.0, 6000.0))
    >>> p.edges_hz, p.sources, p.dropped[0][0]
    ((120.0, 1000.0), (0, 1, 2), 6000.0)
    >>> crossover_plan(48000, (120.0, 1000.0, 6000.0)).dropped
    ()
    """
    fs = backend.check_fs(fs)
    edges = [float(e) for e in edges_hz]
    if any(not (math.isfinite(e) and e > 0) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges_hz must be positive, finite and strictly increasing, got {edges}")
    if not (0.0 < max_fraction <= 0.5):
        raise ValueError(f"max_fraction must be in (0, 0.5], got {max_fraction!r}")
    if n_taps is not None and not (isinstance(n_taps, (int, np.integer)) and n_taps >= 3 and n_taps % 2 == 1):
        raise ValueError(f"n_taps must be an odd integer >= 3, got {n_taps!r}")
    kept: list[float] = []
    sources = [0]
    dropped: list[tuple[float, str]] = []
    taps = n_taps
    for j, e in enumerate(edges):  # a handful of edges: parameters, not samples
        m = int(taps) if taps is not None else _crossover_taps(fs, [e])  # the length if e is the lowest kept
        half = 0.5 * _HAMMING_TRANSITION * fs / m
        if e >= max_fraction * fs:
            why = f"at or above {max_fraction:g} fs = {max_fraction * fs:g} Hz"
        elif e + half >= fs / 2 or e - half <= 0:
            why = f"its {2 * half:.0f} Hz transition band does not fit between 0 and Nyquist ({fs / 2:g} Hz)"
        elif kept and e - kept[-1] < 2 * half:
            why = f"within the band filters' {2 * half:.0f} Hz transition of the {kept[-1]:g} Hz edge"
        else:
            kept.append(e)
            sources.append(j + 1)
            taps = m
            continue
        dropped.append((e, why))
    return CrossoverPlan(tuple(kept), tuple(sources), tuple(dropped), int(taps) if taps is not None else 1)


def crossover_filters(
    fs: float, edges_hz: Sequence[float] = (120.0, 1000.0, 6000.0), n_taps: int | None = None, *, xp: ModuleType | None = None
) -> Any:
    """Complementary linear-phase band filters whose sum is a pure delay.

    Band 0 is a low-pass at ``edges_hz[0]``; band k is
    ``lowpass_k - lowpass_{k-1}``; the last band is ``delta - lowpass_last``.
    The taps of all bands add up to a unit impulse at ``(n_taps-1)/2``
    exactly (to float rounding), so the bands' magnitude sum is flat.

    Parameters
    ----------
    fs : float
        Sample rate, hertz.
    edges_hz : sequence of float
        Strictly increasing crossover frequencies (-6 dB points), hertz, below
        Nyquist (:func:`crossover_plan` says which a rate can use).
    n_taps : int, optional
        Odd length shared by all bands; default about ``6 * fs / edges_hz[0]``
        (2401 taps at 48 kHz with a 120 Hz lowest edge: transition ~80 Hz).
    xp : module, optional
        Namespace of the returned taps.

    Returns
    -------
    h : array, shape (len(edges_hz) + 1, n_taps), float64
        No edges give one band, the identity: a unit impulse (one tap by
        default), so a plan whose edges all lie too near Nyquist
        (:func:`crossover_plan`) still runs its one band.

    Examples
    --------
    >>> h = crossover_filters(48000, (200.0, 2000.0), 1201)
    >>> h.shape, round(float(h.sum(axis=0)[600]), 12)
    ((3, 1201), 1.0)
    >>> crossover_filters(8000, ()).tolist()
    [[1.0]]
    """
    xp = xp or backend.array_module("cpu")
    if len(edges_hz) == 0:
        backend.check_fs(fs)
        m = 1 if n_taps is None else int(n_taps)
        if m < 1 or m % 2 == 0:
            raise ValueError(f"n_taps must be odd, got {n_taps!r}")
        delta = xp.zeros((1, m), dtype=xp.float64)
        delta[0, (m - 1) // 2] = 1.0
        return delta
    lps = _crossover_lowpasses(fs, edges_hz, n_taps, xp)
    n_taps = lps.shape[1]
    delta = xp.zeros(n_taps, dtype=xp.float64)
    delta[(n_taps - 1) // 2] = 1.0
    bands = [lps[0, :]] + [lps[k, :] - lps[k - 1, :] for k in range(1, lps.shape[0])] + [delta - lps[-1, :]]
    return xp.stack(bands)


def crossover_bands(x: Any, fs: float, edges_hz: Sequence[float] = (120.0, 1000.0, 6000.0), n_taps: int | None = None) -> Any:
    """Split ``x`` into complementary, sample-aligned linear-phase bands.

    The band filters of :func:`crossover_filters` run in one overlap-save pass
    (:func:`fft_filter_bank`: one forward transform per frame for all bands).
    Their taps sum to a pure (compensated) delay, so the bands sum back to
    ``x`` to FFT rounding (~1e-7 of full scale in float32).

    Parameters
    ----------
    x : array, shape (C, n)
        Audio, float32 or float64.
    fs : float
        Sample rate, hertz.
    edges_hz : sequence of float
        Crossover frequencies, hertz, strictly increasing (default 120, 1000,
        6000 Hz: four bands).
    n_taps : int, optional
        Odd FIR length (see :func:`crossover_filters`).

    Returns
    -------
    bands : array, shape (len(edges_hz) + 1, C, n), dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((2, 4800)).astype(np.float32)
    >>> b = crossover_bands(x, 48000, (500.0, 5000.0), 577)
    >>> b.shape, bool(np.abs(b.sum(axis=0) - x).max() < 1e-5)
    ((3, 2, 4800), True)
    """
    xp = backend.namespace(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (channels, n), got {x.shape}")
    return fft_filter_bank(x, crossover_filters(fs, edges_hz, n_taps, xp=xp)).astype(x.dtype, copy=False)
