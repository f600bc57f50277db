"""Batched STFT, long-term spectrum in fractional-octave bands, and spectral descriptors.

Everything here is a pure function of arrays: ``xp = backend.namespace(x)``
and then only ``xp.`` calls, so the same code runs on NumPy and on CuPy.

Conventions
-----------
* Audio is ``(channels, n)`` float32; the STFT is one ``rfft`` call over all
  frames of all channels (frames are gathered by an index array, which works on
  both backends).
* Power spectra are *one-sided and Parseval-scaled*: for a stationary signal
  the sum of a frame's power over all bins equals the signal's mean square
  (full-scale sine: 0.5, i.e. -3.01 dB).  Long-term sums are float64.
* Bands are ISO fractional-octave bands on base-2 exact centres
  ``fc = 1000 * 2**(k / b)`` Hz with edges ``fc * 2**(+-1 / (2 b))``;
  ``b = 3`` (1/3 octave, 31 bands, nominal 20 Hz .. 20 kHz) or ``b = 1``
  (octave, 10 bands, nominal 31.5 Hz .. 16 kHz).  A band whose exact centre
  is at or above Nyquist is *invalid* and reported as NaN, so band vectors
  have a fixed length whatever the sample rate.  FFT bins are shared between
  bands by the fraction of each bin's width (``fs / n_fft``) that falls inside
  the band, so bands narrower than a bin are never empty.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from acetate.kernels import backend, units

__all__ = [
    "BAND_CENTRES_HZ",
    "OCTAVE_CENTRES_HZ",
    "DEFAULT_FRAME_SECONDS",
    "DEFAULT_HOP_SECONDS",
    "Bands",
    "Spectrogram",
    "band_edges",
    "band_labels",
    "frame_lengths",
    "stft",
    "stft_power",
    "stereo_power_stats",
    "band_matrix",
    "band_power",
    "ltas",
    "level_db",
    "spectral_centroid",
    "spectral_rolloff",
    "spectral_flatness",
    "spectral_tilt",
    "band_dynamics",
]

#: ISO 266 nominal 1/3-octave centre frequencies (hertz), 20 Hz .. 20 kHz (31 bands).
BAND_CENTRES_HZ: tuple[float, ...] = (
    20.0,
    25.0,
    31.5,
    40.0,
    50.0,
    63.0,
    80.0,
    100.0,
    125.0,
    160.0,
    200.0,
    250.0,
    315.0,
    400.0,
    500.0,
    630.0,
    800.0,
    1000.0,
    1250.0,
    1600.0,
    2000.0,
    2500.0,
    3150.0,
    4000.0,
    5000.0,
    6300.0,
    8000.0,
    10000.0,
    12500.0,
    16000.0,
    20000.0,
)

#: Nominal octave-band centre frequencies (hertz), 31.5 Hz .. 16 kHz (10 bands).
OCTAVE_CENTRES_HZ: tuple[float, ...] = (
    31.5,
    63.0,
    125.0,
    250.0,
    500.0,
    1000.0,
    2000.0,
    4000.0,
    8000.0,
    16000.0,
)

# Exponent k of the exact base-2 centre 1000 * 2**(k / fraction), per fraction.
_K_RANGE = {3: (-17, 13), 1: (-5, 4)}
_NOMINAL = {3: BAND_CENTRES_HZ, 1: OCTAVE_CENTRES_HZ}

#: Default STFT frame (seconds); rounded to the nearest power of two in samples (4096 at 48 kHz).
DEFAULT_FRAME_SECONDS = 4096 / 48000
#: Default STFT hop (seconds): half a default frame (Hann at 50 % overlap sums to a constant).
DEFAULT_HOP_SECONDS = 2048 / 48000

_TINY = 1e-30  # power floor for logarithms (-300 dB)


class Bands(NamedTuple):
    """A fractional-octave band grid (host NumPy arrays, one entry per band).

    Attributes
    ----------
    nominal : ndarray
        Nominal (ISO) centre frequencies, hertz; used for names.
    centre : ndarray
        Exact base-2 centre frequencies, hertz.
    lower, upper : ndarray
        Band edges, hertz (``centre * 2**(-+1/(2 fraction))``).
    valid : ndarray of bool
        ``centre < fs / 2``: bands at or above Nyquist are invalid (NaN).
    fraction : int
        Bands per octave (1 or 3).
    """

    nominal: np.ndarray
    centre: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    valid: np.ndarray
    fraction: int


class Spectrogram(NamedTuple):
    """A batched STFT.

    Attributes
    ----------
    spec : array, complex, shape (C, F, K)
        ``rfft`` of the Hann-windowed frames (unscaled).
    scale : array, float, shape (K,)
        One-sided Parseval weights: ``scale * |spec|**2`` is power in
        (full scale)**2 whose sum over bins is the frame's mean square.
    freqs : array, float64, shape (K,)
        Bin centre frequencies, hertz.
    fs : int
        Sample rate, hertz.
    frame, hop : int
        Frame length (= FFT size) and hop, samples.
    """

    spec: Any
    scale: Any
    freqs: Any
    fs: int
    frame: int
    hop: int


def _check_fraction(fraction: Any) -> int:
    if fraction not in _K_RANGE:
        raise ValueError(f"fraction must be 1 (octave) or 3 (1/3 octave), got {fraction!r}")
    return int(fraction)


def band_edges(fs: float, fraction: int = 3) -> Bands:
    """The fractional-octave band grid for sample rate ``fs``.

    Parameters
    ----------
    fs : int
        Sample rate, hertz (decides which bands are valid).
    fraction : {3, 1}
        Bands per octave: 3 gives the 31 ISO 1/3-octave bands 20 Hz .. 20 kHz,
        1 the 10 octave bands 31.5 Hz .. 16 kHz.

    Returns
    -------
    Bands
        Nominal and exact centres, lower and upper edges (hertz) and the
        validity mask (exact centre below Nyquist).
    """
    fs = int(backend.check_fs(fs, whole=True))
    fraction = _check_fraction(fraction)
    k0, k1 = _K_RANGE[fraction]
    k = np.arange(k0, k1 + 1, dtype=np.float64)
    centre = 1000.0 * 2.0 ** (k / fraction)
    half = 2.0 ** (1.0 / (2 * fraction))
    return Bands(
        nominal=np.asarray(_NOMINAL[fraction], dtype=np.float64),
        centre=centre,
        lower=centre / half,
        upper=centre * half,
        valid=centre < fs / 2.0,
        fraction=fraction,
    )


def band_labels(fraction: int = 3) -> list[str]:
    """Stable text labels of the nominal band centres: ``"20"``, ``"31p5"``, ``"1000"`` ...

    Used to build feature names such as ``ltas_mid_31p5hz_db``.
    """
    fraction = _check_fraction(fraction)
    out = []
    for f in _NOMINAL[fraction]:
        out.append(str(int(f)) if float(f).is_integer() else repr(float(f)).replace(".", "p"))
    return out


def frame_lengths(fs: float, frame_seconds: float = DEFAULT_FRAME_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS) -> tuple[int, int]:
    """Frame and hop in samples for ``fs``.

    The frame (also the FFT size) is ``frame_seconds * fs`` rounded to the
    nearest power of two (4096 at 44.1 and 48 kHz, 2048 at 22.05 kHz); the hop
    is ``hop_seconds * fs`` rounded, at least one sample and at most a frame.
    """
    fs = int(backend.check_fs(fs, whole=True))
    if not (isinstance(frame_seconds, (int, float)) and math.isfinite(frame_seconds) and frame_seconds > 0):
        raise ValueError(f"frame_seconds must be a positive number of seconds, got {frame_seconds!r}")
    if not (isinstance(hop_seconds, (int, float)) and math.isfinite(hop_seconds) and hop_seconds > 0):
        raise ValueError(f"hop_seconds must be a positive number of seconds, got {hop_seconds!r}")
    frame = 2 ** max(4, int(round(math.log2(frame_seconds * fs))))
    hop = min(frame, max(1, int(round(hop_seconds * fs))))
    return frame, hop


def _as_audio(x: Any) -> Any:
    xp = backend.namespace(x)
    if x.ndim == 1:
        x = xp.reshape(x, (1, -1))
    if x.ndim != 2:
        raise ValueError(f"audio must have shape (channels, n), got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"audio must have at least one channel and one sample, got shape {tuple(x.shape)}")
    return x


def _rfft(xp: Any) -> Any:
    """``rfft`` for ``xp``: SciPy's on the host (vectorises batches of transforms,
    3-4x faster than NumPy's on one core), CuPy's (cuFFT) on the GPU, the standard's
    ``xp.fft.rfft`` for any other namespace."""
    if backend.is_numpy(xp):
        return backend.fft(xp).rfft
    return xp.fft.rfft


def _hann(frame: int, xp: Any) -> Any:
    """Periodic Hann window of ``frame`` samples, float32."""
    t = xp.arange(frame, dtype=xp.float64)
    return xp.astype(0.5 - 0.5 * xp.cos(2.0 * math.pi * t / frame), xp.float32)


def _n_frames(n: int, frame: int, hop: int) -> int:
    return 1 if n <= frame else 1 + -(-(n - frame) // hop)


def _windowed_frames(x: Any, frame: int, hop: int, window: Any, f0: int, f1: int) -> Any:
    """Frames ``f0 .. f1 - 1`` of float32 audio ``x`` (C, n >= frame), times ``window``: (C, f1 - f0, frame) float32.

    Frame ``k`` starts at ``min(k * hop, n - frame)``.  Frames on the hop grid
    come from a strided view of the signal on NumPy and CuPy (one fused window-and-copy
    pass, no index array; :func:`acetate.kernels.backend.frames`, a gather elsewhere);
    the final frame, ending at the last sample, is copied on its own.
    """
    xp = backend.namespace(x)
    c, n = int(x.shape[0]), int(x.shape[1])
    n_reg = (n - frame) // hop + 1  # frames that start on the hop grid
    g = max(0, min(f1, n_reg) - f0)  # regular frames in this range
    out = xp.empty((c, f1 - f0, frame), dtype=xp.float32)
    if g:
        seg = x[:, f0 * hop : (f0 + g - 1) * hop + frame]
        if backend.is_native(xp) and (not seg.flags.c_contiguous or seg.strides[1] != seg.itemsize):
            seg = xp.asarray(seg, copy=True)
        out[:, :g, :] = backend.frames(seg, frame, hop, g) * window
    if f1 - f0 > g:  # the final frame, ending at the last sample
        out[:, g, :] = x[:, n - frame :] * window
    return out


def stft(x: Any, fs: float, *, frame_seconds: float = DEFAULT_FRAME_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS) -> Spectrogram:
    """Batched short-time Fourier transform: one ``rfft`` over all frames of all channels.

    Parameters
    ----------
    x : array, shape (C, n) or (n,)
        Audio, full scale 1.0 (computed in float32).
    fs : int
        Sample rate, hertz.
    frame_seconds, hop_seconds : float
        Frame and hop lengths, seconds (see :func:`frame_lengths`).

    Returns
    -------
    Spectrogram
        ``spec`` has shape ``(C, F, frame // 2 + 1)`` with
        ``F = 1 + ceil((n - frame) / hop)``: frames start every ``hop``
        samples and the last one ends at the last sample, so every sample lies
        in at least one frame without zero padding (a signal shorter than one
        frame is zero-padded to one frame).
    """
    xp = backend.namespace(x)
    x = _as_audio(x)
    fs = int(backend.check_fs(fs, whole=True))
    frame, hop = frame_lengths(fs, frame_seconds, hop_seconds)
    x, n_frames = _prepare(x, frame, hop)
    window = _hann(frame, xp)
    # Frames every hop; the last one ends at the last sample (no zero padding,
    # hence no artificial edge), so every sample lies in at least one frame.
    frames = _windowed_frames(x, frame, hop, window, 0, n_frames)  # (C, F, frame)
    spec = _rfft(xp)(frames, n=frame, axis=-1)
    scale, freqs = _scale_freqs(window, frame, fs, xp)
    return Spectrogram(spec=spec, scale=scale, freqs=freqs, fs=fs, frame=frame, hop=hop)


def _prepare(x: Any, frame: int, hop: int) -> tuple[Any, int]:
    """float32 audio padded to at least one frame, and its number of frames."""
    xp = backend.namespace(x)
    n = int(x.shape[1])
    if x.dtype != xp.float32:
        x = xp.astype(x, xp.float32)
    if n < frame:
        x = xp.concat([x, xp.zeros((x.shape[0], frame - n), dtype=xp.float32)], axis=1)
    return x, _n_frames(n, frame, hop)


@functools.cache
def _window_power(frame: int) -> float:
    """Sum of squares of :func:`_hann`'s float32 window (float64 sum): a design constant, on the host."""
    npx = backend.array_module("cpu")
    return float(npx.sum(npx.astype(_hann(frame, npx), npx.float64) ** 2))


def _scale_freqs(window: Any, frame: int, fs: int, xp: Any) -> tuple[Any, Any]:
    """One-sided Parseval weights and bin frequencies of a ``frame``-point rfft (``window``:
    :func:`_hann`'s, whose power is a host constant: nothing is read back)."""
    k = frame // 2 + 1
    w2 = _window_power(frame)
    scale = xp.full((k,), 2.0 / (frame * w2), dtype=xp.float64)
    scale[0] = 1.0 / (frame * w2)
    scale[-1] = 1.0 / (frame * w2)  # Nyquist bin (frame is even)
    freqs = xp.arange(k, dtype=xp.float64) * (fs / frame)
    return scale, freqs


#: Frames per rfft batch in :func:`stereo_power_stats` on the CPU (keeps the batch in cache).
_CPU_FRAME_BATCH = 64


def stereo_power_stats(
    lr: Any, fs: float, fraction: int = 1, *, frame_seconds: float = DEFAULT_FRAME_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS
) -> tuple[Any, Any, Any, Any, Any, Any, Spectrogram]:
    """Everything the fingerprint needs from the STFT of (L, R), without keeping the STFT.

    Frames are transformed in batches and reduced at once: the long-term
    auto- and cross-power (as :func:`acetate.kernels.stereo.cross_spectra`
    of :func:`stft`), and per frame the channel-mean power in
    ``fraction``-octave bands (as :func:`band_power` of ``(|L|^2 + |R|^2) / 2``
    scaled, float32) and its total (float64).

    Returns
    -------
    p_ll, p_rr, p_lr : arrays, float64, shape (K,)
    band_frames : array, float32, shape (F, B)  (NaN for invalid bands)
    frame_total : array, float64, shape (F,)
    freqs : array, float64, shape (K,)
    spec_info : Spectrogram
        With ``spec`` set to ``None`` (frame, hop, scale, freqs, fs).
    """
    xp = backend.namespace(lr)
    lr = _as_audio(lr)
    if lr.shape[0] != 2:
        raise ValueError(f"lr must have shape (2, n), got shape {tuple(lr.shape)}")
    fs = int(backend.check_fs(fs, whole=True))
    frame, hop = frame_lengths(fs, frame_seconds, hop_seconds)
    x, n_frames = _prepare(lr, frame, hop)
    window = _hann(frame, xp)
    scale, freqs = _scale_freqs(window, frame, fs, xp)
    w_band = xp.astype(band_matrix(freqs, fs, fraction), xp.float32).T  # (K, B)
    half_scale = xp.astype(scale * 0.5, xp.float32)
    rfft = _rfft(xp)
    f64 = xp.float64
    k = frame // 2 + 1
    acc_ll = xp.zeros((k,), dtype=f64)
    acc_rr = xp.zeros((k,), dtype=f64)
    acc_lr = xp.zeros((k,), dtype=f64)
    bands, totals = [], []
    batch = n_frames if backend.is_gpu(xp) else _CPU_FRAME_BATCH
    for f0 in range(0, n_frames, batch):  # batches of frames, not single frames
        f1 = min(n_frames, f0 + batch)
        spec = rfft(_windowed_frames(x, frame, hop, window, f0, f1), n=frame, axis=-1)
        if backend.is_native(xp):
            # The spectra as float pairs (re, im), (2, f, 2K): products of contiguous rows, then the
            # pairs summed (re*re + im*im, re_l*re_r + im_l*im_r: the same operations as on
            # real and imaginary views, a third faster).
            v = spec.view(xp.float32)
            sq = v * v
            p_lr2 = sq[..., 0::2] + sq[..., 1::2]  # (2, f, K) float32: |L|^2, |R|^2
            prod = v[0, ...] * v[1, ...]
            cross = prod[:, 0::2] + prod[:, 1::2]
        else:  # the standard has no views by dtype: the same products of the real and imaginary parts
            re, im = xp.real(spec), xp.imag(spec)
            p_lr2 = re * re + im * im
            cross = re[0, ...] * re[1, ...] + im[0, ...] * im[1, ...]
        p_l, p_r = p_lr2[0, ...], p_lr2[1, ...]
        acc_ll = acc_ll + xp.sum(p_l, axis=0, dtype=f64)
        acc_rr = acc_rr + xp.sum(p_r, axis=0, dtype=f64)
        acc_lr = acc_lr + xp.sum(cross, axis=0, dtype=f64)
        frame_pow = p_l * half_scale + p_r * half_scale  # channel mean, Parseval-scaled
        bands.append(frame_pow @ w_band)
        totals.append(xp.sum(frame_pow, axis=-1, dtype=f64))
    s = scale / n_frames
    band_frames = _nan_invalid(xp.concat(bands, axis=0), fs, fraction)
    info = Spectrogram(spec=None, scale=scale, freqs=freqs, fs=fs, frame=frame, hop=hop)
    return acc_ll * s, acc_rr * s, acc_lr * s, band_frames, xp.concat(totals), freqs, info


def stft_power(
    x: Any, fs: float, *, frame_seconds: float = DEFAULT_FRAME_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS
) -> tuple[Any, Any]:
    """Parseval-scaled one-sided power per frame and bin.

    Returns
    -------
    power : array, float32, shape (C, F, K)
        Power in (full scale)**2 per bin; the sum over bins is the frame's
        mean square.
    freqs : array, float64, shape (K,)
        Bin frequencies, hertz.
    """
    s = stft(x, fs, frame_seconds=frame_seconds, hop_seconds=hop_seconds)
    xp = backend.namespace(s.spec)
    power = (xp.real(s.spec) ** 2 + xp.imag(s.spec) ** 2) * xp.astype(s.scale, xp.float32)
    return power, s.freqs


def band_matrix(freqs: Any, fs: float, fraction: int = 3) -> Any:
    """Weights that sum bin power into fractional-octave bands.

    Parameters
    ----------
    freqs : array, shape (K,)
        Evenly spaced bin frequencies from 0 to Nyquist, hertz (as from :func:`stft`).
    fs : int
        Sample rate, hertz.
    fraction : {3, 1}
        Bands per octave.

    Returns
    -------
    array, float64, shape (B, K)
        Row ``b`` holds, for each bin, the fraction of the bin's width
        (``[f - df/2, f + df/2]`` clipped to ``[0, fs/2]``) inside band ``b``.
        Rows of invalid bands (centre at or above Nyquist) are zero.
    """
    xp = backend.namespace(freqs)
    fs = int(backend.check_fs(fs, whole=True))
    bands = band_edges(fs, fraction)
    k = int(freqs.shape[0])
    if k < 2:
        raise ValueError(f"freqs must hold at least 2 bins, got {k}")
    nyq = fs / 2.0
    df = nyq / (k - 1)
    f = xp.astype(freqs, xp.float64)
    b_lo = xp.maximum(f - df / 2, 0.0)[None, :]
    b_hi = xp.minimum(f + df / 2, nyq)[None, :]
    lo = xp.asarray(bands.lower, dtype=xp.float64)[:, None]
    hi = xp.asarray(np.minimum(bands.upper, nyq), dtype=xp.float64)[:, None]
    overlap = xp.maximum(xp.minimum(hi, b_hi) - xp.maximum(lo, b_lo), 0.0)
    w = overlap / (b_hi - b_lo)
    valid = xp.asarray(bands.valid)[:, None]
    return xp.where(valid, w, 0.0)


def _nan_invalid(values: Any, fs: int, fraction: int) -> Any:
    xp = backend.namespace(values)
    valid = xp.asarray(band_edges(fs, fraction).valid)
    return xp.where(valid, values, xp.nan)


def band_power(power: Any, freqs: Any, fs: float, fraction: int = 3) -> Any:
    """Sum bin power into fractional-octave bands.

    Parameters
    ----------
    power : array, shape (..., K)
        Parseval-scaled bin power (any leading shape: channels, frames).
    freqs : array, shape (K,)
        Bin frequencies, hertz.
    fs : int
        Sample rate, hertz.
    fraction : {3, 1}
        Bands per octave.

    Returns
    -------
    array, shape (..., B)
        Band power in (full scale)**2, in the dtype of ``power``; NaN for
        bands at or above Nyquist.
    """
    xp = backend.namespace(power)
    fs = int(backend.check_fs(fs, whole=True))
    if power.shape[-1] != freqs.shape[0]:
        raise ValueError(f"power has {power.shape[-1]} bins but freqs has {freqs.shape[0]}")
    w = xp.astype(band_matrix(freqs, fs, fraction), power.dtype)
    return _nan_invalid(xp.matmul(power, w.T), fs, fraction)


def ltas(
    x: Any, fs: float, fraction: int = 3, *, frame_seconds: float = DEFAULT_FRAME_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS
) -> Any:
    """Long-term average spectrum per channel in fractional-octave bands.

    Parameters
    ----------
    x : array, shape (C, n)
        Audio, full scale 1.0.
    fs : int
        Sample rate, hertz.
    fraction : {3, 1}
        Bands per octave.

    Returns
    -------
    array, float64, shape (C, B)
        Mean band power over all frames, (full scale)**2 (a full-scale sine
        gives 0.5 in its band); NaN above Nyquist.  Use :func:`level_db` for dB.
    """
    power, freqs = stft_power(x, fs, frame_seconds=frame_seconds, hop_seconds=hop_seconds)
    xp = backend.namespace(power)
    mean = xp.mean(xp.astype(power, xp.float64), axis=1)  # (C, K)
    return band_power(mean, freqs, fs, fraction)


def level_db(power: Any, reference: Any = 1.0, floor_db: float = -300.0) -> Any:
    """``10 log10(power / reference)`` in dB, floored at ``floor_db``; NaN stays NaN.

    A zero or negative ``reference`` gives NaN (level undefined).
    """
    xp = backend.namespace(power)
    p = xp.asarray(power, dtype=xp.float64)
    ref = xp.asarray(reference, dtype=xp.float64)
    ok_ref = ref > 0
    ratio = p / xp.where(ok_ref, ref, 1.0)
    floor = units.db_to_power(floor_db)
    db = units.power_to_db(xp.where(ratio > floor, ratio, floor))
    db = xp.where(xp.isnan(p), xp.nan, db)
    return xp.where(ok_ref, db, xp.nan)


def _band_limits(freqs: Any, fmin: float | None, fmax: float | None) -> Any:
    xp = backend.namespace(freqs)
    m = xp.ones(freqs.shape, dtype=xp.bool)
    if fmin is not None:
        m = m & (freqs >= fmin)
    if fmax is not None:
        m = m & (freqs <= fmax)
    return m


def spectral_centroid(power: Any, freqs: Any) -> Any:
    """Power-weighted mean frequency, hertz.

    Parameters
    ----------
    power : array, shape (..., K)
        Bin power (e.g. a long-term average).
    freqs : array, shape (K,)
        Bin frequencies, hertz.

    Returns
    -------
    array, shape (...)
        ``sum(f P) / sum(P)``; NaN where the spectrum is all zero.
    """
    xp = backend.namespace(power)
    p = xp.astype(power, xp.float64)
    total = xp.sum(p, axis=-1)
    num = xp.sum(p * freqs, axis=-1)
    ok = total > 0
    return xp.where(ok, num / xp.where(ok, total, 1.0), xp.nan)


def spectral_rolloff(power: Any, freqs: Any, fraction: float = 0.85) -> Any:
    """Roll-off frequency: the lowest bin frequency below which ``fraction`` of the power lies, hertz.

    Returns NaN where the spectrum is all zero.
    """
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    xp = backend.namespace(power)
    p = xp.astype(power, xp.float64)
    cum = backend.cumsum(xp, p, axis=-1)
    total = cum[..., -1:]
    k = xp.argmax(xp.astype(cum >= fraction * total, xp.int8), axis=-1)  # the first bin reaching it
    f = backend.take(xp, freqs, k)
    return xp.where(total[..., 0] > 0, f, xp.nan)


def spectral_flatness(power: Any, freqs: Any, fmin: float | None = 20.0, fmax: float | None = 20000.0) -> Any:
    """Spectral flatness: geometric over arithmetic mean of bin power in ``[fmin, fmax]`` hertz.

    0 for a pure tone, near 1 for white noise's long-term spectrum.  Bin power
    is floored at 1e-30 before the logarithm.  NaN where the range holds no
    bin or the spectrum there is all zero.
    """
    xp = backend.namespace(power)
    sel = _band_limits(freqs, fmin, fmax)
    w = xp.astype(sel, xp.float64)
    n_sel = xp.sum(w)  # on the device: an empty range (n_sel = 0) gives 0 / 1 and NaN below
    p = xp.astype(power, xp.float64)
    arith = xp.sum(p * w, axis=-1) / xp.maximum(n_sel, 1.0)
    geo = xp.exp(xp.sum(xp.log(xp.maximum(p, _TINY)) * w, axis=-1) / xp.maximum(n_sel, 1.0))
    ok = (arith > 0) & (n_sel > 0)
    return xp.where(ok, geo / xp.where(ok, arith, 1.0), xp.nan)


def spectral_tilt(band_pow: Any, centres_hz: Any, fmin: float = 50.0, fmax: float = 16000.0) -> Any:
    """Spectral tilt: least-squares slope of band level (dB) against log2 frequency, dB per octave.

    Parameters
    ----------
    band_pow : array, shape (..., B)
        Band power (e.g. from :func:`band_power`); NaN bands are ignored,
        zero-power bands too (no level).
    centres_hz : array-like, shape (B,)
        Band centre frequencies, hertz (exact centres are best).
    fmin, fmax : float
        Only bands with centres in ``[fmin, fmax]`` hertz take part
        (default about 50 Hz .. 16 kHz).

    Returns
    -------
    array, shape (...)
        Slope in dB/octave of *band energy*: equal energy per fractional-octave
        band (pink, 1/f noise) reads 0, white noise reads +3.01, a spectrum
        falling 6 dB/oct in density reads -3.  NaN with fewer than 2 usable bands.
    """
    xp = backend.namespace(band_pow)
    p = xp.astype(band_pow, xp.float64)
    c = xp.asarray(centres_hz, dtype=xp.float64)
    if c.shape[0] != p.shape[-1]:
        raise ValueError(f"band_pow has {p.shape[-1]} bands but centres_hz has {c.shape[0]}")
    in_range = (c >= fmin * 2**-0.25) & (c <= fmax * 2**0.25)  # tolerant of nominal vs exact centres
    usable = in_range & (p > 0)  # NaN > 0 is False
    w = xp.astype(usable, xp.float64)
    x = xp.log2(c)
    y = units.power_to_db(xp.where(usable, p, 1.0))
    n = xp.sum(w, axis=-1)
    n_safe = xp.where(n > 0, n, 1.0)
    xm = xp.sum(w * x, axis=-1) / n_safe
    ym = xp.sum(w * y, axis=-1) / n_safe
    dx = (x - xm[..., None]) * w
    sxx = xp.sum(dx * dx, axis=-1)
    sxy = xp.sum(dx * (y - ym[..., None]), axis=-1)
    ok = (n >= 2) & (sxx > 0)
    return xp.where(ok, sxy / xp.where(ok, sxx, 1.0), xp.nan)


def band_dynamics(
    band_frames: Any,
    frame_power: Any,
    *,
    gate_db: float = -70.0,
    low_pct: float = 10.0,
    high_pct: float = 95.0,
    floor_db: float = -150.0,
) -> Any:
    """Per-band dynamic spread: P(high) minus P(low) of short-time band level over non-silent frames, dB.

    Parameters
    ----------
    band_frames : array, shape (F, B)
        Band power per frame, (full scale)**2.  NaN bands (above Nyquist) give NaN.
    frame_power : array, shape (F,)
        Total power (mean square) per frame; frames below ``gate_db`` dBFS are silent and left out.
    gate_db : float
        Silence gate, dB relative to full scale mean square (default -70, as BS.1770's absolute gate).
    low_pct, high_pct : float
        Percentiles (0..100, linear interpolation), default P10 and P95.
    floor_db : float
        Band levels are floored here before the percentiles (a band empty in a frame reads ``floor_db``).

    Returns
    -------
    array, float64, shape (B,)
        Spread in dB; NaN when fewer than 2 frames pass the gate.
    """
    if not (0.0 <= low_pct < high_pct <= 100.0):
        raise ValueError(f"need 0 <= low_pct < high_pct <= 100, got low_pct={low_pct!r}, high_pct={high_pct!r}")
    xp = backend.namespace(band_frames)
    if band_frames.ndim != 2 or frame_power.ndim != 1 or frame_power.shape[0] != band_frames.shape[0]:
        raise ValueError(f"band_frames must be (F, B) and frame_power (F,), got {tuple(band_frames.shape)} and {tuple(frame_power.shape)}")
    keep = xp.astype(frame_power, xp.float64) >= units.db_to_power(gate_db)
    levels = level_db(band_frames, 1.0, floor_db)[keep]  # (F', B)
    if int(levels.shape[0]) < 2:
        return xp.full((band_frames.shape[1],), xp.nan, dtype=xp.float64)
    hi = backend.quantile(xp, levels, high_pct / 100.0, axis=0)
    lo = backend.quantile(xp, levels, low_pct / 100.0, axis=0)
    return hi - lo
