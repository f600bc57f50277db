"""Fingerprint stage and the features schema."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import pink_noise, silence, sine

from acetate.kernels import backend
from acetate.pipeline.chain import analyse
from acetate.schemas import features as fschema

FS = 48000
# Precomputed meter values: keep most tests independent of (and faster than) the meter.
LOUD = {
    "integrated_lufs": -20.0,
    "momentary_max_lufs": -18.0,
    "short_term_max_lufs": -19.0,
    "loudness_range_lu": 3.0,
    "true_peak_dbtp": -1.0,
}


def _fp(x: np.ndarray, xp, fs: int = FS, **kw) -> dict[str, float]:
    kw.setdefault("loudness", LOUD)
    return analyse.fingerprint(backend.to_device(x, xp, dtype="float32"), fs, **kw)


# ---------------------------------------------------------------- names / vector


def test_feature_names_are_stable_and_unique():
    names = analyse.FEATURE_NAMES
    assert names is fschema.FEATURE_NAMES  # one source of truth
    assert len(names) == len(set(names)) == 115
    for n in (
        "ltas_mid_1000hz_db",
        "ltas_side_31p5hz_db",
        "ltas_mid_20000hz_db",
        "dynamics_16000hz_db",
        "correlation_overall",
        "correlation_1000hz",
        "width_overall_db",
        "width_63hz_db",
        "spectral_tilt_db_per_oct",
        "plr_db",
        "crest_factor_db",
        "clip_run_count",
        "leading_silence_s",
        "dc_offset_right",
        "sample_rate",
        "channels",
        "true_peak_dbtp",
    ):
        assert n in names, n
    assert set(fschema.FEATURE_UNITS) == set(names)


def test_fingerprint_keys_and_vector(xp):
    fp = _fp(pink_noise(2.0), xp)
    assert list(fp) == list(analyse.FEATURE_NAMES)
    assert all(isinstance(v, float) for v in fp.values())
    v = analyse.feature_vector(fp)
    assert v.shape == (len(analyse.FEATURE_NAMES),) and v.dtype == np.float64
    assert v[analyse.FEATURE_NAMES.index("sample_rate")] == FS
    assert np.isfinite(v).all()  # broadband stereo noise at 48 kHz: everything defined
    with pytest.raises(KeyError, match="duration_s"):
        analyse.feature_vector({k: val for k, val in fp.items() if k != "duration_s"})


# ---------------------------------------------------------------- spectral features


def test_sine_fingerprint(xp):
    fp = _fp(sine(1000.0, -6.0, 2.0), xp)
    assert fp["ltas_mid_1000hz_db"] == pytest.approx(0.0, abs=0.01)  # all energy in one band, all of it mid
    assert fp["ltas_mid_500hz_db"] < -60 and fp["ltas_mid_2000hz_db"] < -60
    assert fp["ltas_side_1000hz_db"] == analyse.LEVEL_FLOOR_DB
    assert fp["spectral_centroid_hz"] == pytest.approx(1000.0, rel=0.005)
    assert abs(fp["spectral_rolloff_hz"] - 1000.0) < 25.0
    assert fp["spectral_flatness"] < 1e-3
    assert fp["correlation_overall"] == pytest.approx(1.0, abs=1e-6)
    assert fp["width_overall_db"] == -120.0 and fp["width_1000hz_db"] == -120.0
    assert fp["crest_factor_db"] == pytest.approx(3.01, abs=0.02)
    assert fp["sample_peak_dbfs"] == pytest.approx(-6.0, abs=0.01)
    assert fp["dynamics_1000hz_db"] < 0.1
    assert fp["duration_s"] == 2.0 and fp["channels"] == 2.0


def test_noise_tilt_and_flatness(xp):
    white = 0.1 * np.random.default_rng(1).standard_normal((2, 3 * FS))
    fw = _fp(white, xp)
    fpink = _fp(pink_noise(3.0), xp)
    assert fw["spectral_tilt_db_per_oct"] == pytest.approx(3.01, abs=0.25)
    assert abs(fpink["spectral_tilt_db_per_oct"]) < 0.25
    assert fw["spectral_flatness"] > 0.95 and fpink["spectral_flatness"] < 0.5
    # independent channels: side as strong as mid in every band, correlation ~ 0
    assert abs(fw["correlation_overall"]) < 0.05 and abs(fw["width_overall_db"]) < 0.3
    assert abs(fw["ltas_mid_1000hz_db"] - fw["ltas_side_1000hz_db"]) < 0.5


def test_fixed_length_at_22050_with_nan_above_nyquist(xp):
    fs = 22050
    x = 0.1 * np.random.default_rng(2).standard_normal((2, 2 * fs))
    fp = _fp(x, xp, fs=fs)
    v = analyse.feature_vector(fp)
    assert v.shape == (len(analyse.FEATURE_NAMES),)
    for band in ("12500", "16000", "20000"):
        assert math.isnan(fp[f"ltas_mid_{band}hz_db"]) and math.isnan(fp[f"ltas_side_{band}hz_db"])
    assert math.isnan(fp["dynamics_16000hz_db"]) and math.isnan(fp["correlation_16000hz"])
    assert math.isnan(fp["width_16000hz_db"])
    assert np.isfinite(fp["ltas_mid_10000hz_db"]) and np.isfinite(fp["correlation_8000hz"])
    assert fp["sample_rate"] == 22050.0


def test_band_dynamics_feature(xp):
    base = sine(1000.0, -10.0, 4.0)
    gain = np.repeat(10 ** (np.array([0, -20, 0, -20]) / 20), FS)[None, :]
    assert _fp(base * gain, xp)["dynamics_1000hz_db"] == pytest.approx(20.0, abs=0.5)


# ---------------------------------------------------------------- stereo


def test_opposite_polarity(xp):
    n = 0.1 * np.random.default_rng(3).standard_normal((1, FS))
    fp = _fp(np.vstack([n, -n]), xp)
    assert fp["correlation_overall"] == pytest.approx(-1.0, abs=1e-6)
    assert fp["width_overall_db"] == 120.0
    assert fp["ltas_mid_1000hz_db"] == analyse.LEVEL_FLOOR_DB


def test_mono_is_dual_mono(xp):
    x = sine(440.0, -12.0, 1.0, channels=1) + 0.01
    fp = _fp(x, xp)
    assert fp["channels"] == 1.0
    assert fp["correlation_overall"] == pytest.approx(1.0, abs=1e-6)
    assert fp["width_overall_db"] == -120.0
    assert fp["dc_offset_left"] == pytest.approx(0.01, abs=1e-4) and fp["dc_offset_right"] == fp["dc_offset_left"]
    assert fp["ltas_side_500hz_db"] == analyse.LEVEL_FLOOR_DB


# ---------------------------------------------------------------- time-domain features


def test_dc_offset_per_channel(xp):
    x = sine(100.0, -20.0, 1.0)
    x[0] += 0.02
    x[1] -= 0.005
    fp = _fp(x, xp)
    assert fp["dc_offset_left"] == pytest.approx(0.02, abs=1e-5)
    assert fp["dc_offset_right"] == pytest.approx(-0.005, abs=1e-5)


def test_clip_runs_in_a_clipped_sine(xp):
    x = np.clip(sine(100.0, 6.0, 1.0), -1.0, 1.0)  # 2x full scale, hard clipped
    # independent count: runs of >= 3 samples at |x| >= 0.999 in each channel
    expected_runs = expected_samples = 0
    for ch in x:
        hot = np.abs(ch.astype(np.float32)) >= 0.999
        idx = np.flatnonzero(np.diff(np.concatenate([[0], hot.astype(int), [0]])))
        lengths = idx[1::2] - idx[::2]
        expected_runs += int((lengths >= 3).sum())
        expected_samples += int(lengths[lengths >= 3].sum())
    assert expected_runs == 2 * 100 * 2  # two flat tops per period, 100 periods, 2 channels
    fp = _fp(x, xp)
    assert fp["clip_run_count"] == expected_runs
    assert fp["clip_run_samples"] == expected_samples


def test_short_peaks_are_not_clip_runs(xp):
    x = sine(1000.0, -1.0, 0.5)
    x[:, 100:102] = 1.0  # a run of 2: too short
    x[:, 200] = -1.0
    assert _fp(x, xp)["clip_run_count"] == 0
    x[0, 300:303] = -1.0  # a run of 3 in one channel
    fp = _fp(x, xp)
    assert fp["clip_run_count"] == 1 and fp["clip_run_samples"] == 3


def test_runs_do_not_span_channels(xp):
    x = np.zeros((2, 1000))
    x[0, -2:] = 1.0
    x[1, :2] = 1.0  # would form a run of 4 if channels were joined
    assert analyse.clip_runs(backend.to_device(x, xp)) == (0, 0)


@pytest.mark.parametrize("lead_s,tail_s", [(0.0, 0.0), (0.3, 2.7), (3.2, 0.0), (2.0, 5.5)])
def test_silence_bounds_scan_from_each_end(xp, lead_s, tail_s):
    """The bounds are read a second at a time from each end: the first and last sample above
    the threshold in any channel, exactly, for silence shorter and longer than a stretch,
    a single loud sample in one channel at either edge, and nothing but one loud sample."""
    fs = 1000
    n = 9000
    x = np.zeros((2, n), np.float32)
    a, b = int(lead_s * fs), n - int(tail_s * fs)
    x[0, a] = 0.01  # one sample, one channel, at each edge (-40 dBFS: above the threshold)
    x[1, b - 1] = -0.01
    x[:, a + 10 : b - 10] = 1e-7  # below the threshold: silence
    got = analyse.silence_bounds(backend.to_device(x, xp), fs)
    assert got == (a / fs, (n - b) / fs)
    one = np.zeros((2, n), np.float32)
    one[1, 4321] = 0.5
    assert analyse.silence_bounds(backend.to_device(one, xp), fs) == (4.321, (n - 4322) / fs)


def test_leading_and_trailing_silence(xp):
    tone = sine(1000.0, -20.0, 1.0, phase_deg=90.0)  # starts and ends well above -60 dBFS
    x = np.concatenate([silence(0.5), tone, silence(0.25)], axis=1)
    x[:, : int(0.5 * FS)] += 10 ** (-70 / 20)  # a -70 dBFS hiss counts as silence
    fp = _fp(x, xp)
    assert fp["leading_silence_s"] == pytest.approx(0.5, abs=2 / FS)
    assert fp["trailing_silence_s"] == pytest.approx(0.25, abs=2e-3)
    assert fp["duration_s"] == pytest.approx(1.75)


def test_digital_silence(xp):
    fp = _fp(silence(1.0), xp, loudness=None)
    assert fp["leading_silence_s"] == 1.0 and fp["trailing_silence_s"] == 1.0
    for k in (
        "integrated_lufs",
        "true_peak_dbtp",
        "sample_peak_dbfs",
        "plr_db",
        "crest_factor_db",
        "spectral_centroid_hz",
        "ltas_mid_1000hz_db",
        "correlation_overall",
        "width_overall_db",
    ):
        assert math.isnan(fp[k]), k


# ---------------------------------------------------------------- loudness wiring


def test_precomputed_loudness_and_plr(xp):
    fp = _fp(sine(1000.0, -3.0, 1.0), xp)
    for k, v in LOUD.items():
        assert fp[k] == v
    assert fp["plr_db"] == pytest.approx(-1.0 - -20.0)
    assert fp["sample_peak_dbfs"] == pytest.approx(-3.0, abs=0.01)  # measured: not in LOUD


def test_unknown_loudness_key_is_named():
    with pytest.raises(ValueError, match="lufs_integrated"):
        analyse.fingerprint(np.zeros((2, 100), np.float32), FS, loudness={"lufs_integrated": -14.0})


def test_meter_is_wired_in(xp):
    fp = _fp(sine(1000.0, -23.0, 5.0), xp, loudness=None)
    assert fp["integrated_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert fp["momentary_max_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert fp["short_term_max_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert fp["loudness_range_lu"] == pytest.approx(0.0, abs=0.1)
    assert fp["true_peak_dbtp"] == pytest.approx(-23.0, abs=0.1)
    assert fp["plr_db"] == pytest.approx(0.0, abs=0.2)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "x, fs, match",
    [
        (np.zeros((2, 2, 10), np.float32), FS, "shape"),
        (np.zeros((2, 0), np.float32), FS, "shape"),
        (np.array([[0.0, np.nan, 0.1]], np.float32), FS, "non-finite"),
        (np.zeros((2, 100), np.float32), 0, "fs"),
        (np.zeros((2, 100), np.float32), 44100.5, "fs"),
    ],
)
def test_bad_input_is_named(x, fs, match):
    with pytest.raises(ValueError, match=match):
        analyse.fingerprint(x, fs, loudness=LOUD)


def test_parity_with_numpy(xp):
    x = pink_noise(1.5, seed=9)
    x[1] *= 0.5
    ref = analyse.feature_vector(_fp(x, np))
    got = analyse.feature_vector(_fp(x, xp))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- file + schema


def test_analyze_file(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, sine(1000.0, -6.0, 1.0).T, FS, subtype="PCM_24")
    row = analyse.analyze_file(path, loudness=LOUD)
    assert row["path"] == str(path)
    assert row["sample_rate"] == FS and row["channels"] == 2 and row["duration_s"] == 1.0
    assert row["spectral_centroid_hz"] == pytest.approx(1000.0, rel=0.01)
    table = fschema.features_table([row])
    assert table.num_rows == 1 and table.column("sample_rate").to_pylist() == [FS]


def test_schema_layout_and_metadata():
    s = fschema.FEATURES_SCHEMA
    assert s.names == ["path", "track_id", "error", *fschema.FEATURE_NAMES]
    assert s.metadata[b"acetate.schema"] == b"features"
    assert s.metadata[b"acetate.schema_version"] == fschema.SCHEMA_VERSION.encode() == b"1.0"
    assert s.field("path").type == pa.string() and not s.field("path").nullable
    assert s.field("track_id").nullable and s.field("error").nullable
    assert s.field("sample_rate").type == pa.int64() and s.field("channels").type == pa.int64()
    assert s.field("ltas_mid_1000hz_db").type == pa.float64()
    assert s.field("spectral_centroid_hz").metadata[b"unit"] == b"Hz"


def test_features_table_rows(tmp_path):
    fp = analyse.fingerprint(pink_noise(1.0).astype(np.float32), FS, loudness=LOUD)
    fp["ltas_mid_20000hz_db"] = float("nan")
    rows = [{"path": "a.flac", "track_id": "T1", **fp}, {"path": "b.flac", "error": "cannot read b.flac"}]
    t = fschema.features_table(rows)
    assert t.schema.equals(fschema.FEATURES_SCHEMA, check_metadata=True)
    assert t.column("error").to_pylist() == [None, "cannot read b.flac"]
    assert t.column("integrated_lufs").to_pylist() == [-20.0, None]  # missing -> null
    assert math.isnan(t.column("ltas_mid_20000hz_db")[0].as_py())  # NaN stays NaN, not null
    pq.write_table(t, tmp_path / "f.parquet")
    back = pq.read_table(tmp_path / "f.parquet")
    assert back.schema.metadata[b"acetate.schema_version"] == b"1.0"
    assert back.column("channels").to_pylist() == [2, None]


@pytest.mark.parametrize(
    "row, match",
    [
        ({"path": "a", "loudness_lufs": -14.0}, "loudness_lufs"),
        ({"track_id": "x"}, "path"),
        ({"path": "a", "sample_rate": 44100.5}, "sample_rate"),
        ({"path": "a", "spectral_flatness": "high"}, "spectral_flatness"),
        ({"path": 3}, "path"),
    ],
)
def test_features_table_rejects_bad_rows(row, match):
    with pytest.raises(ValueError, match=match):
        fschema.features_table([row])
