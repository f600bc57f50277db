"""Stereo width per band."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pink_noise

from acetate.kernels import backend, fir, image

FS = 48000


def stereo_material(seconds: float = 1.0) -> np.ndarray:
    """Partly correlated stereo: a common pink part plus independent parts (correlation ~0.6)."""
    common = pink_noise(seconds, channels=1, seed=1)
    diff = pink_noise(seconds, channels=2, seed=2)
    return (common + 0.6 * diff).astype(np.float32)


def corr(x):
    x = np.asarray(x, np.float64)
    return float(2 * np.sum(x[0] * x[1]) / np.sum(x**2))


def test_unity_width_returns_input(xp):
    x = stereo_material()
    y = backend.to_host(image.stereo_width(xp.asarray(x), FS, [1.0, 1.0, 1.0, 1.0]))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_zero_width_is_mono(xp):
    x = stereo_material()
    y = backend.to_host(image.stereo_width(xp.asarray(x), FS, 0.0))
    np.testing.assert_allclose(y[0], y[1], atol=1e-6)
    np.testing.assert_allclose(y[0], 0.5 * (x[0] + x[1]), atol=1e-6)


def test_low_band_kept_rest_mono(xp):
    x = stereo_material()
    y = backend.to_host(image.stereo_width(xp.asarray(x), FS, [1.0, 0.0, 0.0, 0.0]))
    side = 0.5 * (x[0].astype(np.float64) - x[1])
    low_side = backend.to_host(fir.crossover_bands(xp.asarray(side[None]), FS, (120.0, 1000.0, 6000.0)))[0, 0]
    np.testing.assert_allclose(0.5 * (y[0] - y[1]), low_side, atol=1e-6)
    np.testing.assert_allclose(0.5 * (y[0] + y[1]), 0.5 * (x[0] + x[1]), atol=1e-6)  # mid untouched


def test_bass_never_widened_and_correlation_floor(xp):
    x = stereo_material()
    bands_in = fir.crossover_bands(0.5 * (x[:1] - x[1:]).astype(np.float64), FS, (120.0,))[:, 0]
    y = backend.to_host(image.stereo_width(xp.asarray(x), FS, [3.0, 3.0], (120.0,), corr_floor=0.3))
    side_out = 0.5 * (y[0].astype(np.float64) - y[1])
    rest = side_out - bands_in[0]  # bass band kept at factor 1 ...
    w_high = float(rest @ bands_in[1] / (bands_in[1] @ bands_in[1]))
    np.testing.assert_allclose(rest, w_high * bands_in[1], atol=1e-5)  # ... the rest scaled by one factor
    assert 1.0 < w_high < 3.0  # widened, but clamped
    assert corr(x) > corr(y) >= 0.3 - 0.02  # widened, but not below the floor
    # an already-decorrelated input is not widened at all
    wide = pink_noise(1.0, channels=2, seed=3).astype(np.float32)
    yw = backend.to_host(image.stereo_width(xp.asarray(wide), FS, 2.0, corr_floor=0.3))
    np.testing.assert_allclose(yw, wide, atol=1e-5)
    # narrowing is always allowed
    yn = backend.to_host(image.stereo_width(xp.asarray(wide), FS, 0.5))
    assert corr(yn) > corr(wide) + 0.3


def test_mono_input_unchanged(xp):
    x = xp.asarray(pink_noise(0.2, channels=1).astype(np.float32))
    assert image.stereo_width(x, FS, 0.0) is x


def test_validation():
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="widths"):
        image.stereo_width(x, FS, [1.0, 2.0])
    with pytest.raises(ValueError, match="widths"):
        image.stereo_width(x, FS, -1.0)
    with pytest.raises(ValueError, match="shape"):
        image.stereo_width(np.zeros((3, 100), np.float32), FS, 1.0)
