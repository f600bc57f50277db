"""Sliding windows, envelopes, compressor and true-peak limiter."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from acetate.kernels import backend, dynamics as dy
from conftest import pink_noise

FS = 48000
CEIL_DB = -1.0


def fft_true_peak(x: np.ndarray, os: int = 8) -> float:
    """Independent reference meter: ideal band-limited interpolation with a long zero pad."""
    x = np.asarray(x, np.float64)
    pad = x.shape[-1]
    x = np.pad(x, ((0, 0), (pad, pad)))
    n = x.shape[-1]
    X = np.fft.rfft(x, axis=-1)
    Y = np.zeros((x.shape[0], n * os // 2 + 1), complex)
    Y[:, : X.shape[1]] = X
    if n % 2 == 0:
        Y[:, n // 2] *= 0.5
    return float(np.abs(np.fft.irfft(Y, n * os, axis=-1) * os).max())


def real_ish(kind: str, seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "pink":
        x = pink_noise(seconds, seed=11)
    elif kind == "white20k":
        sos = scipy.signal.butter(10, 20000, fs=FS, output="sos")
        x = scipy.signal.sosfiltfilt(sos, rng.standard_normal((2, int(seconds * FS))), axis=-1)
    else:  # drum-like: decaying bursts over a bass line
        n = int(seconds * FS)
        t = np.arange(n) / FS
        x = np.tile(0.3 * np.sin(2 * np.pi * 55 * t), (2, 1))
        for k in range(0, n - 4800, 9000):
            burst = rng.standard_normal((2, 4800)) * np.exp(-np.arange(4800) / 600)
            x[:, k : k + 4800] += burst
    return x


def test_sliding_min_max_alignments(xp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 500))
    for w in (1, 2, 7, 64, 100):
        fut = backend.to_host(dy.sliding_min(xp.asarray(x), w, align="future", mode="constant", cval=np.inf))
        past = backend.to_host(dy.sliding_max(xp.asarray(x), w, align="past", mode="constant", cval=-np.inf))
        cen = backend.to_host(dy.sliding_min(xp.asarray(x), w, align="centre", mode="nearest"))
        for i in (0, 3, 250, 499):
            assert fut[0, i] == x[0, i : i + w].min()
            assert past[1, i] == x[1, max(0, i - w + 1) : i + 1].max()
        np.testing.assert_array_equal(cen, scipy.ndimage.minimum_filter1d(x, w, axis=-1, mode="nearest"))


def test_doubling_min_matches_ndimage():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1000))
    for w in (2, 33, 64, 65, 777):
        ref = scipy.ndimage.minimum_filter1d(x, w, axis=-1, origin=-(w // 2))[..., : 1000 - w + 1]
        np.testing.assert_array_equal(dy._doubling_window_min(np, x, w), ref)


def test_moving_average_and_rms(xp):
    x = np.random.default_rng(2).standard_normal((2, 1000))
    ma = backend.to_host(dy.moving_average(xp.asarray(x), 10, mode="constant"))
    np.testing.assert_allclose(ma[:, 500], x[:, 491:501].mean(axis=-1), rtol=1e-12)
    s = np.sin(2 * np.pi * 1000 * np.arange(FS) / FS)[None] * np.array([[0.5], [1.0]])
    rms = backend.to_host(dy.rms_envelope(xp.asarray(s.astype(np.float32)), FS, 0.01))
    np.testing.assert_allclose(rms[:, FS // 2], [0.5 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-4)
    linked = backend.to_host(dy.rms_envelope(xp.asarray(s.astype(np.float32)), FS, 0.01, link=True))
    assert linked.shape == (1, FS) and abs(linked[0, FS // 2] - 1 / np.sqrt(2)) < 1e-4


def test_compressor_static_curve(xp):
    lv = xp.asarray([-60.0, -26.0, -23.0, -20.0, -17.0, -10.0, 0.0, -np.inf])
    g = backend.to_host(dy.compressor_gain_db(lv, -20.0, 4.0, 6.0))
    T, R, W = -20.0, 4.0, 6.0

    def ref(x):
        if 2 * (x - T) < -W:
            return 0.0
        if 2 * abs(x - T) <= W:
            return (1 / R - 1) * (x - T + W / 2) ** 2 / (2 * W)
        return T + (x - T) / R - x

    expected = [ref(v) for v in (-60.0, -26.0, -23.0, -20.0, -17.0, -10.0, 0.0)] + [0.0]
    np.testing.assert_allclose(g, expected, atol=1e-12)
    assert g[3] == pytest.approx(-0.5625) and g[5] == pytest.approx(-7.5)
    hard = backend.to_host(dy.compressor_gain_db(xp.asarray([-30.0, -10.0]), -20.0, np.inf, 0.0))
    np.testing.assert_allclose(hard, [0.0, -10.0])


def test_compressor_step_attack_release(xp):
    n = 2 * FS
    t = np.arange(n) / FS
    amp = np.where((t >= 0.5) & (t < 1.0), 0.5, 10 ** (-40 / 20))
    x = (amp * np.sin(2 * np.pi * 1000 * t))[None].astype(np.float32)
    attack, release = 0.02, 0.1  # 10 dB per 0.1 s = 100 dB/s
    y, g = dy.compress(xp.asarray(x), FS, -20.0, 4.0, 0.0, attack, release, window_s=0.005)
    g = backend.to_host(g)[0]
    full = (20 * np.log10(0.5 / np.sqrt(2)) + 20) * (1 / 4 - 1)  # -8.23 dB
    assert g[int(0.75 * FS)] == pytest.approx(full, abs=0.01)
    # attack: untouched until attack + half detector window before the step, full at the step
    assert np.all(g[: int((0.5 - attack - 0.0026) * FS)] == 0.0)
    assert g[int(0.5 * FS) + 120] == pytest.approx(full, abs=0.05)
    assert abs(g[int((0.5 - attack / 2) * FS)] - full / 2) < 0.15 * abs(full)  # linear ramp half-way
    # release after the step down: monotone, 100 dB/s, back to 0 after 8.23 dB / 100 dB/s = 82 ms
    rel = g[int(1.0 * FS) + 200 : int(1.2 * FS)]
    assert np.all(np.diff(rel) >= -1e-12)
    assert np.max(np.diff(g)) <= 100.0 / FS + 1e-9
    slope = (g[int(1.04 * FS)] - g[int(1.02 * FS)]) / 0.02
    assert slope == pytest.approx(100.0, rel=0.01)
    back = int(np.argmax(g[FS:] >= 0.0)) / FS
    assert 0.08 <= back <= 0.09
    yh = backend.to_host(y)
    assert yh.dtype == np.float32
    np.testing.assert_allclose(yh, x * 10 ** (g / 20), rtol=1e-5, atol=1e-9)


def test_limiter_gain_shape(xp):
    p = np.full(2000, 0.5)
    p[1000] = 4.0  # 12.04 dB over a ceiling of 1
    L, rel = 20, 100.0  # 10 dB per 100 samples = 0.1 dB / sample
    g = backend.to_host(dy.limiter_gain(xp.asarray(p), 1.0, L, rel))
    assert g[1000] == pytest.approx(0.25, rel=1e-12) and np.all(g <= 1.0)
    assert np.all(g[: 1000 - L + 1] == 1.0)  # nothing before the look-ahead
    np.testing.assert_allclose(np.diff(g[1000 - L : 1001]), -0.75 / L, rtol=1e-9)  # linear ramp into the peak
    gd = 20 * np.log10(g[1000:])
    assert np.all(np.diff(gd) >= -1e-12) and np.all(np.diff(gd) <= 0.1 + 1e-9)  # monotone, rate-limited
    np.testing.assert_allclose(np.diff(gd[:100]), 0.1, rtol=1e-6)  # exactly linear in dB
    assert int(np.argmax(g[1000:] >= 1.0)) == int(np.ceil(20 * np.log10(4) / 0.1))
    assert np.all(g[1000 + 121 :] == 1.0)
    # never above the needed gain anywhere, on random peaks too
    q = np.abs(np.random.default_rng(3).standard_normal(5000)) * 0.6
    gq = backend.to_host(dy.limiter_gain(xp.asarray(q), 1.0, 37, 300.0))
    assert np.all(gq <= np.minimum(1.0, 1.0 / np.maximum(q, 1e-30)) * (1 + 1e-12))


@pytest.mark.parametrize("kind", ["pink", "white20k", "bursts"])
def test_true_peak_limit_ceiling(xp, kind):
    x = real_ish(kind)
    x = (x / fft_true_peak(x) * 10 ** ((CEIL_DB + 6) / 20)).astype(np.float32)  # +6 dB over the ceiling
    y, g = dy.true_peak_limit(xp.asarray(x), FS, CEIL_DB)
    y, g = backend.to_host(y), backend.to_host(g)
    assert y.shape == x.shape and y.dtype == np.float32 and g.shape == (1, x.shape[1])
    assert np.all(g <= 1.0) and np.all(g > 0)
    tp = 20 * np.log10(fft_true_peak(y, 8))
    assert tp <= CEIL_DB, f"{kind}: 8x true peak {tp:.4f} dBTP"
    assert tp > CEIL_DB - 0.2  # limited, not just turned down
    np.testing.assert_array_equal(y, (x.astype(np.float64) * g).astype(np.float32))  # sample-aligned gain


def test_true_peak_limit_passes_quiet_signal(xp):
    x = pink_noise(1.0, seed=5)
    x = (x / fft_true_peak(x) * 10 ** ((CEIL_DB - 0.5) / 20)).astype(np.float32)
    y, g = dy.true_peak_limit(xp.asarray(x), FS, CEIL_DB)
    assert np.all(backend.to_host(g) == 1.0)
    np.testing.assert_array_equal(backend.to_host(y), x)


def test_true_peak_limit_blocks_match(xp):
    x = real_ish("bursts", 1.5)
    x = (x / np.abs(x).max() * 1.5).astype(np.float32)
    y1, _ = dy.true_peak_limit(xp.asarray(x), FS, CEIL_DB)
    y2, _ = dy.true_peak_limit(xp.asarray(x), FS, CEIL_DB, block_s=0.4)
    y1, y2 = backend.to_host(y1), backend.to_host(y2)
    assert 20 * np.log10(fft_true_peak(y2)) <= CEIL_DB
    assert np.max(np.abs(y1 - y2)) < 1e-2


def test_validation():
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="width"):
        dy.sliding_min(x, 0)
    with pytest.raises(ValueError, match="align"):
        dy.sliding_min(x, 3, align="middle")
    with pytest.raises(ValueError, match="ratio"):
        dy.compressor_gain_db(np.zeros(3), -20.0, 0.5)
    with pytest.raises(ValueError, match="verify_oversample"):
        dy.true_peak_limit(x, FS, -1.0, oversample=8, verify_oversample=4)
    with pytest.raises(ValueError, match="NaN"):
        dy.true_peak_limit(np.full((2, 10), np.nan, np.float32), FS)
