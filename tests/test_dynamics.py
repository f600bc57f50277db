"""Sliding windows, envelopes, compressor and true-peak limiter."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import scipy.signal
from conftest import pink_noise

from acetate.kernels import backend, compressor, limiter, loudness, truepeak, windows

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
        fut = backend.to_host(windows.sliding_min(xp.asarray(x), w, align="future", mode="constant", cval=np.inf))
        past = backend.to_host(windows.sliding_max(xp.asarray(x), w, align="past", mode="constant", cval=-np.inf))
        cen = backend.to_host(windows.sliding_min(xp.asarray(x), w, align="centre", mode="nearest"))
        for i in (0, 3, 250, 499):
            assert fut[0, i] == x[0, i : i + w].min()
            assert past[1, i] == x[1, max(0, i - w + 1) : i + 1].max()
        np.testing.assert_array_equal(cen, scipy.ndimage.minimum_filter1d(x, w, axis=-1, mode="nearest"))


def test_doubling_min_matches_ndimage():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1000))
    for w in (2, 33, 64, 65, 777):
        ref = scipy.ndimage.minimum_filter1d(x, w, axis=-1, origin=-(w // 2))[..., : 1000 - w + 1]
        np.testing.assert_array_equal(windows._doubling_window_min(np, x, w), ref)


def test_moving_average_and_rms(xp):
    x = np.random.default_rng(2).standard_normal((2, 1000))
    ma = backend.to_host(windows.moving_average(xp.asarray(x), 10, mode="constant"))
    np.testing.assert_allclose(ma[:, 500], x[:, 491:501].mean(axis=-1), rtol=1e-12)
    s = np.sin(2 * np.pi * 1000 * np.arange(FS) / FS)[None] * np.array([[0.5], [1.0]])
    rms = backend.to_host(windows.rms_envelope(xp.asarray(s.astype(np.float32)), FS, 0.01))
    np.testing.assert_allclose(rms[:, FS // 2], [0.5 / np.sqrt(2), 1 / np.sqrt(2)], rtol=1e-4)
    linked = backend.to_host(windows.rms_envelope(xp.asarray(s.astype(np.float32)), FS, 0.01, link=True))
    assert linked.shape == (1, FS) and abs(linked[0, FS // 2] - 1 / np.sqrt(2)) < 1e-4


def test_compressor_static_curve(xp):
    lv = xp.asarray([-60.0, -26.0, -23.0, -20.0, -17.0, -10.0, 0.0, -np.inf])
    g = backend.to_host(compressor.compressor_gain_db(lv, -20.0, 4.0, 6.0))
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
    hard = backend.to_host(compressor.compressor_gain_db(xp.asarray([-30.0, -10.0]), -20.0, np.inf, 0.0))
    np.testing.assert_allclose(hard, [0.0, -10.0])


def test_compressor_step_attack_release(xp):
    n = 2 * FS
    t = np.arange(n) / FS
    amp = np.where((t >= 0.5) & (t < 1.0), 0.5, 10 ** (-40 / 20))
    x = (amp * np.sin(2 * np.pi * 1000 * t))[None].astype(np.float32)
    attack, release = 0.02, 0.1  # 10 dB per 0.1 s = 100 dB/s
    y, g = compressor.compress(xp.asarray(x), FS, -20.0, 4.0, 0.0, attack, release, window_s=0.005)
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
    g = backend.to_host(limiter.limiter_gain(xp.asarray(p), 1.0, L, rel))
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
    gq = backend.to_host(limiter.limiter_gain(xp.asarray(q), 1.0, 37, 300.0))
    assert np.all(gq <= np.minimum(1.0, 1.0 / np.maximum(q, 1e-30)) * (1 + 1e-12))


def ebur128_true_peak(y: np.ndarray, fs: int) -> float:
    """pyebur128's (libebur128's) true peak, linear, max over channels."""
    import pyebur128

    c, n = y.shape
    st = pyebur128.R128State(c, fs, pyebur128.MeasurementMode.MODE_TRUE_PEAK)
    st.add_frames(np.ascontiguousarray(y.T, dtype=np.float32).reshape(-1), n)
    return max(pyebur128.get_true_peak(st, ch) for ch in range(c))


def meter16_db(y: np.ndarray, fs: int) -> float:
    return float(20 * np.log10(truepeak.true_peak(y, fs, oversample=16).max()))


def near_nyquist(seconds: float, fs: int) -> np.ndarray:
    """Sines between 0.42 and 0.49 fs, noise above 0.4 fs and a little pink noise."""
    rng = np.random.default_rng(21)
    n = int(seconds * fs)
    t = np.arange(n) / fs
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (2, 1))) for f in rng.uniform(0.42, 0.49, 6) * fs)
    hp = scipy.signal.sosfilt(scipy.signal.butter(8, 0.4 * fs, "high", fs=fs, output="sos"), rng.standard_normal((2, n)))
    return 0.3 * x + hp + 0.5 * pink_noise(seconds, fs=fs, seed=4)


def oversampled_peak(x: np.ndarray, r: int, pad: int = 4096) -> np.ndarray:
    """|x| on an ``r``-times grid, linked over channels (max), float32: ideal band-limited
    interpolation by FFT (zero-padded spectrum, the Nyquist bin split evenly), the track
    silent outside, ``pad`` zeros each side against wrap-around (error < 0.0005 dB)."""
    x = np.asarray(x, np.float32)
    n = x.shape[-1]
    m = scipy.fft.next_fast_len(n + 2 * pad, real=True)  # 5-smooth
    spec = np.fft.rfft(np.pad(x, ((0, 0), (pad, m - n - pad))), axis=-1)
    big = np.zeros((x.shape[0], r * m // 2 + 1), spec.dtype)
    big[:, : spec.shape[-1]] = spec
    if m % 2 == 0:
        big[:, m // 2] *= 0.5
    y = np.fft.irfft(big, n=r * m, axis=-1)
    return np.abs((y[:, r * pad : r * (pad + n)] * r).astype(np.float32)).max(axis=0)


def reference_limit(x: np.ndarray, fs: int, ceiling_db: float, lookahead_s=0.0015, release_s=0.05) -> np.ndarray:
    """Brute-force limiter for loudness comparison: needed gain on an ideal 16x grid,
    the same look-ahead ramp and release at that rate, decimated by the minimum over
    each sample's neighbourhood (the old method, one pass)."""
    r = 16
    peaks = oversampled_peak(x, r)
    g = limiter.limiter_gain(peaks, 10 ** (ceiling_db / 20), int(round(lookahead_s * fs * r)), release_s * fs * r)
    g = scipy.ndimage.minimum_filter1d(g, 2 * r - 1, mode="nearest")[::r]
    return (x.astype(np.float64) * g).astype(np.float32)


