"""Spectrum kernels: STFT scaling, fractional-octave bands, descriptors, band dynamics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pink_noise, sine

from acetate.kernels import backend, spectrum

FS = 48000


def _white(seconds: float, fs: int = FS, channels: int = 1, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * fs)))


def _long_term(x: np.ndarray, xp, fs: int = FS):
    """Channel-mean long-term bin power and freqs on the backend under test."""
    power, freqs = spectrum.stft_power(backend.to_device(x, xp, dtype="float32"), fs)
    return xp.mean(xp.astype(power, xp.float64), axis=(0, 1)), freqs


def test_band_grid_iso_thirds():
    b = spectrum.band_edges(FS)
    assert len(spectrum.BAND_CENTRES_HZ) == 31 and b.centre.shape == (31,)
    assert spectrum.BAND_CENTRES_HZ[0] == 20.0 and spectrum.BAND_CENTRES_HZ[-1] == 20000.0
    np.testing.assert_allclose(b.upper / b.lower, 2 ** (1 / 3))
    np.testing.assert_allclose(b.upper[:-1], b.lower[1:])  # contiguous
    assert b.centre[spectrum.BAND_CENTRES_HZ.index(1000.0)] == 1000.0
    # exact centres stay within 3 % of the nominal ones
    np.testing.assert_allclose(b.centre, b.nominal, rtol=0.03)
    assert b.valid.all()
    o = spectrum.band_edges(FS, fraction=1)
    assert o.centre.shape == (10,) and o.nominal[0] == 31.5 and o.nominal[-1] == 16000.0
    np.testing.assert_allclose(o.upper / o.lower, 2.0)


def test_band_validity_and_labels():
    b = spectrum.band_edges(22050)
    assert b.valid.sum() == 28  # up to the 10 kHz band; 12.5, 16 and 20 kHz are above 11.025 kHz
    assert not b.valid[b.nominal >= 12500].any()
    labels = spectrum.band_labels(3)
    assert labels[2] == "31p5" and labels[17] == "1000" and len(labels) == 31
    assert spectrum.band_labels(1)[0] == "31p5"


@pytest.mark.parametrize("bad", [0, -48000, 44100.5, float("nan"), "48000"])
def test_bad_rate_is_named(bad):
    with pytest.raises(ValueError, match="fs"):
        spectrum.band_edges(bad)


def test_bad_fraction_is_named():
    with pytest.raises(ValueError, match="fraction.*6"):
        spectrum.band_edges(FS, fraction=6)


def test_frame_lengths():
    assert spectrum.frame_lengths(48000) == (4096, 2048)
    assert spectrum.frame_lengths(44100)[0] == 4096
    assert spectrum.frame_lengths(22050)[0] == 2048
    assert spectrum.frame_lengths(96000)[0] == 8192
    with pytest.raises(ValueError, match="frame_seconds"):
        spectrum.frame_lengths(FS, frame_seconds=0)


def test_stft_shape_and_parseval(xp):
    x = _white(1.0, channels=2)
    s = spectrum.stft(backend.to_device(x, xp, dtype="float32"), FS)
    assert s.spec.shape[0] == 2 and s.spec.shape[2] == 2049 and s.frame == 4096 and s.hop == 2048
    assert s.spec.shape[1] == 1 + -(-(x.shape[1] - 4096) // 2048)
    power, freqs = spectrum.stft_power(backend.to_device(x, xp, dtype="float32"), FS)
    assert float(backend.to_host(freqs)[-1]) == FS / 2
    # Sum over bins = mean square, frame by frame (no zero-padded frames).
    per_frame = backend.to_host(xp.sum(xp.astype(power, xp.float64), axis=-1))
    assert abs(per_frame.mean() / np.mean(x**2) - 1) < 0.03


def test_stft_of_short_signal_is_one_frame(xp):
    x = backend.to_device(np.ones((1, 100), dtype=np.float32), xp)
    assert spectrum.stft(x, FS).spec.shape[:2] == (1, 1)


def test_stft_rejects_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        spectrum.stft(np.zeros((2, 2, 10), dtype=np.float32), FS)


def test_sine_energy_lands_in_its_band(xp):
    x = backend.to_device(sine(1000.0, -6.0, 1.0, channels=1), xp, dtype="float32")
    lt = backend.to_host(spectrum.ltas(x, FS))[0]
    k = spectrum.BAND_CENTRES_HZ.index(1000.0)
    assert np.argmax(lt) == k
    assert abs(10 * np.log10(lt[k]) - (-6.0 - 3.01)) < 0.05  # mean square of a -6 dBFS sine
    assert lt.sum() == pytest.approx(lt[k], rel=1e-3)  # essentially nothing elsewhere
    assert 10 * np.log10(lt[k - 2] / lt[k]) < -60 and 10 * np.log10(lt[k + 2] / lt[k]) < -60


def test_bands_narrower_than_a_bin_are_not_empty(xp):
    x = _white(2.0)
    p, freqs = _long_term(x, xp)
    bp = backend.to_host(spectrum.band_power(p, freqs, FS))
    assert np.all(bp > 0)  # 20 Hz band (4.6 Hz wide) < 11.7 Hz bins
    # white noise: band power proportional to bandwidth, also for the narrow bands
    b = spectrum.band_edges(FS)
    density = bp / (b.upper - b.lower)
    assert np.std(10 * np.log10(density[:10])) < 1.5


def test_fixed_length_with_nan_above_nyquist(xp):
    x = _white(1.0, fs=22050)
    lt = backend.to_host(spectrum.ltas(backend.to_device(x, xp, dtype="float32"), 22050))[0]
    assert lt.shape == (31,)
    nominal = np.array(spectrum.BAND_CENTRES_HZ)
    assert np.isnan(lt[nominal >= 12500]).all()
    assert np.isfinite(lt[nominal <= 10000]).all() and (lt[nominal <= 10000] > 0).all()


def test_centroid_and_rolloff_of_a_sine(xp):
    p, freqs = _long_term(sine(2500.0, -3.0, 1.0, channels=2), xp)
    assert float(spectrum.spectral_centroid(p, freqs)) == pytest.approx(2500.0, rel=0.005)
    df = FS / 4096
    assert abs(float(spectrum.spectral_rolloff(p, freqs)) - 2500.0) <= 2 * df


def test_rolloff_of_white_noise(xp):
    p, freqs = _long_term(_white(2.0), xp)
    assert float(spectrum.spectral_rolloff(p, freqs, 0.85)) == pytest.approx(0.85 * FS / 2, rel=0.02)
    assert float(spectrum.spectral_centroid(p, freqs)) == pytest.approx(FS / 4, rel=0.02)


def test_flatness_white_high_sine_low(xp):
    pw, freqs = _long_term(_white(2.0), xp)
    ps, _ = _long_term(sine(1000.0, -6.0, 2.0, channels=1), xp)
    assert float(spectrum.spectral_flatness(pw, freqs)) > 0.95
    assert float(spectrum.spectral_flatness(ps, freqs)) < 1e-3


def test_silent_spectrum_gives_nan_without_warnings(xp):
    p, freqs = _long_term(np.zeros((1, 8000)), xp)
    for v in (spectrum.spectral_centroid(p, freqs), spectrum.spectral_rolloff(p, freqs), spectrum.spectral_flatness(p, freqs)):
        assert np.isnan(float(v))


def _tilt(x, xp, fs=FS):
    p, freqs = _long_term(x, xp, fs)
    return float(spectrum.spectral_tilt(spectrum.band_power(p, freqs, fs), spectrum.band_edges(fs).centre))


def test_tilt_white_is_plus_three(xp):
    assert _tilt(_white(3.0), xp) == pytest.approx(10 * np.log10(2), abs=0.25)


def test_tilt_pink_is_flat(xp):
    assert abs(_tilt(pink_noise(3.0, channels=1), xp)) < 0.25


def test_tilt_ignores_bands_above_nyquist(xp):
    assert _tilt(_white(3.0, fs=22050), xp, fs=22050) == pytest.approx(10 * np.log10(2), abs=0.3)


def test_tilt_of_a_synthetic_slope():
    c = spectrum.band_edges(FS).centre
    p = 10 ** ((-4.5 * np.log2(c / 1000)) / 10)
    assert float(spectrum.spectral_tilt(p, c)) == pytest.approx(-4.5, abs=1e-9)
    p[:3] = np.nan  # ignored
    assert float(spectrum.spectral_tilt(p, c)) == pytest.approx(-4.5, abs=1e-9)


def test_level_db(xp):
    p = xp.asarray([1.0, 0.1, 0.0, float("nan")])
    db = backend.to_host(spectrum.level_db(p, 0.5, floor_db=-120))
    np.testing.assert_allclose(db[:3], [3.0103, -6.9897, -120.0], atol=1e-3)
    assert np.isnan(db[3])
    assert np.isnan(backend.to_host(spectrum.level_db(p, 0.0))).all()


def _octave_frames(x, xp):
    power, freqs = spectrum.stft_power(backend.to_device(x, xp, dtype="float32"), FS)
    frames = power[0]
    return spectrum.band_power(frames, freqs, FS, 1), xp.sum(xp.astype(frames, xp.float64), axis=-1)


def test_band_dynamics_steady_vs_stepped(xp):
    k = spectrum.OCTAVE_CENTRES_HZ.index(1000.0)
    steady = sine(1000.0, -10.0, 4.0, channels=1)
    bands, total = _octave_frames(steady, xp)
    assert float(backend.to_host(spectrum.band_dynamics(bands, total))[k]) < 0.1
    # alternate 1 s at -10 dBFS and 1 s at -30 dBFS: P95 - P10 = 20 dB
    gain = np.repeat(10 ** (np.array([0, -20, 0, -20]) / 20), FS)[None, :]
    bands, total = _octave_frames(steady * gain, xp)
    assert float(backend.to_host(spectrum.band_dynamics(bands, total))[k]) == pytest.approx(20.0, abs=0.5)


def test_band_dynamics_gates_silent_frames(xp):
    k = spectrum.OCTAVE_CENTRES_HZ.index(1000.0)
    x = np.concatenate([sine(1000.0, -10.0, 2.0, channels=1), np.zeros((1, 2 * FS))], axis=1)
    bands, total = _octave_frames(x, xp)
    assert float(backend.to_host(spectrum.band_dynamics(bands, total))[k]) < 1.0
    # all silent -> NaN
    bands, total = _octave_frames(np.zeros((1, FS)), xp)
    assert np.isnan(backend.to_host(spectrum.band_dynamics(bands, total))).all()


def test_band_dynamics_validates():
    with pytest.raises(ValueError, match="low_pct"):
        spectrum.band_dynamics(np.ones((4, 10)), np.ones(4), low_pct=90, high_pct=10)
    with pytest.raises(ValueError, match="frame_power"):
        spectrum.band_dynamics(np.ones((4, 10)), np.ones(5))


def test_gpu_parity_with_numpy(xp):
    x = pink_noise(1.0, channels=2)
    ref = spectrum.ltas(x.astype(np.float32), FS)
    got = backend.to_host(spectrum.ltas(backend.to_device(x, xp, dtype="float32"), FS))
    np.testing.assert_allclose(got, ref, rtol=1e-4)


@pytest.mark.parametrize(
    "n,hop_s",
    [
        (48000, spectrum.DEFAULT_HOP_SECONDS),
        (4096 * 3 + 17, spectrum.DEFAULT_HOP_SECONDS),
        (30000, 1000 / 48000),
        (4096, spectrum.DEFAULT_HOP_SECONDS),
    ],
)
def test_stft_frames_match_an_index_gather(n, hop_s):
    # Block-view framing (hop divides the frame) and the gather fallback (it does not) give the same frames.
    x = _white(n / FS, channels=2, seed=4).astype(np.float32)[:, :n]
    s = spectrum.stft(x, FS, hop_seconds=hop_s)
    frame, hop = s.frame, s.hop
    n_frames = 1 + -(-(n - frame) // hop) if n > frame else 1
    starts = np.minimum(np.arange(n_frames) * hop, n - frame)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)).astype(np.float32)
    ref = np.fft.rfft(x[:, starts[:, None] + np.arange(frame)] * window, axis=-1)
    assert s.spec.shape == ref.shape
    np.testing.assert_allclose(s.spec, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_stereo_power_stats_match_the_stft(xp):
    from acetate.kernels import stereo

    x = backend.to_device(np.concatenate([_white(3.1, seed=1), 0.5 * _white(3.1, seed=2)]).astype(np.float32), xp)
    s = spectrum.stft(x, FS)
    ll, rr, lr = stereo.cross_spectra(s.spec, s.scale)
    p_ll, p_rr, p_lr, band_frames, totals, freqs, info = spectrum.stereo_power_stats(x, FS, 1)
    for got, want in ((p_ll, ll), (p_rr, rr), (p_lr, lr)):
        np.testing.assert_allclose(backend.to_host(got), backend.to_host(want), rtol=1e-6, atol=1e-12)
    frame_pow = backend.to_host(xp.mean((xp.real(s.spec) ** 2 + xp.imag(s.spec) ** 2), axis=0)) * backend.to_host(s.scale)
    np.testing.assert_allclose(backend.to_host(totals), frame_pow.sum(axis=-1), rtol=1e-5)
    np.testing.assert_allclose(
        backend.to_host(band_frames), backend.to_host(spectrum.band_power(frame_pow, backend.to_host(s.freqs), FS, 1)), rtol=1e-4
    )
    assert info.frame == s.frame and info.hop == s.hop and band_frames.shape == (s.spec.shape[1], 10)
