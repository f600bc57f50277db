"""Meter behaviour beyond the compliance cases: rates, layouts, edge cases, cross-checks, CLI."""

from __future__ import annotations

import json

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from conftest import pink_noise, sine

from acetate.kernels import backend, loudness, truepeak
from acetate.pipeline import cli


def synth_music(seconds: float, fs: int, seed: int = 0) -> np.ndarray:
    """A music-like stereo mix: bass line, chords, hats and a kick, with a crescendo.

    Real enough to exercise gating and spectral balance; built here so CI needs no files.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    t = np.arange(n) / fs
    beat = 0.5  # seconds
    step = (t // beat).astype(int)
    roots = np.array([55.0, 73.4, 61.7, 82.4])[(step // 4) % 4]
    bass = 0.3 * np.sin(2 * np.pi * np.cumsum(roots) / fs)
    chord = sum(0.08 * np.sin(2 * np.pi * np.cumsum(roots * 4 * r) / fs + p) for r, p in ((1, 0), (1.26, 1), (1.5, 2)))
    phase_in_beat = t % beat
    kick = 0.6 * np.exp(-phase_in_beat * 30) * np.sin(2 * np.pi * (50 + 80 * np.exp(-phase_in_beat * 40)) * phase_in_beat)
    hats = 0.05 * rng.standard_normal(n) * np.exp(-((t + beat / 2) % beat) * 60)
    swell = 0.3 + 0.7 * (t / seconds)  # a crescendo: dynamics for gating and LRA
    mid = (bass + chord + kick) * swell
    left = mid + hats * 0.8 + 0.02 * rng.standard_normal(n)
    right = mid + np.roll(hats, 37) * 0.8 + 0.02 * rng.standard_normal(n)
    return np.stack([left, right]) * 0.7


@pytest.mark.parametrize("fs", [8000, 22050, 32000, 44100, 48000, 88200, 96000, 192000])
def test_sine_in_one_channel_reads_minus_3_01_at_any_rate(fs):
    # BS.1770: a 0 dBFS 997 Hz sine in one front channel reads -3.01 LUFS.
    x = sine(997.0, 0.0, 5.0, fs=fs, channels=1)
    assert loudness.integrated_loudness(x, fs) == pytest.approx(-3.01, abs=0.05)


@pytest.mark.parametrize("fs", [44100, 96000])
def test_k_weighting_derived_per_rate_matches_pyloudnorm_deman(fs):
    x = pink_noise(12.0, fs=fs, seed=5)
    ours = loudness.integrated_loudness(x, fs)
    ref = pyloudnorm.Meter(fs, filter_class="DeMan").integrated_loudness(x.T)
    assert ours == pytest.approx(ref, abs=0.01)


def test_k_weighting_table_at_48k():
    sos = loudness.k_weighting_sos(48000)
    np.testing.assert_allclose(sos[0, :3], [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-12)
    np.testing.assert_allclose(sos[0, 4:], [-1.69065929318241, 0.73248077421585], atol=1e-12)
    np.testing.assert_allclose(sos[1, 4:], [-1.99004745483398, 0.99007225036621], atol=1e-12)


def test_integrated_agrees_with_pyloudnorm_deman_on_music():
    fs = 44100
    x = synth_music(30.0, fs)
    ours = loudness.integrated_loudness(x.astype(np.float32), fs)
    ref = pyloudnorm.Meter(fs, filter_class="DeMan").integrated_loudness(x.T.astype(np.float32).astype(np.float64))
    assert ours == pytest.approx(ref, abs=0.01)
    # pyloudnorm's default (RBJ) filter reads a little low, as documented.
    default = pyloudnorm.Meter(fs).integrated_loudness(x.T)
    assert -0.1 < default - ours < 0.0


def test_lfe_is_excluded_in_5_1():
    fs = 48000
    base = sine(1000.0, -23.0, 10.0, fs=fs, channels=1)
    quiet = np.zeros_like(base)
    five_one = np.concatenate([base, base, quiet, quiet, quiet, quiet])
    loud_lfe = five_one.copy()
    loud_lfe[3] = sine(60.0, -3.0, 10.0, fs=fs, channels=1)[0]
    assert loudness.integrated_loudness(five_one, fs) == pytest.approx(-23.0, abs=0.1)
    assert loudness.integrated_loudness(loud_lfe, fs) == pytest.approx(loudness.integrated_loudness(five_one, fs), abs=1e-9)


def test_unsupported_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="7 channels"):
        loudness.measure(np.zeros((7, 48000)), 48000)


def test_silence_and_short_input_are_undefined_not_errors(xp):
    for x in (np.zeros((2, 48000 * 3)), np.full((2, 4000), 0.5)):
        s = loudness.measure(backend.to_device(x, xp), 48000)
        assert s.integrated_lufs == float("-inf")
        assert s.loudness_range_lu == 0.0
    s = loudness.measure(backend.to_device(np.full((2, 4000), 0.5), xp), 48000)
    assert s.momentary_max_lufs == float("-inf")  # shorter than one 400 ms window


def test_non_finite_samples_raise_with_position(xp):
    x = np.zeros((2, 48000), dtype=np.float32)
    x[1, 1234] = np.nan
    with pytest.raises(ValueError, match="1 non-finite.*sample 1234"):
        loudness.measure(backend.to_device(x, xp), 48000)


def test_chunked_filtering_matches_one_pass(xp):
    x = backend.to_device(synth_music(8.0, 48000, seed=2).astype(np.float32), xp)
    whole = loudness.measure(x, 48000, chunk=1 << 30)
    parts = loudness.measure(x, 48000, chunk=12345)
    assert parts.integrated_lufs == pytest.approx(whole.integrated_lufs, abs=1e-9)
    assert parts.momentary_max_lufs == pytest.approx(whole.momentary_max_lufs, abs=1e-9)
    assert parts.loudness_range_lu == pytest.approx(whole.loudness_range_lu, abs=1e-9)


def test_true_peak_pruned_path_matches_full_interpolation():
    rng = np.random.default_rng(11)
    # Quiet body with a few loud transients: the pruned path is taken.
    x = rng.standard_normal((2, 96000)) * 0.01
    x[:, 50000:50040] += np.hanning(40) * 0.9 * np.sign(rng.standard_normal(40))
    h = truepeak.interpolation_filter(4)
    full = np.abs(truepeak._phase_outputs(x, h, np.arange(x.shape[1]), np)).max(axis=(1, 2))
    full = np.maximum(full, np.abs(x).max(axis=1))
    np.testing.assert_allclose(truepeak.true_peak(x, 48000), full, rtol=1e-12)
    # Dense material takes the chunked polyphase path; it must agree too.
    y = np.clip(rng.standard_normal((2, 50000)) * 0.5, -1, 1)
    full = np.abs(truepeak._phase_outputs(y, h, np.arange(y.shape[1]), np)).max(axis=(1, 2))
    np.testing.assert_allclose(truepeak.true_peak(y, 48000, chunk=7001), np.maximum(full, np.abs(y).max(axis=1)), rtol=1e-12)


def _full_true_peak(x: np.ndarray, ratio: int) -> np.ndarray:
    """Every interpolated point at ``ratio`` (no pruning), per channel, with the sample peak."""
    h = truepeak.interpolation_filter(ratio)
    full = np.abs(truepeak._phase_outputs(x, h, np.arange(x.shape[1]), np)).max(axis=(1, 2))
    return np.maximum(full, np.abs(x).max(axis=1))


@pytest.mark.parametrize("kind", ["transients", "dense", "limited", "tiny"])
def test_true_peak_pair_is_both_exact_readings(xp, kind):
    """The two-stage search (4x everywhere, 16x where a bound from the 4x points
    can reach the peak) returns exactly what full 4x and 16x interpolation give."""
    rng = np.random.default_rng(7)
    if kind == "transients":
        x = rng.standard_normal((2, 48000)) * 0.01
        x[:, 30000:30040] += np.hanning(40) * 0.9 * np.sign(rng.standard_normal(40))
    elif kind == "dense":
        x = np.clip(rng.standard_normal((2, 30000)) * 0.5, -1, 1)
    elif kind == "limited":  # a near-Nyquist tone at the ceiling: inter-sample peaks everywhere
        n = np.arange(40000)
        x = np.stack([0.89 * np.sin(2 * np.pi * 0.43 * n + 0.4), 0.8 * np.sin(2 * np.pi * 0.21 * n)])
    else:
        x = rng.standard_normal((2, 13)) * 0.5
    x = x.astype(np.float32)
    p4, p16 = (backend.to_host(p) for p in truepeak.true_peak_pair(xp.asarray(x), 48000))
    np.testing.assert_allclose(p4, _full_true_peak(x.astype(np.float64), 4), rtol=2e-6)
    np.testing.assert_allclose(p16, _full_true_peak(x.astype(np.float64), 16), rtol=2e-6)
    np.testing.assert_allclose(backend.to_host(truepeak.true_peak(xp.asarray(x), 48000, oversample=16)), p16, rtol=1e-12)
    # stretch by stretch (many short stretches here): the same readings
    q4, q16 = (backend.to_host(p) for p in truepeak.true_peak_pair(xp.asarray(x), 48000, chunk=240))
    np.testing.assert_allclose(q4, p4, rtol=1e-6)
    np.testing.assert_allclose(q16, p16, rtol=1e-6)
    assert truepeak._fine_residual(16) < 0.2  # the bound prunes: fine phases sit near the 4x line
    with pytest.raises(ValueError, match="multiple of 4"):
        truepeak.true_peak_pair(xp.asarray(x), 48000, oversample=6)


def test_true_peak_takes_the_callers_sample_peaks(xp):
    """A meter that has the sample peaks already hands them over: the readings are
    the same as when the search measures them itself; a wrong shape is refused."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 20000)).astype(np.float32) * 0.05
    x[0, 5000:5030] += (np.hanning(30) * 0.8).astype(np.float32)
    xd = xp.asarray(x)
    sp = truepeak.sample_peak(xd)
    np.testing.assert_array_equal(backend.to_host(sp), np.abs(x).max(axis=1).astype(np.float64))
    for ratio in (4, 8):
        np.testing.assert_array_equal(
            backend.to_host(truepeak.true_peak(xd, 48000, oversample=ratio, sample_peaks=sp)),
            backend.to_host(truepeak.true_peak(xd, 48000, oversample=ratio)),
        )
    for a, b in zip(truepeak.true_peak_pair(xd, 48000, sample_peaks=sp), truepeak.true_peak_pair(xd, 48000)):
        np.testing.assert_array_equal(backend.to_host(a), backend.to_host(b))
    with pytest.raises(ValueError, match="one value per channel"):
        truepeak.true_peak(xd, 48000, sample_peaks=sp[:1])


