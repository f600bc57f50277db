"""Stereo analysis kernels: mid/side, correlation and width, overall and per band."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pink_noise

from acetate.kernels import backend, spectrum, stereo

FS = 48000


def _noise(seconds: float = 3.0, channels: int = 2, seed: int = 3) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * FS)))


def _stats(x: np.ndarray, xp, fraction: int = 1) -> dict[str, np.ndarray]:
    s = stereo.stereo_stats(backend.to_device(x, xp, dtype="float32"), FS, fraction)
    return {
        "corr": backend.to_host(s.correlation),
        "width": backend.to_host(s.width),
        "corr_all": float(backend.to_host(s.correlation_overall)),
        "width_all": float(backend.to_host(s.width_overall)),
        "width_db": backend.to_host(stereo.width_db(s.width)),
    }


def test_mid_side_round_trip(xp):
    x = backend.to_device(_noise(0.1), xp, dtype="float32")
    ms = stereo.mid_side(x)
    h = backend.to_host(x)
    np.testing.assert_allclose(backend.to_host(ms[0]), (h[0] + h[1]) / 2, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(backend.to_host(ms[1]), (h[0] - h[1]) / 2, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(backend.to_host(stereo.left_right(ms)), h, rtol=1e-6, atol=1e-7)
    assert ms.dtype == x.dtype


@pytest.mark.parametrize("shape", [(1, 10), (3, 10), (10,)])
def test_mid_side_needs_two_channels(shape):
    with pytest.raises(ValueError, match=r"\(2, n\)"):
        stereo.mid_side(np.zeros(shape, dtype=np.float32))


def test_identical_channels(xp):
    n = _noise(2.0, channels=1)
    r = _stats(np.vstack([n, n]), xp)
    np.testing.assert_allclose(r["corr"], 1.0, atol=1e-6)
    assert r["corr_all"] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(r["width"], 0.0, atol=1e-12)
    assert r["width_all"] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(r["width_db"], -120.0)


def test_opposite_channels(xp):
    n = _noise(2.0, channels=1)
    r = _stats(np.vstack([n, -n]), xp)
    np.testing.assert_allclose(r["corr"], -1.0, atol=1e-6)
    assert r["corr_all"] == pytest.approx(-1.0, abs=1e-6)
    assert np.isinf(r["width"]).all()
    np.testing.assert_allclose(r["width_db"], 120.0)


def test_independent_noise_is_uncorrelated_and_unit_width(xp):
    r = _stats(_noise(4.0), xp)
    assert abs(r["corr_all"]) < 0.03
    assert np.all(np.abs(r["corr"][2:]) < 0.1)  # 125 Hz and up: enough bins x frames
    assert np.all(np.abs(r["corr"]) < 0.3)
    assert 10 * np.log10(r["width_all"]) == pytest.approx(0.0, abs=0.2)


def test_partial_correlation_matches_mixing_angle(xp):
    a, b = _noise(4.0)
    theta = np.pi / 3  # cos = 0.5
    x = np.vstack([a, np.cos(theta) * a + np.sin(theta) * b])
    r = _stats(x, xp)
    assert r["corr_all"] == pytest.approx(0.5, abs=0.03)
    # broadband figure agrees with the time-domain Pearson
    assert float(backend.to_host(stereo.correlation(backend.to_device(x, xp)))) == pytest.approx(r["corr_all"], abs=0.02)


def test_correlation_is_local_to_bands(xp):
    """Common content below 500 Hz, independent content above 2 kHz."""
    n = 4 * FS
    rng = np.random.default_rng(7)
    f = np.fft.rfftfreq(n, 1 / FS)
    low = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * (f < 500), n)
    highs = np.fft.irfft(np.fft.rfft(rng.standard_normal((2, n)), axis=-1) * (f > 2000), n, axis=-1)
    r = _stats(low + highs, xp)
    octs = np.array(spectrum.OCTAVE_CENTRES_HZ)
    assert np.all(r["corr"][(octs >= 63) & (octs <= 250)] > 0.99)
    assert np.all(np.abs(r["corr"][octs >= 4000]) < 0.1)
    assert np.all(r["width"][(octs >= 63) & (octs <= 250)] < 1e-3)
    assert np.all(np.abs(10 * np.log10(r["width"][octs >= 4000])) < 1.0)


def test_third_octave_grid_and_nan_above_nyquist(xp):
    x = backend.to_device(_noise(1.0)[:, :22050], xp, dtype="float32")
    s = stereo.stereo_stats(x, 22050, fraction=3)
    corr = backend.to_host(s.correlation)
    assert corr.shape == (31,)
    nominal = np.array(spectrum.BAND_CENTRES_HZ)
    assert np.isnan(corr[nominal >= 12500]).all() and np.isfinite(corr[nominal <= 10000]).all()


def test_silent_channel_gives_nan_without_warnings(xp):
    n = _noise(1.0, channels=1)
    r = _stats(np.vstack([n, np.zeros_like(n)]), xp)
    assert np.isnan(r["corr"]).all() and np.isnan(r["corr_all"])
    np.testing.assert_allclose(r["width"], 1.0, rtol=1e-9)  # side = mid = L/2
    r = _stats(np.zeros((2, FS)), xp)
    assert np.isnan(r["width"]).all() and np.isnan(r["width_db"]).all()
    assert np.isnan(float(backend.to_host(stereo.correlation(backend.to_device(np.zeros((2, 10)), xp)))))


def test_width_db_clips_and_keeps_nan(xp):
    w = xp.asarray([0.0, 1.0, 10.0, float("inf"), float("nan")])
    db = backend.to_host(stereo.width_db(w, limit_db=60.0))
    np.testing.assert_allclose(db[:4], [-60.0, 0.0, 10.0, 60.0])
    assert np.isnan(db[4])


def test_cross_spectra_shape_check():
    with pytest.raises(ValueError, match="spec"):
        stereo.cross_spectra(np.zeros((3, 4, 5), dtype=np.complex64), np.ones(5))


def test_gpu_parity_with_numpy(xp):
    x = pink_noise(1.0, channels=2, seed=4)
    ref = stereo.stereo_stats(x.astype(np.float32), FS)
    got = stereo.stereo_stats(backend.to_device(x, xp, dtype="float32"), FS)
    np.testing.assert_allclose(backend.to_host(got.correlation), ref.correlation, atol=1e-5)
    np.testing.assert_allclose(backend.to_host(got.width), ref.width, rtol=1e-4)
