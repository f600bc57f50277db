"""FIR design, FFT filtering, DC high-pass and complementary crossovers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pink_noise

from acetate.kernels import backend, fir

FS = 48000
CURVE_F = [20, 60, 100, 200, 500, 1000, 3000, 6000, 10000, 16000, 20000]
CURVE_G = [3.0, 4.0, 3.0, 0.0, -2.0, -1.0, 1.0, 2.0, 0.0, -3.0, -6.0]


def _mag_db(h, nfft=1 << 18):
    H = np.fft.rfft(backend.to_host(h), nfft)
    return np.fft.rfftfreq(nfft, 1 / FS), 20 * np.log10(np.abs(H))


@pytest.mark.parametrize("phase,n_taps", [("linear", 8191), ("minimum", 8192)])
def test_eq_curve_match(xp, phase, n_taps):
    h = fir.design_from_gain(xp.asarray(CURVE_F, dtype=xp.float64), xp.asarray(CURVE_G, dtype=xp.float64), FS, n_taps, phase)
    f, m = _mag_db(h)
    band = (f >= 30) & (f <= 16000)
    target = np.interp(np.log(f[band]), np.log(CURVE_F), CURVE_G)
    err = np.abs(m[band] - target).max()
    assert err < 0.5, f"{phase}: max EQ error {err:.3f} dB"
    hh = backend.to_host(h)
    if phase == "linear":
        np.testing.assert_allclose(hh, hh[::-1], atol=1e-12)
    else:  # minimum phase: energy at the start
        e = np.cumsum(hh**2) / np.sum(hh**2)
        assert e[200] > 0.99


def test_linear_phase_click_stays_at_index(xp):
    h = fir.design_from_gain([100, 1000, 8000], [6.0, -3.0, 4.0], FS, 2047)
    x = np.zeros((2, 20000), np.float32)
    x[0, 7000] = 1.0
    x[1, 12345] = -0.5
    y = backend.to_host(fir.fft_filter(xp.asarray(x), xp.asarray(h)))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert int(np.argmax(np.abs(y[0]))) == 7000
    assert int(np.argmax(np.abs(y[1]))) == 12345
    np.testing.assert_allclose(y[0, 7000 - 1023 : 7000 + 1024], h[::-1], atol=1e-6)  # symmetric, centred


@pytest.mark.parametrize("phase", ["linear", "minimum"])
def test_unity_eq_is_transparent(xp, phase):
    x = xp.asarray(pink_noise(1.0, seed=3).astype(np.float32))
    h = fir.design_from_gain([30, 1000, 16000], [0.0, 0.0, 0.0], FS, 4095 if phase == "linear" else 4096, phase)
    y = fir.fft_filter(x, xp.asarray(h), compensate_delay=(phase == "linear"))
    err = float(xp.sqrt(xp.mean((y.astype(xp.float64) - x) ** 2)) / xp.sqrt(xp.mean(x.astype(xp.float64) ** 2)))
    assert 20 * np.log10(max(err, 1e-300)) < -100


def test_crossover_sums_to_input_and_is_flat(xp):
    x = xp.asarray(pink_noise(2.0, seed=4, rms_dbfs=-14).astype(np.float32))
    bands = fir.crossover_bands(x, FS, (120.0, 1000.0, 6000.0))
    assert bands.shape == (4,) + tuple(x.shape) and bands.dtype == xp.float32
    err = float(xp.max(xp.abs(xp.sum(bands.astype(xp.float64), axis=0) - x)))
    assert err < 1e-6
    h = backend.to_host(fir.crossover_filters(FS, (120.0, 1000.0, 6000.0)))
    _, m = _mag_db(h.sum(axis=0), 1 << 16)
    assert np.ptp(m) < 0.01
    # each band's filter is a real band: low band passes 50 Hz, rejects 2 kHz, etc.
    f, m0 = _mag_db(h[0], 1 << 16)
    assert abs(m0[np.searchsorted(f, 50)]) < 0.1 and m0[np.searchsorted(f, 2000)] < -40
    f, m3 = _mag_db(h[3], 1 << 16)
    assert abs(m3[np.searchsorted(f, 12000)]) < 0.1 and m3[np.searchsorted(f, 500)] < -40


def test_crossover_bands_sample_aligned(xp):
    x = np.zeros((1, 8000), np.float32)
    x[0, 4000] = 1.0
    b = backend.to_host(fir.crossover_bands(xp.asarray(x), FS, (300.0, 3000.0), 1201))
    for k in range(b.shape[0]):
        assert int(np.argmax(np.abs(b[k, 0]))) == 4000


def test_highpass_dc(xp):
    t = np.arange(2 * FS) / FS
    x = np.stack([0.2 + 0.3 * np.sin(2 * np.pi * 1000 * t), 0.3 * np.sin(2 * np.pi * 5 * t) + 0.3 * np.sin(2 * np.pi * 100 * t)])
    y = backend.to_host(fir.highpass_dc(xp.asarray(x.astype(np.float32)), FS, 20.0))
    mid = slice(FS // 2, 3 * FS // 2)
    assert abs(y[0, mid].mean()) < 1e-4  # DC gone
    np.testing.assert_allclose(y[0, mid], 0.3 * np.sin(2 * np.pi * 1000 * t[mid]), atol=2e-3)  # 1 kHz kept, in phase
    np.testing.assert_allclose(y[1, mid], 0.3 * np.sin(2 * np.pi * 100 * t[mid]), atol=3e-3)  # 5 Hz removed, 100 Hz in phase


def test_validation():
    with pytest.raises(ValueError, match="odd"):
        fir.design_from_gain([100, 1000], [0, 0], FS, 1024, "linear")
    with pytest.raises(ValueError, match="strictly increasing"):
        fir.design_from_gain([1000, 100], [0, 0], FS, 1025)
    with pytest.raises(ValueError, match="phase"):
        fir.design_from_gain([100, 1000], [0, 0], FS, 1025, "mixed")
    with pytest.raises(ValueError, match="edges_hz"):
        fir.crossover_bands(np.zeros((2, 100), np.float32), FS, (1000.0, 100.0))


@pytest.mark.parametrize("n,m", [(1, 1), (37, 101), (5000, 1201), (70000, 3001), (200000, 101)])
def test_filter_bank_equals_direct_convolution(xp, n, m):
    """Overlap-save through a bank = each filter's linear convolution, any length and frame count."""
    rng = np.random.default_rng(n + m)
    x = rng.standard_normal((2, n)).astype(np.float32)
    hs = rng.standard_normal((3, m)) / np.sqrt(m)
    for delay in (True, False, m // 3):
        y = backend.to_host(fir.fft_filter_bank(xp.asarray(x), xp.asarray(hs), compensate_delay=delay))
        d = (m - 1) // 2 if delay is True else (0 if delay is False else delay)
        assert y.shape == (3, 2, n) and y.dtype == np.float32
        for k in range(3):
            full = np.stack([np.convolve(x[c].astype(np.float64), hs[k]) for c in range(2)])
            np.testing.assert_allclose(y[k], full[:, d : d + n], rtol=0, atol=2e-5 * max(1.0, np.abs(full).max()))
    # several frames with a chosen FFT length give the same result
    small = backend.to_host(fir.fft_filter_bank(xp.asarray(x), xp.asarray(hs), nfft=max(4096, 2 * m)))
    np.testing.assert_allclose(small, backend.to_host(fir.fft_filter_bank(xp.asarray(x), xp.asarray(hs))), atol=2e-5)


def test_filter_bank_keeps_stereo_channels_apart(xp):
    """Stereo goes through the bank as one complex signal (on a CPU): each channel's output is
    its own filtering, the other channel showing at the float rounding floor only."""
    rng = np.random.default_rng(5)
    hs = fir.crossover_filters(FS, (150.0, 1500.0, 8000.0), 4001)
    for dtype, floor in ((np.float32, 1e-6), (np.float64, 1e-13)):
        left = rng.standard_normal(3 * FS).astype(dtype)
        x = np.stack([left, np.zeros_like(left)])
        y = backend.to_host(fir.fft_filter_bank(xp.asarray(x), xp.asarray(hs)))
        assert y.dtype == dtype
        crosstalk = float(np.abs(y[:, 1]).max() / np.abs(y[:, 0]).max())
        assert crosstalk < floor  # below -120 dB (float32), -260 dB (float64)
        mono = backend.to_host(fir.fft_filter_bank(xp.asarray(left), xp.asarray(hs)))  # the real-transform path
        np.testing.assert_allclose(y[:, 0], mono, rtol=0, atol=floor * np.abs(mono).max() * 10)
        # dual mono keeps its two channels equal, bit for bit (and equal to the mono pass)
        dual = backend.to_host(fir.fft_filter_bank(xp.asarray(np.stack([left, left])), xp.asarray(hs)))
        assert np.array_equal(dual[:, 0], dual[:, 1]) and np.array_equal(dual[:, 0], mono)


def test_filter_bank_of_crossover_bands_sums_back(xp):
    x = xp.asarray(pink_noise(2.0, seed=4).astype(np.float32))
    bands = fir.fft_filter_bank(x, fir.crossover_filters(FS, (150.0, 1500.0, 8000.0), xp=xp))
    assert bands.shape == (4,) + tuple(x.shape)
    err = float(backend.to_host(xp.max(xp.abs(xp.sum(bands, axis=0) - x))))
    assert err < 1e-5


def test_filter_bank_validation():
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="shape"):
        fir.fft_filter_bank(np.zeros((2, 2, 100)), np.ones(3))
    with pytest.raises(ValueError, match="nfft"):
        fir.fft_filter_bank(x, np.ones((2, 101)), nfft=64)
    with pytest.raises(ValueError, match="compensate_delay"):
        fir.fft_filter_bank(x, np.ones(5), compensate_delay=9)