@pytest.mark.parametrize("kind", ["pink", "white20k", "bursts"])
def test_true_peak_limit_ceiling(xp, kind):
    x = real_ish(kind)
    x = (x / fft_true_peak(x) * 10 ** ((CEIL_DB + 6) / 20)).astype(np.float32)  # +6 dB over the ceiling
    y, g = limiter.true_peak_limit(xp.asarray(x), FS, CEIL_DB)
    y, g = backend.to_host(y), backend.to_host(g)
    assert y.shape == x.shape and y.dtype == np.float32 and g.shape == (1, x.shape[1]) and g.dtype == np.float32
    assert np.all(g <= 1.0) and np.all(g > 0)
    tp = meter16_db(y, FS)
    assert tp <= CEIL_DB, f"{kind}: 16x true peak {tp:.5f} dBTP"
    assert tp > CEIL_DB - 0.1  # limited, not just turned down
    assert 20 * np.log10(ebur128_true_peak(y, FS)) <= CEIL_DB
    # An ideal (brick-wall) 8x interpolator agrees wherever the programme is band-limited
    # below ~0.47 fs, as every real recording is (20 kHz at 44.1/48 kHz): truepeak's 48-tap
    # Kaiser filter is flat to 0.4535 fs and the limiter holds that meter. Full-band
    # synthetic noise up to Nyquist is the one case an ideal interpolator reads higher.
    xb = scipy.signal.sosfiltfilt(scipy.signal.butter(12, 20000, fs=FS, output="sos"), x, axis=-1).astype(np.float32)
    yb, _ = limiter.true_peak_limit(xp.asarray(xb), FS, CEIL_DB)
    assert 20 * np.log10(fft_true_peak(backend.to_host(yb), 8)) <= CEIL_DB + 0.01
    np.testing.assert_array_equal(y, (x.astype(np.float64) * g.astype(np.float64)).astype(np.float32))  # sample-aligned gain, no latency


