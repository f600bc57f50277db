"""Stereo-image rendering: mid/side width per band.

``M = (L + R) / 2`` is left untouched; ``S = (L - R) / 2`` is split with the
complementary linear-phase crossover of :mod:`fir` (bands sum back to ``S``
exactly) and each band is scaled by its width factor. ``L = M + S'``,
``R = M - S'``.

Safety rules (mono compatibility):

* the lowest band (below ``edges_hz[0]``, 120 Hz by default) is never
  widened: its factor is clamped to at most ``max_low_width`` (1.0);
* correlation rule: with band energies ``EM`` (mid) and ``ES`` (side), the
  band's L/R correlation is ``rho = (EM - ES) / (EM + ES)``, and widening by
  ``w`` gives ``(EM - w^2 ES) / (EM + w^2 ES)``. A band is widened only as far
  as its correlation stays at or above ``corr_floor``; a band already below
  the floor is never widened (narrowing is always allowed, it raises the
  correlation). Hence no band's correlation is driven below
  ``min(its input correlation, corr_floor)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from . import backend
from .fir import crossover_bands

__all__ = ["stereo_width", "effective_widths", "scale_side"]


def effective_widths(mid_energy: Any, side_energy: Any, widths: Any, *, corr_floor: float = 0.3, max_low_width: float = 1.0) -> Any:
    """Apply the safety rules to requested widths, per band.

    Parameters
    ----------
    mid_energy, side_energy : array, shape (K,)
        Band energies (sums of squares) of mid and side.
    widths : array, shape (K,)
        Requested side gains per band, >= 0 (1 = unchanged, 0 = mono).
    corr_floor : float
        Correlation, in [-1, 1], below which no band is widened.
    max_low_width : float
        Cap on the lowest band's factor.

    Returns
    -------
    array, shape (K,), float64: the factors actually applied.

    Examples
    --------
    >>> import numpy as np
    >>> effective_widths(np.array([1.0, 1.0]), np.array([0.1, 1.0]), np.array([2.0, 2.0])).tolist()
    [1.0, 1.0]
    """
    xp = backend.namespace(mid_energy, side_energy, widths)
    w = xp.astype(widths, xp.float64)
    em = xp.astype(mid_energy, xp.float64)
    es = xp.astype(side_energy, xp.float64)
    tiny = 1e-300
    rho = (em - es) / xp.maximum(em + es, tiny)
    wmax = xp.sqrt(em * (1.0 - corr_floor) / xp.maximum(es * (1.0 + corr_floor), tiny))
    wider = xp.minimum(w, xp.maximum(wmax, 1.0))
    w_eff = xp.where(w <= 1.0, w, xp.where(rho < corr_floor, 1.0, wider))
    w_eff = xp.where(es <= 0, w, w_eff)  # no side content: the factor changes nothing
    low = xp.minimum(w_eff[:1], max_low_width)
    return xp.concat([low, w_eff[1:]])


def scale_side(x: Any, width: float) -> Any:
    """Scale the side signal of stereo ``x`` (2, n) by ``width``; mid unchanged.

    The per-band building block of :func:`stereo_width` for callers that already
    hold the bands (the mastering chain splits once for dynamics and width).
    ``width`` 1 returns ``x``; mono input is returned as is.

    Examples
    --------
    >>> import numpy as np
    >>> y = scale_side(np.array([[1.0, 0.5], [0.0, 0.5]]), 0.0)
    >>> y.tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    if x.shape[0] != 2 or width == 1.0:
        return x
    mid = 0.5 * (x[0, :] + x[1, :])
    side = (0.5 * width) * (x[0, :] - x[1, :])
    xp = backend.namespace(x)
    return xp.stack([mid + side, mid - side])


def stereo_width(
    x: Any,
    fs: float,
    widths: Sequence[float] | float,
    edges_hz: Sequence[float] = (120.0, 1000.0, 6000.0),
    *,
    n_taps: int | None = None,
    corr_floor: float = 0.3,
    max_low_width: float = 1.0,
) -> Any:
    """Scale the side signal per band (mid/side width), mono-safe.

    Parameters
    ----------
    x : array, shape (C, n)
        Audio; stereo (C = 2) is processed, mono (C = 1) is returned as is.
    fs : float
        Sample rate, hertz.
    widths : float or sequence of float
        Side gain per band, ``len(edges_hz) + 1`` values (or one for all),
        each >= 0: 1 keeps the image, 0 makes the band mono, > 1 widens
        (subject to the rules in the module docstring).
    edges_hz : sequence of float
        Crossover frequencies, hertz (default 120, 1000, 6000 Hz).
    n_taps : int, optional
        Crossover FIR length (see :func:`fir.crossover_filters`).
    corr_floor : float
        No band is widened below this L/R correlation (default 0.3).
    max_low_width : float
        Cap on the lowest band's factor (default 1: never widen the bass).

    Returns
    -------
    y : array, shape (2, n), float32 (mono input: ``x`` itself).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((2, 4800)).astype(np.float32)
    >>> y = stereo_width(x, 48000, 0.0)
    >>> bool(np.allclose(y[0], y[1]))
    True
    """
    xp = backend.namespace(x)
    if x.ndim != 2 or x.shape[0] not in (1, 2):
        raise ValueError(f"x must have shape (1, n) or (2, n), got {x.shape}")
    if x.shape[0] == 1:
        return x
    n_bands = len(tuple(edges_hz)) + 1
    w_host = np.atleast_1d(np.asarray(widths, dtype=np.float64))
    if w_host.size == 1:
        w_host = np.full(n_bands, float(w_host[0]))
    if w_host.size != n_bands:
        raise ValueError(f"widths must have one value or len(edges_hz) + 1 = {n_bands} values, got {w_host.size}")
    if not np.all(np.isfinite(w_host)) or np.any(w_host < 0):
        raise ValueError(f"widths must be finite and >= 0, got {w_host.tolist()}")
    if not -1.0 <= corr_floor <= 1.0:
        raise ValueError(f"corr_floor must be in [-1, 1], got {corr_floor!r}")
    if not (math.isfinite(max_low_width) and max_low_width >= 0):
        raise ValueError(f"max_low_width must be finite and >= 0, got {max_low_width!r}")
    x64 = xp.astype(x, xp.float64)
    mid = 0.5 * (x64[0, :] + x64[1, :])
    side = 0.5 * (x64[0, :] - x64[1, :])
    if np.all(w_host == 1.0):
        return xp.astype(x, xp.float32)
    bands = crossover_bands(xp.stack([mid, side]), fs, edges_hz, n_taps)  # (K, 2, n) float64
    em = xp.sum(bands[:, 0, :] ** 2, axis=-1)
    es = xp.sum(bands[:, 1, :] ** 2, axis=-1)
    w_eff = effective_widths(em, es, xp.asarray(w_host), corr_floor=corr_floor, max_low_width=max_low_width)
    new_side = xp.sum(bands[:, 1, :] * w_eff[:, None], axis=0)
    return xp.astype(xp.stack([mid + new_side, mid - new_side]), xp.float32)