def test_remeasure_after_gain_and_local_changes_equals_a_full_measurement(xp):
    """A gain plus changes in a few stretches (what a limiter does) is measured again
    only there; every figure equals a full measurement of the new signal."""
    fs = 44100
    rng = np.random.default_rng(5)
    x = (pink_noise(20.0, fs=fs, seed=2) * 0.1).astype(np.float32)
    x[:, 5 * fs : 7 * fs] *= 4.0  # some dynamics for the gates, maxima and LRA
    st, prof = loudness.measure_profile(xp.asarray(x), fs)
    assert st.integrated_lufs == pytest.approx(loudness.measure(xp.asarray(x), fs).integrated_lufs, abs=1e-12)
    gain = 7.5
    z = (x * np.float32(10 ** (gain / 20))).astype(np.float32)
    changed = [(0, 300), (int(3.2 * fs), int(3.2 * fs) + 2000), (int(6.1 * fs), int(6.3 * fs)), (x.shape[1] - 500, x.shape[1])]
    for a, b in changed:
        z[:, a:b] *= rng.uniform(0.3, 0.9, (1, b - a)).astype(np.float32)
    for ranges in (changed, []):
        zz = z if ranges else (x * np.float32(10 ** (gain / 20))).astype(np.float32)
        got, _ = loudness.remeasure(prof, xp.asarray(zz), gain, np.array(ranges, dtype=np.int64).reshape(-1, 2))
        ref = loudness.measure(xp.asarray(zz), fs)
        for k in ("integrated_lufs", "momentary_max_lufs", "short_term_max_lufs", "loudness_range_lu"):
            assert getattr(got, k) == pytest.approx(getattr(ref, k), abs=1e-5), k
        np.testing.assert_allclose(got.momentary, ref.momentary, atol=1e-5)
        np.testing.assert_allclose(got.short_term, ref.short_term, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        loudness.remeasure(prof, xp.asarray(z[:, :-1]), gain, np.zeros((0, 2), dtype=np.int64))


def test_k_filter_settles_within_settle_samples():
    import scipy.signal

    for fs in (44100, 48000, 96000):
        k = loudness.settle_samples(fs)
        imp = np.zeros(4 * k)
        imp[0] = 1.0
        h = scipy.signal.sosfilt(loudness.k_weighting_sos(fs), imp)
        assert np.abs(h[k:]).max() < 1e-12 * np.abs(h).max()
        assert k < 0.3 * fs  # the 38 Hz high-pass settles in well under a second


def test_cli_loudness_json_contract(tmp_path, capsys):
    fs = 48000
    good = tmp_path / "tone.wav"
    sf.write(good, sine(1000.0, -23.0, 6.0, fs=fs).T, fs, subtype="PCM_24")
    quiet = tmp_path / "silence.flac"
    sf.write(quiet, np.zeros((fs * 2, 2)), fs)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rc = cli.main(["loudness", str(good), str(broken), str(quiet), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1  # one file could not be read
    assert [r["path"] for r in out] == [str(good), str(broken), str(quiet)]
    keys = {"path", "integrated_lufs", "loudness_range_lu", "true_peak_dbtp", "sample_peak_dbfs", "momentary_max_lufs",
            "short_term_max_lufs", "duration_s", "sample_rate", "channels"}  # fmt: skip
    assert set(out[0]) == keys
    assert out[0]["integrated_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert out[0]["true_peak_dbtp"] == pytest.approx(-23.0, abs=0.2)
    assert out[0]["sample_rate"] == fs and out[0]["channels"] == 2 and out[0]["duration_s"] == pytest.approx(6.0)
    assert set(out[1]) == {"path", "error"} and "cannot read" in out[1]["error"]
    assert out[2]["integrated_lufs"] is None and out[2]["true_peak_dbtp"] is None


def test_cli_loudness_table(tmp_path, capsys):
    f = tmp_path / "a.wav"
    sf.write(f, sine(1000.0, -20.0, 3.0).T, 48000)
    assert cli.main(["loudness", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "integrated" in text and "a.wav" in text and "-20.0" in text


def _full_true_peak(x: np.ndarray, ratio: int = 4, kind: str = "kaiser") -> np.ndarray:
    """Reference: every interpolated point of every channel, float64, no pruning."""
    x = np.asarray(x, dtype=np.float64)
    h = truepeak.interpolation_filter(ratio, kind)
    full = np.abs(truepeak._phase_outputs(x, h, np.arange(x.shape[1]), np)).max(axis=(1, 2))
    return np.maximum(full, np.abs(x).max(axis=1))


@pytest.mark.parametrize("n", [1, 5, 11, 12, 13, 23, 24, 25, 37, 100, 1001])
@pytest.mark.parametrize("ratio,kind", [(4, "kaiser"), (2, "kaiser"), (16, "kaiser"), (4, "annex")])
def test_true_peak_block_path_is_exact_per_channel_at_any_length(n, ratio, kind):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n)) * np.array([[1.0], [0.05], [0.3]])
    np.testing.assert_allclose(truepeak.true_peak(x, 48000, oversample=ratio, filter=kind), _full_true_peak(x, ratio, kind), rtol=1e-12)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 8, 12, 16, 20, 24])
def test_row_absmax_is_the_largest_magnitude_of_each_row(xp, width):
    """The block screen's row maxima (groups of four first where the width allows) are
    exactly max |row|, wherever in the row the largest magnitude sits and whatever its sign."""
    rng = np.random.default_rng(width)
    rows = rng.standard_normal((257, width)).astype(np.float32)
    at = rng.integers(0, width, 257)
    rows[np.arange(257), at] = rng.choice([-5.0, 5.0], 257) * rng.uniform(1.0, 2.0, 257)
    got = backend.to_host(truepeak._row_absmax(xp.asarray(rows), xp))
    np.testing.assert_array_equal(got, np.abs(rows).max(axis=1))


def test_true_peak_each_channel_its_own_floor():
    # A quiet channel with its own intersample peak where the loud channel is silent.
    n = np.arange(48000)
    x = np.zeros((2, n.size))
    x[0, :24000] = 0.9 * np.sin(2 * np.pi * n[:24000] / 4 + np.pi / 4)
    x[1, 30000:] = 0.1 * np.sin(2 * np.pi * n[30000:] / 4 + np.pi / 4)
    np.testing.assert_allclose(truepeak.true_peak(x, 48000), _full_true_peak(x), rtol=1e-12)


def test_true_peak_float32_input_within_float32_rounding(xp):
    x32 = np.clip(synth_music(3.0, 48000, seed=5) * 2.5, -1, 1).astype(np.float32)  # dense, loud: every block is evaluated
    tp = backend.to_host(truepeak.true_peak(backend.to_device(x32, xp), 48000))
    np.testing.assert_allclose(tp, _full_true_peak(x32), rtol=2e-6)
    assert np.all(tp >= np.abs(x32).max(axis=1))


def test_window_energies_match_a_plain_prefix_sum():
    import scipy.signal

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 30011)) * 0.1
    y = scipy.signal.sosfilt(loudness.k_weighting_sos(44100), x, axis=-1)
    prefix = np.concatenate([[0.0], np.cumsum((y * y).sum(axis=0))])
    starts = np.concatenate([rng.integers(0, 30011 - 500, 200), [0, 30011 - 700]])
    lengths = np.concatenate([rng.integers(1, 500, 200), [30011, 700]])  # includes windows ending at n
    ref = (prefix[starts + lengths] - prefix[starts]) / lengths
    for chunk in (1 << 22, 4096, 997):
        z = loudness.window_energies(x, 44100, starts, lengths, chunk=chunk)
        np.testing.assert_allclose(z, ref, rtol=1e-9)