@pytest.mark.parametrize("kind, fs", [("pink", 48000), ("near_nyquist", 48000), ("pink", 44100), ("near_nyquist", 44100)])
@pytest.mark.parametrize("over_db", [6.0, 12.0])
def test_true_peak_limit_heavy_overs(kind, fs, over_db):
    x = pink_noise(3.0, fs=fs, seed=9) if kind == "pink" else near_nyquist(3.0, fs)
    x = (x / truepeak.true_peak(x, fs, oversample=16).max() * 10 ** ((CEIL_DB + over_db) / 20)).astype(np.float32)
    y, g = limiter.true_peak_limit(x, fs, CEIL_DB)
    assert meter16_db(y, fs) <= CEIL_DB
    assert 20 * np.log10(ebur128_true_peak(y, fs)) <= CEIL_DB
    assert np.all(g <= 1.0) and np.all(g > 0)
    # loudness: the limiter gives up no more than a brute-force 16x limiter aiming at the
    # same level, and far less than a static gain to the ceiling
    i_y = loudness.integrated_loudness(y, fs)
    i_ref = loudness.integrated_loudness(reference_limit(x, fs, CEIL_DB - 0.03), fs)
    i_static = loudness.integrated_loudness(x, fs) - over_db
    assert i_y >= i_ref - 0.05, (i_y, i_ref)
    assert i_y >= i_static + 1.0


def test_true_peak_limit_gain_shape():
    """One loud burst: no gain change before the look-ahead, minimum at the burst
    (sample-aligned), then a release linear in dB at release_ref_db / release_s."""
    n = FS
    t = np.arange(n) / FS
    x = np.tile(0.3 * np.sin(2 * np.pi * 200 * t), (2, 1))
    k0 = 24000
    burst = 1.8 * np.sin(2 * np.pi * 1000 * t[:480]) * np.hanning(480)
    x[:, k0 : k0 + 480] += burst
    x = x.astype(np.float32)
    la, rel = 0.0015, 0.05  # 200 dB/s release = 1/240 dB per sample
    y, g = limiter.true_peak_limit(x, FS, CEIL_DB, lookahead_s=la, release_s=rel)
    g = g[0]
    assert meter16_db(y, FS) <= CEIL_DB
    before = k0 - int(la * FS) - 16
    assert np.all(g[:before] == 1.0) and np.array_equal(y[:, :before], x[:, :before])  # bit-identical away from limiting
    peak_at = k0 + int(np.argmax(np.abs(burst)))
    assert abs(int(np.argmin(g)) - peak_at) <= 16  # no latency: deepest where the peak is
    gd = 20 * np.log10(g)
    end = int(np.argmax(gd[peak_at:] >= 0.0)) + peak_at  # back to unity
    assert np.all(g[end:] == 1.0)
    tail = gd[k0 + 480 : end - 16]  # after the burst: pure release
    assert np.all(np.diff(tail) >= -1e-9)
    slope = np.diff(tail[::8]) / 8  # knots every 8 samples: linear in dB between knots to < 1e-6 dB
    np.testing.assert_allclose(slope, 10.0 / (rel * FS), rtol=1e-3)


def test_true_peak_limit_passes_quiet_signal(xp):
    x = pink_noise(1.0, seed=5)
    x = (x / fft_true_peak(x) * 10 ** ((CEIL_DB - 0.5) / 20)).astype(np.float32)
    y, g = limiter.true_peak_limit(xp.asarray(x), FS, CEIL_DB)
    assert np.all(backend.to_host(g) == 1.0)
    np.testing.assert_array_equal(backend.to_host(y), x)


