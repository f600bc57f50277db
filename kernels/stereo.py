"""Stereo analysis: mid/side, correlation and width, overall and per band.

Conventions
-----------
* Mid/side: ``M = (L + R) / 2``, ``S = (L - R) / 2``; the inverse is
  ``L = M + S``, ``R = M - S`` (exact round trip).
* Correlation is Pearson's coefficient of L and R (no mean removal: the DC
  bin is outside every band), computed from the long-term cross-spectrum:
  ``Re(sum L conj(R)) / sqrt(sum |L|^2 * sum |R|^2)``, in -1 .. +1.  +1 for
  identical channels, -1 for L = -R, about 0 for independent signals.
* Width is the side-to-mid energy ratio ``E_S / E_M`` (linear, 0 .. inf):
  0 for identical channels (mono), 1 (0 dB) for independent channels of equal
  level, inf for L = -R.  :func:`width_db` turns it into dB, clipped.
* Per-band figures use the fractional-octave grid of
  :mod:`acetate.kernels.spectrum` (octave bands by default: 1/3-octave
  stereo statistics are noisy at low frequencies); bands at or above Nyquist,
  and bands with no energy, are NaN.
* "Overall" figures use every bin from ``fmin`` (default 20 Hz) to Nyquist.

The functions taking a :class:`~acetate.kernels.spectrum.Spectrogram` let a
caller share one STFT between spectrum and stereo analysis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from acetate.kernels import backend, spectrum, units

__all__ = [
    "StereoStats",
    "mid_side",
    "left_right",
    "cross_spectra",
    "band_correlation",
    "band_width",
    "width_db",
    "stereo_stats",
    "stereo_stats_from_stft",
    "stereo_stats_from_cross",
    "correlation",
]


class StereoStats(NamedTuple):
    """Stereo statistics of a two-channel signal.

    Attributes
    ----------
    correlation : array, float64, shape (B,)
        Per-band L/R correlation, -1 .. 1 (NaN: invalid or silent band).
    width : array, float64, shape (B,)
        Per-band side/mid energy ratio, linear (NaN: invalid or silent band).
    correlation_overall : array, float64, shape ()
        Correlation over ``fmin`` .. Nyquist.
    width_overall : array, float64, shape ()
        Side/mid energy ratio over ``fmin`` .. Nyquist.
    fraction : int
        Bands per octave of the per-band figures.
    """

    correlation: Any
    width: Any
    correlation_overall: Any
    width_overall: Any
    fraction: int


def _check_stereo(x: Any, what: str = "x") -> None:
    if x.ndim != 2 or x.shape[0] != 2:
        raise ValueError(f"{what} must have shape (2, n), got shape {tuple(x.shape)}")


def mid_side(x: Any) -> Any:
    """Left/right to mid/side: ``M = (L + R) / 2``, ``S = (L - R) / 2``.

    Parameters
    ----------
    x : array, shape (2, n)
        Left and right channels.

    Returns
    -------
    array, shape (2, n)
        Mid and side, in the dtype of ``x``.
    """
    xp = backend.namespace(x)
    _check_stereo(x)
    return xp.stack([(x[0, :] + x[1, :]) * 0.5, (x[0, :] - x[1, :]) * 0.5])


def left_right(ms: Any) -> Any:
    """Mid/side to left/right: ``L = M + S``, ``R = M - S`` (inverse of :func:`mid_side`)."""
    xp = backend.namespace(ms)
    _check_stereo(ms, "ms")
    return xp.stack([ms[0, :] + ms[1, :], ms[0, :] - ms[1, :]])


def cross_spectra(spec: Any, scale: Any) -> tuple[Any, Any, Any]:
    """Long-term auto- and cross-power per bin of a two-channel STFT.

    Parameters
    ----------
    spec : array, complex, shape (2, F, K)
        STFT of left and right (as :attr:`Spectrogram.spec`).
    scale : array, shape (K,)
        Parseval weights (as :attr:`Spectrogram.scale`).

    Returns
    -------
    p_ll, p_rr, p_lr : arrays, float64, shape (K,)
        Mean over frames of ``|L|^2``, ``|R|^2`` and ``Re(L conj(R))``, scaled
        to (full scale)**2.
    """
    xp = backend.namespace(spec)
    if spec.ndim != 3 or spec.shape[0] != 2:
        raise ValueError(f"spec must have shape (2, F, K), got shape {tuple(spec.shape)}")
    left, right = spec[0, ...], spec[1, ...]
    lr, li, rr, ri = xp.real(left), xp.imag(left), xp.real(right), xp.imag(right)
    f64 = xp.float64
    p_ll = xp.mean(xp.astype(lr * lr + li * li, f64), axis=0)
    p_rr = xp.mean(xp.astype(rr * rr + ri * ri, f64), axis=0)
    p_lr = xp.mean(xp.astype(lr * rr + li * ri, f64), axis=0)
    s = xp.astype(scale, f64)
    return p_ll * s, p_rr * s, p_lr * s


def _ratio(num: Any, den: Any, xp: Any) -> Any:
    ok = den > 0
    return xp.where(ok, num / xp.where(ok, den, 1.0), xp.nan)


def band_correlation(p_ll: Any, p_rr: Any, p_lr: Any, weights: Any) -> Any:
    """L/R correlation per band from :func:`cross_spectra`.

    Parameters
    ----------
    p_ll, p_rr, p_lr : arrays, shape (K,)
        Long-term auto- and cross-power per bin.
    weights : array, shape (B, K)
        Bin-to-band weights (:func:`acetate.kernels.spectrum.band_matrix`).

    Returns
    -------
    array, float64, shape (B,)
        ``sum(w p_lr) / sqrt(sum(w p_ll) sum(w p_rr))`` clipped to [-1, 1];
        NaN where either channel has no energy in the band.
    """
    xp = backend.namespace(p_ll)
    ll, rr, lr = weights @ p_ll, weights @ p_rr, weights @ p_lr
    den = xp.sqrt(xp.maximum(ll * rr, 0.0))
    return backend.clip(_ratio(lr, den, xp), -1.0, 1.0)


def band_width(p_ll: Any, p_rr: Any, p_lr: Any, weights: Any) -> Any:
    """Side-to-mid energy ratio per band (linear) from :func:`cross_spectra`.

    ``E_S / E_M = (P_LL + P_RR - 2 P_LR) / (P_LL + P_RR + 2 P_LR)``; 0 for
    identical channels, inf for L = -R, NaN for a band with no energy.
    """
    xp = backend.namespace(p_ll)
    ll, rr, lr = weights @ p_ll, weights @ p_rr, weights @ p_lr
    side = xp.maximum(ll + rr - 2.0 * lr, 0.0)
    mid = xp.maximum(ll + rr + 2.0 * lr, 0.0)
    both_zero = (side <= 0) & (mid <= 0)
    ratio = xp.where(mid > 0, side / xp.where(mid > 0, mid, 1.0), xp.inf)
    return xp.where(both_zero, xp.nan, ratio)


def width_db(ratio: Any, limit_db: float = 120.0) -> Any:
    """Width ratio in dB, ``10 log10(E_S / E_M)``, clipped to ``[-limit_db, +limit_db]``; NaN stays NaN.

    Identical channels read ``-limit_db``, L = -R reads ``+limit_db``.
    """
    xp = backend.namespace(ratio)
    r = xp.asarray(ratio, dtype=xp.float64)
    lo, hi = units.db_to_power(-limit_db), units.db_to_power(limit_db)
    db = units.power_to_db(backend.clip(xp.where(xp.isnan(r), 1.0, r), lo, hi))
    return xp.where(xp.isnan(r), xp.nan, db)


def stereo_stats_from_stft(s: spectrum.Spectrogram, fraction: int = 1, fmin: float = 20.0) -> StereoStats:
    """Per-band and overall correlation and width from a two-channel :class:`Spectrogram`.

    Parameters
    ----------
    s : Spectrogram
        STFT of (L, R), from :func:`acetate.kernels.spectrum.stft`.
    fraction : {1, 3}
        Bands per octave of the per-band figures (default octave bands).
    fmin : float
        Lowest frequency of the overall figures, hertz.
    """
    p_ll, p_rr, p_lr = cross_spectra(s.spec, s.scale)
    return stereo_stats_from_cross(p_ll, p_rr, p_lr, s.freqs, s.fs, fraction, fmin)


def stereo_stats_from_cross(p_ll: Any, p_rr: Any, p_lr: Any, freqs: Any, fs: float, fraction: int = 1, fmin: float = 20.0) -> StereoStats:
    """Per-band and overall correlation and width from long-term auto- and cross-power per bin.

    Parameters
    ----------
    p_ll, p_rr, p_lr : arrays, shape (K,)
        As returned by :func:`cross_spectra` (or
        :func:`acetate.kernels.spectrum.stereo_power_stats`).
    freqs : array, shape (K,)
        Bin frequencies, hertz.
    fs : int
        Sample rate, hertz.
    fraction : {1, 3}
        Bands per octave of the per-band figures.
    fmin : float
        Lowest frequency of the overall figures, hertz.
    """
    xp = backend.namespace(p_ll)
    w = spectrum.band_matrix(freqs, fs, fraction)
    broad = xp.astype(freqs >= fmin, xp.float64)[None, :]
    return StereoStats(
        correlation=band_correlation(p_ll, p_rr, p_lr, w),
        width=band_width(p_ll, p_rr, p_lr, w),
        correlation_overall=band_correlation(p_ll, p_rr, p_lr, broad)[0, ...],
        width_overall=band_width(p_ll, p_rr, p_lr, broad)[0, ...],
        fraction=fraction,
    )


def stereo_stats(
    x: Any,
    fs: float,
    fraction: int = 1,
    *,
    fmin: float = 20.0,
    frame_seconds: float = spectrum.DEFAULT_FRAME_SECONDS,
    hop_seconds: float = spectrum.DEFAULT_HOP_SECONDS,
) -> StereoStats:
    """Per-band and overall L/R correlation and side/mid width of a stereo signal.

    Parameters
    ----------
    x : array, shape (2, n)
        Left and right, full scale 1.0.
    fs : int
        Sample rate, hertz.
    fraction : {1, 3}
        Bands per octave (default 1: octave bands 31.5 Hz .. 16 kHz).
    fmin : float
        Lowest frequency of the overall figures, hertz.
    frame_seconds, hop_seconds : float
        STFT frame and hop, seconds.
    """
    _check_stereo(x)
    s = spectrum.stft(x, fs, frame_seconds=frame_seconds, hop_seconds=hop_seconds)
    return stereo_stats_from_stft(s, fraction, fmin)


def correlation(x: Any) -> Any:
    """Broadband time-domain L/R correlation ``sum(L R) / sqrt(sum L^2 sum R^2)`` (float64, no mean removal).

    Returns a 0-d array in -1 .. 1, NaN when either channel is silent.
    """
    xp = backend.namespace(x)
    _check_stereo(x)
    left = xp.astype(x[0, :], xp.float64)
    right = xp.astype(x[1, :], xp.float64)
    num = xp.sum(left * right)
    den = xp.sqrt(xp.sum(left * left) * xp.sum(right * right))
    return backend.clip(_ratio(num, den, xp), -1.0, 1.0)