def test_nan_in_the_last_sample_is_still_named():
    x = sine(1000.0, -20.0, 2.0)
    x[0, -1] = np.nan
    with pytest.raises(ValueError, match=f"1 non-finite.*sample {x.shape[1] - 1}"):
        loudness.measure(x, 48000)


def _installed_music(limit: int = 3) -> list[str]:
    """Real mastered music from Debian's game-soundtrack packages, where installed."""
    import glob
    import os

    files = sorted(f for f in glob.glob("/usr/share/**/*.ogg", recursive=True) if os.path.getsize(f) >= 500_000)
    return files[:limit]


@pytest.mark.parametrize("path", _installed_music() or [None])
def test_integrated_agrees_with_pyloudnorm_deman_on_real_music(path):
    # Tests build their own signals; this one also checks real recordings when the machine has
    # some (apt-get install hyperrogue-music fb-music-high nexuiz-music), and skips otherwise.
    if path is None:
        pytest.skip("no real music installed under /usr/share")
    from acetate.pipeline.io import audio

    x, fs = audio.decode(path)
    hop = int(round(0.1 * fs))
    x = x[:, : (x.shape[1] // hop) * hop]  # whole 100 ms hops: pyloudnorm counts a partial last block
    ours = loudness.integrated_loudness(x, fs)
    ref = pyloudnorm.Meter(fs, filter_class="DeMan").integrated_loudness(x.T.astype(np.float64))
    assert ours == pytest.approx(ref, abs=0.01)


def test_stereo_k_filter_as_one_complex_signal_is_bit_identical():
    """On a CPU a stereo chunk is K-filtered as L + iR (real sections): the outputs and the
    weighted power equal filtering each channel on its own, bit for bit, state carried."""
    import scipy.signal

    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 30000)).astype(np.float32)
    sos = loudness.k_weighting_sos(44100)
    gw = np.array([1.0, 1.0])
    zi, parts = None, []
    for a in range(0, x.shape[1], 7000):  # chunks, the state carried between them
        y, zi = loudness._kfilter(scipy.signal, sos, x[:, a : a + 7000], zi, False, np)
        assert y.dtype == np.complex128 and y.shape == (1, min(7000, x.shape[1] - a))
        parts.append(loudness._weighted_power(y, gw, np))
    ref = np.stack([scipy.signal.sosfilt(sos, x[c].astype(np.float64)) for c in range(2)])
    np.testing.assert_array_equal(np.concatenate(parts), ref[0] ** 2 + ref[1] ** 2)