@pytest.mark.parametrize("n", [1, 7, 31, 33, 100, 1001])
def test_true_peak_limit_short_and_edges(n):
    """Tracks shorter than a block, and overs at the very first and last samples
    (the meter reads the ringing before and after the track too)."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, n)).astype(np.float32) * 2.0
    x[:, 0] = 3.0
    x[:, -1] = -3.0
    y, g = limiter.true_peak_limit(x, FS, CEIL_DB)
    assert y.shape == x.shape and g.shape == (1, n)
    assert meter16_db(y, FS) <= CEIL_DB
    assert 20 * np.log10(ebur128_true_peak(y, FS)) <= CEIL_DB
    np.testing.assert_array_equal(y, (x.astype(np.float64) * g.astype(np.float64)).astype(np.float32))


def test_true_peak_limit_screen_bound_is_rigorous():
    """The coarse-grid bound F * coarse + rho * |x| never under-reads the fine meter."""
    plan = limiter._tp_plan(4, 16)
    hf, t = truepeak.interpolation_filter(16), plan["t"]
    hc = truepeak.interpolation_filter(4)
    rng = np.random.default_rng(3)
    for trial in range(200):
        x = rng.standard_normal(t + 2)
        if trial % 2:
            x *= (-1.0) ** np.arange(t + 2)  # energy near Nyquist
        w = x[1 : 1 + t]  # taps of centre c (x[0], x[-1]: the widened support)
        fine = np.abs(hf @ w).max()
        coarse = max(np.abs(hc @ w).max(), abs(x[1 + t // 2]))  # centre c's phases and the sample c + 1
        assert fine <= plan["f"] * coarse + plan["rho"] * np.abs(x).max() + 1e-12


@pytest.mark.parametrize("ebur", [1, 2, 4])
def test_true_peak_limit_prescreen_bound_is_rigorous(ebur):
    """The 2x pre-screen's bound f2 * max(|x_c|, |midpoint_c|, |x_c+1|) + rho2 * |x| never
    under-reads any value either meter reads at centre c: the 16x phases (the 4x ones among
    them) and libebur128's; and it is tight enough to matter (a loud block is near it)."""
    plan = limiter._tp_plan(4, 16, ebur)
    hf, t = truepeak.interpolation_filter(16), plan["t"]
    left = t // 2 - 1
    rows = list(hf[1:]) + (list(limiter._libebur128_filter(ebur, t)[1:]) if ebur > 1 else [])
    rng = np.random.default_rng(ebur)
    ratios = []
    for trial in range(300):
        x = rng.standard_normal(t + 2)
        if trial % 3 == 1:
            x *= (-1.0) ** np.arange(t + 2)  # energy near Nyquist
        elif trial % 3 == 2:  # adversarial: the signs of the midpoint filter, the worst overshoot
            x = np.concatenate([[0.0], np.sign(hf[8]), [0.0]]) * rng.uniform(0.5, 1.0, t + 2)
        w = x[1 : 1 + t]  # taps of centre c (x[0], x[-1]: the widened support)
        values = np.abs(np.array(rows) @ w).max()
        e2 = max(abs(w[left]), abs(hf[8] @ w), abs(w[left + 1]))
        bound = plan["f2"] * e2 + plan["rho2"] * np.abs(x).max()
        assert values <= bound + 1e-12
        ratios.append(values / bound)
    assert max(ratios) > 0.5  # not vacuous


def test_validation():
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="width"):
        windows.sliding_min(x, 0)
    with pytest.raises(ValueError, match="align"):
        windows.sliding_min(x, 3, align="middle")
    with pytest.raises(ValueError, match="ratio"):
        compressor.compressor_gain_db(np.zeros(3), -20.0, 0.5)
    with pytest.raises(ValueError, match="verify_oversample"):
        limiter.true_peak_limit(x, FS, -1.0, oversample=8, verify_oversample=4)
    with pytest.raises(ValueError, match="NaN"):
        limiter.true_peak_limit(np.full((2, 10), np.nan, np.float32), FS)


