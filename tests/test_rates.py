"""Every sample rate the README promises (8-192 kHz) masters to the target under the ceiling.

A preset's crossovers are fixed in hertz (120 Hz, 1 kHz, 6 kHz); at 8, 11.025 and 12 kHz
the 6 kHz edge lies at or above Nyquist, so the plan drops it (the band above merges into
the band below) and says so. The analysis's 1/3-octave bands above Nyquist are NaN and
selection compares a track on the features it has.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from acetate.kernels import fir, loudness, truepeak
from acetate.pipeline import mastering
from acetate.pipeline.catalogue import demo
from acetate.pipeline.chain import analyse, presets, render
from acetate.pipeline.chain.presets import BALANCED, Preset

#: The rates the README names, 8 kHz .. 192 kHz.
RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 176400, 192000)
TARGET, CEILING = -14.0, -1.0
DEFAULT_EDGES = [120.0, 1000.0, 6000.0]


def _mix(fs: int, seconds: float = 4.0, seed: int = 14) -> np.ndarray:
    """A short stereo mix at ``fs``: pink noise (partly correlated), bass and mid tones, a
    kick every 0.5 s (the limiter has peaks to catch at -14 LUFS), a decaying tone at
    0.43 fs (intersample peaks near Nyquist) and 6 dB of slow level variation."""
    rng = np.random.default_rng([seed, fs])
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    spec = rng.standard_normal((2, n // 2 + 1)) + 1j * rng.standard_normal((2, n // 2 + 1))
    f = np.fft.rfftfreq(n, 1 / fs)
    spec[:, 0] = 0.0
    spec[:, 1:] /= np.sqrt(f[1:])
    pink = np.fft.irfft(spec, n=n, axis=-1)
    pink /= np.sqrt(np.mean(pink**2))
    pink[1] = 0.7 * pink[1] + 0.3 * pink[0]
    beat = t % 0.5
    kick = np.exp(-beat * 30.0) * np.sin(2 * np.pi * (50.0 + 80.0 * np.exp(-beat * 40.0)) * beat)
    tones = sum(a * np.sin(2 * np.pi * fr * t + ph) for fr, a, ph in ((55.0, 0.25, 0.0), (440.0, 0.12, 1.0), (1250.0, 0.06, 2.0)))
    top = 0.04 * np.sin(2 * np.pi * 0.43 * fs * t) * np.exp(-(t % 1.0) * 6.0)
    swell = 10 ** ((-6.0 + 6.0 * np.sin(2 * np.pi * t / seconds) ** 2) / 20)
    x = swell * (0.08 * pink + tones) + 0.6 * kick + top
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _expected_edges(fs: int) -> list[float]:
    return [e for e in DEFAULT_EDGES if e < fir.MAX_CROSSOVER_FRACTION * fs]


# --- the crossover plan ------------------------------------------------------------------


def test_crossover_plan_at_8k_keeps_only_valid_edges():
    plan = fir.crossover_plan(8000, DEFAULT_EDGES)
    assert plan.edges_hz == (120.0, 1000.0)
    assert plan.sources == (0, 1, 2)  # the 1-6 kHz band stands for 1 kHz .. Nyquist
    assert [e for e, _ in plan.dropped] == [6000.0] and "0.4 fs" in plan.dropped[0][1]
    assert all(e < 0.4 * 8000 for e in plan.edges_hz)
    # the kept edges make a valid, complementary crossover: bands sum to a delay and each reaches unity
    h = fir.crossover_filters(8000, plan.edges_hz)
    assert h.shape == (3, plan.n_taps)
    total = h.sum(axis=0)
    assert abs(total[(plan.n_taps - 1) // 2] - 1.0) < 1e-12 and np.abs(np.delete(total, (plan.n_taps - 1) // 2)).max() < 1e-12
    mags = np.abs(np.fft.rfft(h, 1 << 16, axis=-1))
    assert np.all(mags.max(axis=-1) > 0.99)
    # the requested 6 kHz edge is refused by the filter design itself
    with pytest.raises(ValueError, match="fs/2"):
        fir.crossover_filters(8000, DEFAULT_EDGES)


@pytest.mark.parametrize("fs", RATES + (12000,))
def test_crossover_plan_at_every_rate(fs):
    plan = fir.crossover_plan(fs, DEFAULT_EDGES)
    assert list(plan.edges_hz) == _expected_edges(fs)
    assert len(plan.sources) == len(plan.edges_hz) + 1
    # the filter length is the same 50 ms at every rate (9601 taps at 192 kHz, 401 at 8 kHz)
    assert plan.n_taps == (int(round(6 * fs / 120.0)) | 1)
    if fs >= 16000:
        assert plan.dropped == () and plan.n_taps == fir.crossover_filters(fs, DEFAULT_EDGES).shape[1]


def test_crossover_plan_drops_edges_too_close_to_separate_and_may_keep_none():
    plan = fir.crossover_plan(48000, (120.0, 150.0, 1000.0))  # 30 Hz apart: inside the 66 Hz transition
    assert plan.edges_hz == (120.0, 1000.0) and plan.sources == (0, 1, 3)
    assert plan.dropped[0][0] == 150.0 and "transition" in plan.dropped[0][1]
    none = fir.crossover_plan(8000, (3500.0,))
    assert none.edges_hz == () and none.sources == (0,)
    np.testing.assert_array_equal(fir.crossover_filters(8000, none.edges_hz), [[1.0]])  # one full band: the identity
    with pytest.raises(ValueError, match="increasing"):
        fir.crossover_plan(48000, (1000.0, 120.0))


def test_preset_at_rate_merges_the_band_above_into_the_band_below():
    p8, plan = BALANCED.at_rate(8000)
    assert p8.crossovers_hz == (120.0, 1000.0)
    for name in Preset.BAND_FIELDS:
        assert getattr(p8, name) == getattr(BALANCED, name)[:3], name  # the top band's values go, the lower band's stay
    assert p8.target_mid_db == BALANCED.target_mid_db and plan.dropped
    assert BALANCED.at_rate(16000)[0] is BALANCED and BALANCED.at_rate(44100)[0] is BALANCED


# --- analysis and selection ---------------------------------------------------------------


@pytest.mark.parametrize("fs", (8000, 11025, 12000))
def test_low_rate_fingerprint_is_nan_above_nyquist_and_selection_works(fs):
    x = demo.render_style("spoken", 4.0, fs, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from any module on empty bands
        fp = analyse.fingerprint(x, fs)
        sel = presets.load_bank(None).select(fp)
    assert list(fp) == list(analyse.FEATURE_NAMES)
    nyq = fs / 2
    for lab, fc in zip(presets._LABELS3, presets.BAND_CENTRES_HZ):
        for kind in ("mid", "side"):
            v = fp[f"ltas_{kind}_{lab}hz_db"]
            assert math.isnan(v) if fc >= nyq else math.isfinite(v), (kind, fc)
    # selection skips the bands above Nyquist and the one reaching past 0.45 fs, for every preset alike
    v = presets.selection_vector(fp)
    used = [k for k, a in zip(presets.SELECTION_FEATURES, v) if math.isfinite(a)]
    assert sel.n_features == len(used) < len(presets.SELECTION_FEATURES)
    assert all(presets._band_upper_hz()[k[len("ltas_mid_") : -len("hz_db")]] <= 0.45 * fs for k in used if k.startswith("ltas_"))
    assert math.isfinite(sel.distance)
    # speech is speech at any rate: the same style as at 48 kHz
    assert (
        sel.preset.name
        == presets.load_bank(None).select(analyse.fingerprint(demo.render_style("spoken", 4.0, 48000, seed=1), 48000)).preset.name
    )


# --- the real path: file in, master out, decoded and measured ------------------------------


@pytest.mark.parametrize("fs", RATES)
def test_every_rate_masters_to_the_target_under_the_ceiling(tmp_path, fs):
    x = _mix(fs)
    src = tmp_path / f"mix_{fs}.wav"
    sf.write(src, x.T, fs, subtype="PCM_24")
    out = tmp_path / "out"
    out.mkdir()
    row = mastering.master_file(str(src), out, render.MasterSettings(target_lufs=TARGET, ceiling_dbtp=CEILING), formats=("wav24",))
    assert "error" not in row, row
    assert row["target_met"] is True and row["ceiling_met"] is True
    assert row["params"]["loudness"]["limiter_reduction_db"] > 0.5  # the limiter had peaks to hold
    (o,) = row["outputs"]
    # the delivered file, decoded independently and measured by two meters
    y, yfs = sf.read(o["path"], dtype="float64", always_2d=True)
    assert yfs == fs and y.shape == (x.shape[1], 2)
    assert loudness.integrated_loudness(y.T, fs) == pytest.approx(TARGET, abs=render.TARGET_TOLERANCE_LU)
    assert pyloudnorm.Meter(fs, filter_class="DeMan").integrated_loudness(y) == pytest.approx(TARGET, abs=render.TARGET_TOLERANCE_LU)
    assert float(truepeak.to_db(truepeak.true_peak(y.T, fs, oversample=16).max())) <= CEILING
    assert o["true_peak_dbtp"] <= CEILING
    # the plan records the bands it used, and why one went
    edges = _expected_edges(fs)
    assert row["params"]["crossovers_hz"] == edges
    assert len(row["params"]["dynamics"]) == len(edges) + 1 and len(row["params"]["width"]) == len(edges) + 1
    dropped = [n for n in row["notes"] if "crossover dropped" in n]
    if fs < 16000:
        assert row["params"]["crossovers_dropped"][0]["hz"] == 6000.0
        assert dropped and "6000 Hz" in dropped[0] and f"{fs} Hz" in dropped[0]
    else:
        assert "crossovers_dropped" not in row["params"] and not dropped


def test_12k_and_mono_8k_speech_master(tmp_path):
    """12 kHz (6 kHz is its Nyquist) and the telephone-archive case: mono 16-bit speech at 8 kHz."""
    out = tmp_path / "out"
    out.mkdir()
    sf.write(tmp_path / "mix12k.wav", _mix(12000).T, 12000, subtype="PCM_24")
    sf.write(tmp_path / "voice8k.wav", demo.render_style("spoken", 4.0, 8000, seed=2)[0], 8000, subtype="PCM_16")
    for name, fs, target in (("mix12k", 12000, TARGET), ("voice8k", 8000, -16.0)):
        row = mastering.master_file(str(tmp_path / f"{name}.wav"), out, render.MasterSettings(target_lufs=target, ceiling_dbtp=CEILING))
        assert "error" not in row, row
        y, yfs = sf.read(row["outputs"][0]["path"], dtype="float64", always_2d=True)
        assert yfs == fs and y.shape[1] == 2
        assert pyloudnorm.Meter(fs, filter_class="DeMan").integrated_loudness(y) == pytest.approx(target, abs=0.1)
        assert float(truepeak.to_db(truepeak.true_peak(y.T, fs, oversample=16).max())) <= CEILING
        assert row["params"]["crossovers_hz"] == [120.0, 1000.0]
        assert any("6000 Hz crossover dropped" in n for n in row["notes"])


def test_delivery_at_8k_from_a_48k_source(tmp_path):
    """``--rate 8000``: resampled first, then planned (and noted) for the delivery rate."""
    sf.write(tmp_path / "mix.wav", _mix(48000, 3.0).T, 48000, subtype="PCM_24")
    out = tmp_path / "out"
    out.mkdir()
    row = mastering.master_file(
        str(tmp_path / "mix.wav"), out, render.MasterSettings(target_lufs=TARGET, ceiling_dbtp=CEILING, output_rate=8000)
    )
    assert "error" not in row, row
    y, yfs = sf.read(row["outputs"][0]["path"], dtype="float64", always_2d=True)
    assert yfs == 8000 and y.shape[0] == 3 * 8000
    assert loudness.integrated_loudness(y.T, 8000) == pytest.approx(TARGET, abs=0.1)
    assert float(truepeak.to_db(truepeak.true_peak(y.T, 8000, oversample=16).max())) <= CEILING
    assert row["params"]["crossovers_hz"] == [120.0, 1000.0]
    assert row["notes"][0].startswith("resampled 48000 Hz -> 8000 Hz") and any(
        "6000 Hz crossover dropped at 8000 Hz" in n for n in row["notes"]
    )


def test_a_preset_whose_bands_all_fall_away_masters_as_one_band():
    """A (learned, say) preset with one 3.5 kHz edge at 8 kHz: no crossover is left, the chain
    runs one full band with the low band's dynamics."""
    fs = 8000
    p = Preset(
        name="one_edge",
        crossovers_hz=(3500.0,),
        threshold_rel_db=(2.0, 4.0),
        ratio=(3.0, 1.5),
        knee_db=(6.0, 6.0),
        attack_s=(0.01, 0.004),
        release_s=(0.1, 0.08),
        width=(1.0, 1.2),
    )
    x = _mix(fs)
    r = render.master(
        x, fs, render.MasterSettings(target_lufs=TARGET, ceiling_dbtp=CEILING), preset=p, fingerprint=analyse.fingerprint(x, fs)
    )
    assert r.params["crossovers_hz"] == [] and len(r.params["dynamics"]) == 1 and r.params["dynamics"][0]["ratio"] > 2.0
    assert r.params["width"] == [1.0]
    assert r.target_met and r.ceiling_met
    assert float(truepeak.to_db(truepeak.true_peak(r.audio, fs, oversample=16).max())) <= CEILING
    assert any("3500 Hz crossover dropped" in n for n in r.notes)