def test_compress_at_control_rate_matches_per_sample_detector():
    from acetate.pipeline.catalogue import demo

    fs = 48000
    x = demo.render_style("rock", 6.0, fs, seed=5)
    band = x.astype(np.float32)
    level = 10 * np.log10(np.mean(band.astype(np.float64) ** 2))
    for attack, release in ((0.03, 0.25), (0.004, 0.08)):
        y1, g1 = compressor.compress(band, fs, level + 2, 2.0, 6.0, attack, release)
        y2, g2 = compressor.compress(band, fs, level + 2, 2.0, 6.0, attack, release, control_hop=16)
        assert g1.shape == g2.shape and y2.dtype == band.dtype
        assert g1.min() < -1.0  # the compressor is working
        assert np.max(np.abs(g1 - g2)) < 0.2
        assert np.mean(np.abs(g1 - g2)) < 0.01
    with pytest.raises(ValueError, match="control_hop"):
        compressor.compress(band, fs, -20, 2.0, control_hop=0)
    lin = compressor.compressor_gain(band, fs, level + 2, 2.0, 6.0, attack, release, control_hop=16)
    assert lin.shape == (band.shape[1],) and lin.dtype == band.dtype
    np.testing.assert_array_equal(band * lin[None], y2)  # the same gain, not applied
    with pytest.raises(ValueError, match="control_hop"):
        compressor.compressor_gain(band, fs, -20, 2.0, control_hop=1)
    # at the control rate, for a caller that applies it a stretch at a time (the multiband sum):
    # the same per-sample values, stretch by stretch (to float32 rounding: the matrix
    # product behind the interpolation may tile a stretch differently from the whole)
    hops = compressor.compressor_gain(band, fs, level + 2, 2.0, 6.0, attack, release, control_hop=16, at_hops=True)
    n = band.shape[1]
    assert hops.shape == (-(-n // 16),) and hops.dtype == band.dtype
    np.testing.assert_array_equal(compressor.interpolate_hops(hops, 16, n), lin)
    pieces = [compressor.interpolate_hops(hops, 16, n, s, s + 16 * 997) for s in range(0, n, 16 * 997)]
    np.testing.assert_allclose(np.concatenate(pieces), lin, rtol=0, atol=4 * np.finfo(np.float32).eps * float(np.abs(hops).max()))


@pytest.mark.parametrize("hop", [1, 2, 7, 16])
def test_control_rate_gain_is_linear_interpolation_between_hop_centres(hop):
    """The broadcast ramp equals numpy.interp through the hop centres, ends held."""
    rng = np.random.default_rng(hop)
    for n in (1, hop * 5, hop * 5 + 3, 1001):
        nh = -(-n // hop)
        g = rng.uniform(-12.0, 0.0, (2, nh))
        centres = np.arange(nh) * hop + (hop - 1) / 2
        ref = np.stack([np.interp(np.arange(n), centres, row) for row in g])
        got = compressor.interpolate_hops(g, hop, n)
        assert got.shape == (2, n)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        for s0 in range(0, n, 3 * hop):  # any stretch starting on a hop: the same values (to rounding)
            part = compressor.interpolate_hops(g, hop, n, s0, s0 + 5 * hop + 1)
            np.testing.assert_allclose(part, got[:, s0 : s0 + 5 * hop + 1], rtol=0, atol=4 * np.finfo(g.dtype).eps * np.abs(g).max())
    with pytest.raises(ValueError, match="starting on a hop"):
        compressor.interpolate_hops(g, hop, n, 1) if hop > 1 else compressor.interpolate_hops(g[:, :-1], hop, n)


def test_limiter_knot_gain_is_the_applied_gain(xp):
    """``knots=True`` returns the gain as knots (n / 8 values, no per-sample copy): the same
    output, per-sample values equal to the array the default returns, the same deepest
    reduction, and ranges that cover every sample the limiter changed."""
    rng = np.random.default_rng(11)
    n = 48000 * 3 + 5  # a partial last knot interval
    x = (0.3 * rng.standard_normal((2, n))).astype(np.float32)
    x[:, 30000:30040] *= 6.0  # a few loud bursts
    x[:, n - 20 :] *= 5.0  # one at the very end
    y1, g1 = limiter.true_peak_limit(xp.asarray(x), FS, -1.0)
    y2, kg = limiter.true_peak_limit(xp.asarray(x), FS, -1.0, knots=True)
    assert isinstance(kg, limiter.KnotGain) and int(kg.knots.shape[0]) < n // 7
    np.testing.assert_array_equal(backend.to_host(y1), backend.to_host(y2))
    g = backend.to_host(g1)[0]
    np.testing.assert_array_equal(backend.to_host(kg.samples()), g)
    assert kg.minimum() == float(g.min()) < 0.9
    runs = kg.runs()
    covered = np.zeros(n, bool)
    for a, b in runs:
        covered[a:b] = True
    changed = np.any(backend.to_host(y2) != x, axis=0) | (g < 1.0)
    assert changed.any() and not np.any(changed & ~covered)
    assert covered.sum() < changed.sum() + 16 * len(runs)  # whole knot intervals, no more
    # with an input gain folded in: y is (x * scale) then * gain, each a float32 product
    y3, k3 = limiter.true_peak_limit(xp.asarray(x), FS, -1.0, input_gain_db=3.0, knots=True)
    scaled = x * np.float32(10 ** (3.0 / 20))
    expect = (scaled.astype(np.float64) * backend.to_host(k3.samples()).astype(np.float64)[None]).astype(np.float32)
    np.testing.assert_array_equal(backend.to_host(y3), expect)
    assert k3.minimum() < kg.minimum()
    # nothing to limit: a unit gain and no ranges
    _, k0 = limiter.true_peak_limit(xp.asarray(0.1 * x), FS, -1.0, knots=True)
    assert k0.minimum() == 1.0 and k0.runs().shape == (0, 2)


def test_limiter_gain_is_computed_around_its_needs_only(xp, monkeypatch):
    """Sparse needs: the look-ahead and release run on the stretches around them only (pads
    of ones between), and give the dense computation's values -- bit for bit on NumPy --
    for dips at the track's ends, clustered ones and ones closer than a pad."""
    rng = np.random.default_rng(7)
    calls = []
    dense = limiter._gain_from_need_dense

    def spy(xp_, need, la, rel, ref, positions=None):
        calls.append(positions is not None)
        return dense(xp_, need, la, rel, ref, positions)

    for trial in range(40):
        n = int(rng.integers(30_000, 200_000))
        need = np.ones(n)
        at = rng.integers(0, n, int(rng.integers(1, 8)))
        extra = [[0, n - 1], [1, n - 2], list(at[:1] + rng.integers(1, 400, 3))][trial % 3]
        at = np.array([i for i in list(at) + extra if 0 <= i < n])
        need[at] = rng.uniform(0.05, 0.999, at.size)
        la, rel = int(rng.integers(1, 24)), float(rng.uniform(10.0, 400.0))
        monkeypatch.setattr(limiter, "_gain_from_need_dense", spy)
        got = limiter._gain_from_need(xp, xp.asarray(need), la, rel, 10.0)
        monkeypatch.setattr(limiter, "_gain_from_need_dense", dense)
        ref = dense(xp, xp.asarray(need), la, rel, 10.0)
        got, ref = backend.to_host(got), backend.to_host(ref)
        if backend.is_gpu(xp):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
        else:
            np.testing.assert_array_equal(got, ref)
        assert got.min() < 1.0 and np.count_nonzero(got < 1.0) < n // 4
    assert sum(calls) >= 30  # the sparse path ran (the rest: needs too close to the ends or too many)
    none = limiter._gain_from_need(xp, xp.ones(1000), 8, 100.0, 10.0)
    assert float(backend.to_host(none).min()) == 1.0


def test_limiter_input_gain_is_limiting_the_gained_signal(xp):
    """``input_gain_db`` folds the gain in (no gained copy of the track): the result is
    limiting ``x * gain`` itself, to float32 rounding, and keeps the ceiling at 16x."""
    from acetate.pipeline.catalogue import demo

    x = demo.render_style("rock", 6.0, FS, seed=2).astype(np.float32)
    for gain_db in (0.0, 12.5):
        s = 10 ** (gain_db / 20)
        y1, g1 = limiter.true_peak_limit(xp.asarray(x), FS, -1.0, input_gain_db=gain_db)
        y2, g2 = limiter.true_peak_limit(xp.asarray((x * s).astype(np.float32)), FS, -1.0)
        y1, y2 = backend.to_host(y1), backend.to_host(y2)
        assert np.abs(y1 - y2).max() < 1e-5
        assert float(np.max(truepeak.true_peak(y1, FS, oversample=16))) <= 10 ** (-1 / 20)
        if gain_db:
            assert float(backend.to_host(g1).min()) < 0.7  # it did limit
    with pytest.raises(ValueError, match="input_gain_db"):
        limiter.true_peak_limit(xp.asarray(x), FS, -1.0, input_gain_db=float("nan"))


def test_cached_interpolators_are_read_only_and_left_as_designed():
    """The interpolators are cached designs shared by the meter and the limiter: they are
    read-only, and a limiter pass (which builds its own plan from them) leaves them as they were."""
    designs = {(r, k): truepeak.interpolation_filter(r, k).copy() for r, k in ((4, "kaiser"), (16, "kaiser"), (4, "annex"))}
    x = (pink_noise(3.0, fs=FS, seed=4) * 8.0).astype(np.float32)  # -2 dBFS RMS: the limiter works
    limiter.true_peak_limit(x, FS, CEIL_DB)
    for (r, k), before in designs.items():
        h = truepeak.interpolation_filter(r, k)
        np.testing.assert_array_equal(h, before)
        with pytest.raises(ValueError, match="read-only"):
            h[0, 0] = 0.0
