"""The mastering chain: targets and ceilings held (cross-checked by two other meters),
unity transparency, alignment, distortion, determinism, bad input, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pyebur128
import pyloudnorm
import pytest
import soundfile as sf

from acetate.kernels import dither, loudness, truepeak
from acetate.pipeline import cli, mastering
from acetate.pipeline.catalogue import demo
from acetate.pipeline.chain import analyse, deliver, presets, render
from acetate.pipeline.chain.presets import BALANCED
from acetate.pipeline.io import audio

FS = 44100


def ebur128(y: np.ndarray, fs: int) -> tuple[float, float]:
    """Integrated loudness and max true peak (dBTP) by libebur128."""
    c, n = y.shape
    st = pyebur128.R128State(c, fs, pyebur128.MeasurementMode.MODE_I | pyebur128.MeasurementMode.MODE_TRUE_PEAK)
    st.add_frames(np.ascontiguousarray(y.T, dtype=np.float32).reshape(-1), n)
    tp = max(pyebur128.get_true_peak(st, ch) for ch in range(c))
    return pyebur128.get_loudness_global(st), 20 * np.log10(tp)


@pytest.fixture(scope="module")
def mixes():
    return {s: demo.render_style(s, 8.0, FS, seed=1) for s in ("electronic", "acoustic", "rock")}


@pytest.mark.parametrize("style", ["electronic", "acoustic", "rock"])
@pytest.mark.parametrize("target", ["streaming", "ebu-r128"])
def test_master_meets_target_and_ceiling_under_three_meters(mixes, style, target):
    lufs, ceiling = render.TARGETS[target]
    r = render.master(mixes[style], FS, render.MasterSettings(target_lufs=lufs, ceiling_dbtp=ceiling))
    y = r.audio
    assert y.shape == mixes[style].shape and y.dtype == np.float32
    # Our meter: target within 0.1 LU, ceiling at 16x.
    assert r.output_report["integrated_lufs"] == pytest.approx(lufs, abs=0.1)
    assert r.target_met and r.ceiling_met
    assert float(truepeak.to_db(truepeak.true_peak(y, FS, oversample=16).max())) <= ceiling
    # pyloudnorm with the BS.1770 (DeMan) filter, and libebur128.
    assert pyloudnorm.Meter(FS, filter_class="DeMan").integrated_loudness(y.T.astype(np.float64)) == pytest.approx(lufs, abs=0.1)
    i_ebu, tp_ebu = ebur128(y, FS)
    assert i_ebu == pytest.approx(lufs, abs=0.1)
    assert tp_ebu <= ceiling


def test_output_report_is_the_masters_own_measurement(mixes):
    """The report comes from the loudness solve's incremental measurement and the 16x
    check's 4x reading: it must equal measuring the delivered master from scratch."""
    r = render.master(mixes["acoustic"], FS, render.MasterSettings(target_lufs=-11.0, ceiling_dbtp=-1.0))
    assert r.params["loudness"]["limiter_reduction_db"] > 0.5  # limited: the incremental path ran
    fresh = render.meter.loudness_report(r.audio, FS)
    for k in ("integrated_lufs", "momentary_max_lufs", "short_term_max_lufs", "loudness_range_lu", "true_peak_dbtp", "sample_peak_dbfs"):
        assert r.output_report[k] == pytest.approx(fresh[k], abs=1e-4), k
    assert r.output_report["true_peak_dbtp_16x"] == pytest.approx(
        float(truepeak.to_db(truepeak.true_peak(r.audio, FS, oversample=16).max())), abs=1e-6
    )


def test_dc_offset_is_removed(mixes):
    x = (mixes["rock"] + np.float32(0.05)).astype(np.float32)  # a badly biased converter
    r = render.master(x, FS, render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0))
    assert np.abs(r.audio.astype(np.float64).mean(axis=1)).max() < 1e-4
    assert r.target_met and r.ceiling_met


def test_unreachable_target_keeps_the_ceiling_and_says_so(mixes):
    # -5 LUFS under a -3 dBTP ceiling would need far more limiting than a preset allows.
    r = render.master(mixes["acoustic"], FS, render.MasterSettings(target_lufs=-5.0, ceiling_dbtp=-3.0))
    assert r.ceiling_met is True and r.target_met is False
    assert float(truepeak.to_db(truepeak.true_peak(r.audio, FS, oversample=16).max())) <= -3.0
    assert any("not reached" in n for n in r.notes)
    # the limiter went to its allowance and no further
    assert BALANCED.max_limiting_db - 0.5 <= r.params["loudness"]["limiter_reduction_db"] <= BALANCED.max_limiting_db + 0.01


def test_unity_settings_return_the_input(mixes):
    x = mixes["rock"]
    r = render.master(x, FS, render.MasterSettings.unity())
    err = r.audio.astype(np.float64) - x
    assert 20 * np.log10(np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-300) < -100


def log_sweep(f0: float, f1: float, seconds: float, fs: int, dbfs: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(int(seconds * fs)) / fs
    k = np.log(f1 / f0) / seconds
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
    y = 10 ** (dbfs / 20) * np.sin(phase) * fade
    return np.stack([y, y]).astype(np.float32), f0 * np.exp(k * t)


def thd_n_db(y: np.ndarray, f_inst: np.ndarray, fs: int, frame: int = 4096) -> np.ndarray:
    """Per-frame THD+N of a sweep: energy away from the instantaneous frequency over total."""
    mono = y[0].astype(np.float64)
    starts = np.arange(0, mono.size - frame, frame // 2)
    frames = mono[starts[:, None] + np.arange(frame)] * np.hanning(frame)
    p = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    f = np.fft.rfftfreq(frame, 1 / fs)
    fc = f_inst[starts + frame // 2]
    near = np.abs(f[None, :] - fc[:, None]) <= np.maximum(60.0, 0.06 * fc[:, None])  # sweep spread + window
    return 10 * np.log10(np.sum(np.where(near, 0, p), axis=1) / np.sum(p, axis=1))


def test_sweep_through_default_chain_low_distortion_aligned_and_unclipped():
    x, f_inst = log_sweep(40.0, 16000.0, 8.0, FS, -12.0)
    unity = thd_n_db(render.master(x, FS, render.MasterSettings.unity()).audio, f_inst, FS)[4:-4]
    r = render.master(x, FS, render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0))
    y = r.audio
    assert y.shape == x.shape  # length preserved to the sample
    assert np.max(np.abs(y)) < 1.0  # no clipping
    # Alignment: the output's cross-correlation with the input peaks at lag 0.
    a, b = x[0].astype(np.float64), y[0].astype(np.float64)
    lags = np.arange(-64, 65)
    xc = [np.dot(a[64:-64], b[64 + L : b.size - 64 + L]) for L in lags]
    assert lags[int(np.argmax(xc))] == 0
    # THD+N over the sweep's body at the streaming target: at the analysis floor
    # (the unity path's reading, about -57 dB median), i.e. no added distortion.
    t = thd_n_db(y, f_inst, FS)[4:-4]
    assert np.median(t) < np.median(unity) + 0.5 and np.median(t) < -50.0
    # Pushed to -3 LUFS under -1 dBTP the limiter works ~2 dB on a pure tone:
    # still -54 dB median (README documents the figures).
    loud = render.master(x, FS, render.MasterSettings(target_lufs=-3.0, ceiling_dbtp=-1.0))
    t = thd_n_db(loud.audio, f_inst, FS)[4:-4]
    assert loud.ceiling_met and np.median(t) < -50.0 and np.max(t) < -25.0


def test_same_input_gives_identical_bytes(tmp_path, mixes):
    path = tmp_path / "mix.wav"
    sf.write(path, mixes["electronic"].T, FS, subtype="PCM_24")
    settings = render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0)
    rows = [
        mastering.master_file(str(path), tmp_path / f"run{k}", settings, formats=("wav24", "flac16"), preset="balanced") for k in (1, 2)
    ]
    assert all("error" not in r for r in rows), rows
    for fmt in ("wav", "flac"):
        assert (tmp_path / "run1" / f"mix.{fmt}").read_bytes() == (tmp_path / "run2" / f"mix.{fmt}").read_bytes()


def test_master_file_pauses_the_collector_and_restores_it(tmp_path, mixes, monkeypatch):
    """The cyclic GC is off while a track is processed and back on afterwards, also when
    the track fails; a caller that disabled it keeps it disabled."""
    import gc

    seen = []
    real = render.master
    monkeypatch.setattr(render, "master", lambda *a, **k: seen.append(gc.isenabled()) or real(*a, **k))
    path = tmp_path / "mix.wav"
    sf.write(path, mixes["rock"].T, FS, subtype="PCM_24")
    settings = render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0)
    assert gc.isenabled()
    assert "error" not in mastering.master_file(str(path), tmp_path / "out", settings)
    assert seen == [False] and gc.isenabled()
    assert "error" in mastering.master_file(str(tmp_path / "missing.wav"), tmp_path / "out", settings)
    assert gc.isenabled()
    gc.disable()
    try:
        mastering.master_file(str(path), tmp_path / "out2", settings)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_master_file_releases_the_input_before_the_limiter(tmp_path, mixes, monkeypatch):
    """The decoded track is handed over to render.master and freed once the chain has
    run: the limiter phase (the memory peak) holds the chain output and the master, not
    the input too (a whole copy of the track less)."""
    import weakref

    from acetate.kernels import limiter as tp_limiter

    refs, alive = [], []
    decode = audio.decode_programme

    def decoded(path):
        x, fs = decode(path)
        refs.append(weakref.ref(x))
        return x, fs

    limit = tp_limiter.true_peak_limit

    def limiter(*a, **k):
        alive.append(refs[0]() is not None)
        return limit(*a, **k)

    monkeypatch.setattr(audio, "decode_programme", decoded)
    monkeypatch.setattr(render.limiter, "true_peak_limit", limiter)
    path = tmp_path / "mix.wav"
    sf.write(path, mixes["rock"].T, FS, subtype="PCM_24")
    row = mastering.master_file(str(path), tmp_path / "out", render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0))
    assert "error" not in row, row
    assert alive and not any(alive)


def test_16_bit_output_is_dithered_and_keeps_the_ceiling(tmp_path, mixes):
    r = render.master(mixes["acoustic"], FS, render.MasterSettings(target_lufs=-16.0, ceiling_dbtp=-1.0))
    outs = deliver.write_outputs(r, tmp_path / "a", ("wav16",))
    y, fs = sf.read(outs[0]["path"], dtype="int16", always_2d=True)
    assert fs == FS and y.shape[0] == mixes["acoustic"].shape[1]
    assert outs[0]["true_peak_dbtp"] <= -1.0
    # Dither: the 16-bit file differs from plain rounding of the float master.
    rounded = np.round(r.audio.T * 32768).clip(-32768, 32767).astype(np.int16)
    assert np.mean(y != rounded) > 0.3


def test_lossless_files_decode_exactly_and_their_bounds_hold(tmp_path, mixes):
    """WAV/FLAC outputs decode to the written samples bit for bit; the reported true
    peak bounds the file's own 16x reading from above (within 0.002 dB) and the
    reported loudness is the file's; MP3 is measured."""
    r = render.master(mixes["electronic"], FS, render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0))
    outs = deliver.write_outputs(r, tmp_path / "m", ("wav24", "flac16", "mp3"))
    outs += deliver.write_outputs(r, tmp_path / "f", ("wav32f",))
    for out in outs:
        y, fs = sf.read(out["path"], dtype="float32", always_2d=True)
        tp = float(truepeak.to_db(truepeak.true_peak(y.T, fs, oversample=16).max()))
        lufs = loudness.integrated_loudness(y.T, fs)
        if out["format"] == "mp3":
            assert out["verified"] == "measured"
            assert out["true_peak_dbtp"] == pytest.approx(tp, abs=1e-9)
            continue
        assert out["verified"] == "exact"
        slack = 0.002 if out["format"] == "flac16" else 1e-4  # dither: 1.5 LSB x the interpolator's L1 gain
        assert tp <= out["true_peak_dbtp"] <= tp + slack and out["true_peak_dbtp"] <= -1.0
        assert out["integrated_lufs"] == pytest.approx(lufs, abs=0.001)
    wav24, _ = sf.read(outs[0]["path"], dtype="int32", always_2d=True)
    # rounded to nearest (not truncated) 24-bit values of the master
    np.testing.assert_array_equal(wav24.T >> 8, np.round(r.audio.astype(np.float64) * 2**23).astype(np.int32))


def test_a_file_that_does_not_decode_to_the_master_is_an_error(tmp_path, mixes, monkeypatch):
    r = render.master(mixes["rock"], FS, render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0))
    real = render.audio.decode_blocks

    def flipped_lsb(path, at=1000):
        pos = 0
        for blk in real(path, block=4096):  # many blocks: the flip lands in a later one
            if pos <= at < pos + blk.shape[1]:
                blk[1, at - pos] += 2.0**-23  # one sample, one LSB: a corrupt write
            pos += blk.shape[1]
            yield blk

    monkeypatch.setattr(render.audio, "decode_blocks", lambda path: flipped_lsb(path, at=50_000))
    with pytest.raises(render.RenderError, match="does not decode to the samples written"):
        deliver.write_outputs(r, tmp_path / "c", ("flac24",))
    # a file that reads back short (or long) is an error too, not a partial comparison
    monkeypatch.setattr(render.audio, "decode_blocks", lambda path: (b for i, b in enumerate(real(path, block=4096)) if i != 3))
    with pytest.raises(render.RenderError, match="frames"):
        deliver.write_outputs(r, tmp_path / "d", ("wav24",))
    monkeypatch.setattr(render.audio, "decode_blocks", lambda path: (b for k in range(2) for b in real(path)))
    with pytest.raises(render.RenderError, match="more than"):
        deliver.write_outputs(r, tmp_path / "e", ("wav24",))


def _brute_differences(a, b, c, bits):
    q = b if bits is None else dither.quantize(b, bits)
    return float(np.max(np.abs(a - q))), float(np.max(np.abs(a - c)))


@pytest.mark.parametrize("bits", [24, 16, None])
def test_decoded_file_comparison_agrees_with_rounding_the_written_samples(bits):
    """The check of a decoded file against the samples written (in steps, slice by
    slice, in reused buffers) gives the same figures as rounding the written samples
    with dither.quantize: for clean files, a wrong sample, rounding ties (either
    way), saturation and NaN."""
    rng = np.random.default_rng(3)
    n = 70000  # over two of the check's slices
    master = (rng.standard_normal((2, n)) * 0.2).astype(np.float32)
    b = master.copy()
    if bits is not None:  # ties: values exactly half-way between two steps, both ways
        s = 2.0 ** (bits - 1)
        b[0, 10:20] = ((np.arange(10) - 5 + 0.5) / s).astype(np.float32)
        b[1, 33000] = np.float32(1.5)  # saturates one step below full scale (a slice of its own)
    clean = b.copy() if bits is None else dither.quantize(b, bits)
    cases = {"clean": clean, "one step off": clean.copy(), "nan": clean.copy()}
    step = 2.0**-23 if bits is None else 2.0 ** -(bits - 1)
    cases["one step off"][1, 50000] += np.float32(step)
    cases["nan"][0, 40000] = np.nan
    if bits is not None:  # a tie rounded to the other neighbour: half a step from b, yet wrong
        cases["tie the other way"] = clean.copy()
        cases["tie the other way"][0, 15] = 2 * b[0, 15] - clean[0, 15]
    for name, a in cases.items():
        for c in (b, master):  # the master written as is, or a written copy that differs (dither, gain)
            got = deliver._max_abs_differences(a, b, c, bits)
            want = _brute_differences(a.astype(np.float64), b, c.astype(np.float64), bits)
            if name == "nan":
                assert np.isnan(got[0]) and np.isnan(got[1]), (bits, name)
                continue
            assert got == pytest.approx(want, abs=0.0, rel=1e-6), (bits, name)
            assert (got[0] == 0.0) == (name == "clean"), (bits, name)


def test_mp3_decoded_true_peak_is_checked(tmp_path, mixes):
    r = render.master(mixes["rock"], FS, render.MasterSettings(target_lufs=-9.0, ceiling_dbtp=-0.3))
    (out,) = deliver.write_outputs(r, tmp_path / "loud", ("mp3",))
    y, fs = sf.read(out["path"], always_2d=True)
    assert float(truepeak.to_db(truepeak.true_peak(y.T, fs, oversample=16).max())) <= -0.3


def test_resampling_to_a_delivery_rate(mixes):
    r = render.master(mixes["rock"], FS, render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0, output_rate=48000))
    assert r.fs == 48000 and r.audio.shape[1] == round(mixes["rock"].shape[1] * 48000 / FS)
    assert r.output_report["integrated_lufs"] == pytest.approx(-14.0, abs=0.1)


def test_mono_becomes_dual_mono_and_multichannel_is_refused(mixes):
    mono = mixes["rock"][:1]
    r = render.master(mono, FS, render.MasterSettings(target_lufs=-14.0))
    assert r.audio.shape[0] == 2 and np.array_equal(r.audio[0], r.audio[1])
    with pytest.raises(render.RenderError, match="6-channel input.*not|only mono and stereo"):
        render.master(np.zeros((6, FS), np.float32), FS)


@pytest.mark.parametrize(
    "x,match",
    [
        (np.zeros((2, FS * 2), np.float32), "silent"),
        (np.full((2, 1000), 0.1, np.float32), "shorter than one 400 ms"),
    ],
)
def test_bad_programme_is_a_clear_error(x, match):
    with pytest.raises(render.RenderError, match=match):
        render.master(x, FS, render.MasterSettings(target_lufs=-14.0))


def test_eq_curve_moves_toward_target_and_never_boosts_missing_bands():
    from acetate.pipeline.chain.analyse import fingerprint

    # A dull mix: a tone-rich signal low-passed at 3 kHz.
    x = demo.render_style("pop", 6.0, FS, seed=3)
    import scipy.signal

    dull = scipy.signal.sosfiltfilt(scipy.signal.butter(4, 3000, fs=FS, output="sos"), x).astype(np.float32)
    fp = fingerprint(dull, FS)
    gains = render.eq_curve(BALANCED, fp, FS, amount=1.0)
    centres = np.asarray(render.BAND_CENTRES_HZ)
    assert np.all(np.abs(gains) <= BALANCED.eq_max_db + 1e-9)
    assert gains[(centres >= 4000) & (centres <= 8000)].mean() > 1.0  # brighten a dull mix
    assert np.all(gains[centres > 16000] == 0.0)


def test_cli_master_json_contract(tmp_path, capsys, mixes):
    good = tmp_path / "in" / "song.flac"
    good.parent.mkdir()
    sf.write(good, mixes["electronic"].T, FS, subtype="PCM_24")
    (tmp_path / "in" / "broken.wav").write_bytes(b"not audio at all")
    rc = cli.main(
        ["master", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--target", "apple", "--format", "wav24,flac16", "--json"]
    )
    rows = json.loads(capsys.readouterr().out)
    assert rc == 1
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {"song.flac", "broken.wav"}
    ok, bad = by_name["song.flac"], by_name["broken.wav"]
    assert {"path", "outputs", "preset", "input", "output"} <= set(ok)
    assert [o["path"] for o in ok["outputs"]] == [str(tmp_path / "out" / "song.wav"), str(tmp_path / "out" / "song.flac")]
    for key in ("integrated_lufs", "true_peak_dbtp", "loudness_range_lu"):
        assert key in ok["input"] and key in ok["output"]
    assert ok["output"]["integrated_lufs"] == pytest.approx(-16.0, abs=0.1)
    assert all(o["true_peak_dbtp"] <= -1.0 for o in ok["outputs"])
    assert set(bad) >= {"path", "error"} and "cannot read" in bad["error"]


@pytest.mark.gpu
def test_gpu_master_matches_cpu(mixes, gpu_xp):
    s = dict(target_lufs=-14.0, ceiling_dbtp=-1.0)
    cpu = render.master(mixes["electronic"], FS, render.MasterSettings(device="cpu", **s))
    gpu = render.master(mixes["electronic"], FS, render.MasterSettings(device="gpu", **s))
    assert gpu.output_report["integrated_lufs"] == pytest.approx(cpu.output_report["integrated_lufs"], abs=0.02)
    err = np.sqrt(np.mean((gpu.audio.astype(np.float64) - cpu.audio) ** 2)) / np.sqrt(np.mean(cpu.audio.astype(np.float64) ** 2))
    assert 20 * math.log10(err + 1e-300) < -60


def test_block_processing_matches_the_whole_track(mixes, monkeypatch):
    x = mixes["rock"]
    settings = render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0)
    whole = render.master(x, FS, settings)
    monkeypatch.setattr(render, "BLOCK_S", 1.5)  # 8 s in six blocks, each with 5 s of context
    blocked = render.master(x, FS, settings)
    assert blocked.params == whole.params
    err = np.max(np.abs(blocked.audio.astype(np.float64) - whole.audio))
    assert err < 1e-5


def test_block_context_covers_a_long_release(monkeypatch):
    """A deep reduction with a slow release crosses block edges: the context each block
    reads (derived from the plan and the sample peak, not a fixed guess) still gives the
    whole-track result; a block with too little context would not (the test can fail)."""
    import dataclasses

    from acetate.pipeline.chain import presets

    rng = np.random.default_rng(7)
    n = 10 * FS
    x = (0.02 * rng.standard_normal((2, n))).astype(np.float32)
    x[:, 2 * FS : 3 * FS] *= 40.0  # a loud second, then 7 s of the quiet bed: the release runs on
    slow = dataclasses.replace(
        presets.BALANCED, name="slow", ratio=(6.0, 6.0, 6.0, 6.0), release_s=(1.5, 1.5, 1.5, 1.5), threshold_rel_db=(-12.0,) * 4
    )
    settings = render.MasterSettings(target_lufs=-16.0, ceiling_dbtp=-1.0)
    whole = render.master(x, FS, settings, preset=slow)
    g = [p for p in whole.params["dynamics"]]
    assert all(b["ratio"] > 1.0 for b in g)
    monkeypatch.setattr(render, "BLOCK_S", 0.5)
    halo_used = []
    derived = render._chain_halo
    monkeypatch.setattr(render, "_chain_halo", lambda *a: halo_used.append(derived(*a)) or halo_used[-1])
    blocked = render.master(x, FS, settings, preset=slow)
    assert halo_used and halo_used[0] > 1.5 * FS  # seconds of release were planned for
    assert blocked.params == whole.params
    assert np.max(np.abs(blocked.audio.astype(np.float64) - whole.audio)) < 1e-5
    # the same blocks with a fixed 0.3 s of context are wrong by far more than rounding
    monkeypatch.setattr(render, "_chain_halo", lambda *a: int(0.3 * FS) // 16 * 16)
    short = render.master(x, FS, settings, preset=slow)
    assert np.max(np.abs(short.audio.astype(np.float64) - whole.audio)) > 1e-3


def test_width_never_lowers_correlation_below_the_input():
    mid = np.array([4.0, 2.0, 1.0, 0.5])
    side = np.array([0.4, 0.5, 0.4, 0.3])

    def rho(w):
        w = np.asarray(w)
        return np.sum(mid - w**2 * side) / np.sum(mid + w**2 * side)

    # Widening alone would lower the correlation: it is scaled back to nothing.
    w = render.widths_for_correlation(mid, side, [1.0, 1.0, 1.2, 1.3])
    assert rho(w) >= rho(np.ones(4)) - 1e-12 and np.allclose(w, 1.0)
    # Tightening the low band buys room to widen the top, up to the input's correlation.
    w = render.widths_for_correlation(mid, side, [0.7, 1.0, 1.2, 1.3])
    assert w[0] == 0.7 and w[2] > 1.0 and w[3] > 1.0
    assert rho(w) == pytest.approx(rho(np.ones(4)), abs=1e-9) or np.allclose(w, [0.7, 1.0, 1.2, 1.3])


def test_bass_heavy_track_keeps_its_low_end_with_the_bass_heavy_preset():
    from acetate.kernels.spectrum import BAND_CENTRES_HZ, band_labels
    from acetate.pipeline.chain.analyse import fingerprint

    x = demo.render_style("electronic", 10.0, FS, seed=2) + 0.5 * demo.render_style("pop", 10.0, FS, seed=2)
    fp = fingerprint(x, FS)
    from acetate.pipeline import stages
    from acetate.pipeline.chain import presets

    preset = stages.select(fp, "bass_heavy", presets.load_bank(None)).preset
    r = render.master(x, FS, render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0), preset=preset, fingerprint=fp)
    out = fingerprint(r.audio, FS)
    centres = np.asarray(BAND_CENTRES_HZ)
    keys = np.array([f"ltas_mid_{lb}hz_db" for lb in band_labels(3)])
    low = (centres >= 20) & (centres <= 125)
    k1 = int(np.flatnonzero(centres == 1000)[0])

    def low_vs_1k(f):
        p = np.array([10 ** (f[k] / 10) for k in keys[low]])
        return 10 * np.log10(p.sum()) - f[keys[k1]], p

    before, p_low = low_vs_1k(fp)
    after, _ = low_vs_1k(out)
    g = np.asarray(r.params["eq"]["gain_db"])
    asked = 10 * np.log10(np.sum(p_low * 10 ** (g[low] / 10)) / p_low.sum()) - g[k1]
    moved = after - before
    # The low end moves by what the preset's EQ asks (dynamics add at most ~1 dB), never more.
    assert abs(moved - asked) <= 1.5, (moved, asked)
    assert abs(moved) <= abs(asked) + 1.0, (moved, asked)


def test_gc_pause_counts_overlapping_tracks_in_threads():
    """Two tracks in two threads of one worker: the collector stays off until the last
    one ends, then comes back on (it was on)."""
    import gc
    import threading

    from acetate.pipeline.catalogue.runtime import track_scope

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def track_a():
        with track_scope():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def track_b():
        a_in.wait(5)
        with track_scope():
            b_in.set()
            a_out.wait(5)
            seen["after_a"] = gc.isenabled()  # a ended first: b is still running

    assert gc.isenabled()
    ts = [threading.Thread(target=track_a), threading.Thread(target=track_b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert seen == {"after_a": False} and gc.isenabled()


def test_width_only_plan_on_a_long_track_passes_through(monkeypatch):
    """No high-pass, EQ or dynamics and unit widths: no filter at all; a track longer than
    a block still goes through (the block context is not asked of a missing filter)."""
    import dataclasses

    from acetate.pipeline.chain import presets

    monkeypatch.setattr(render, "BLOCK_S", 1.0)
    x = (0.1 * np.random.default_rng(3).standard_normal((2, 3 * FS))).astype(np.float32)
    flat = dataclasses.replace(presets.BALANCED, name="flat", width=(1.0, 1.0, 1.0, 1.0))
    settings = render.MasterSettings(eq=False, dynamics=False, highpass=False, width=True, loudness=False, limit=False)
    r = render.master(x, FS, settings, preset=flat)
    np.testing.assert_array_equal(r.audio, x)


def test_encode_refuses_non_finite_pcm(tmp_path):
    x = np.zeros((2, 1000), np.float32)
    x[1, 10] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        audio.encode(x, FS, tmp_path / "bad.flac", "flac24")
    assert not list(tmp_path.iterdir())  # nothing left behind under any name


def test_dc_removal_reads_the_fingerprints_mean_only_when_it_describes_the_samples(mixes):
    """The renderer takes the programme's DC from its fingerprint (no second pass): the
    master is bit-identical to one whose DC is measured afresh; a fingerprint of other
    samples (another length or rate, a resampled render) or without the means is not used."""
    from acetate.pipeline.chain import analyse

    x = mixes["rock"] + np.float32(0.01)  # a DC offset to remove
    fp = analyse.fingerprint(x, FS)
    s = render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0)
    with_fp = render.master(x, FS, s, fingerprint=fp)
    fresh = render.master(x, FS, s, fingerprint={**fp, "dc_offset_left": math.nan})  # refused: measured again
    np.testing.assert_array_equal(with_fp.audio, fresh.audio)
    shape = tuple(x.shape)
    assert render._fingerprint_dc(fp, shape, FS, resampled=False) == [fp["dc_offset_left"], fp["dc_offset_right"]]
    assert fp["dc_offset_left"] > 0.005  # the offset is there to be removed
    assert render._fingerprint_dc(fp, shape, FS, resampled=True) is None
    assert render._fingerprint_dc(fp, (2, shape[1] + 1), FS, resampled=False) is None
    assert render._fingerprint_dc(fp, shape, 48000 if FS != 48000 else 44100, resampled=False) is None
    assert render._fingerprint_dc({**fp, "dc_offset_right": None}, shape, FS, resampled=False) is None
    assert render._fingerprint_dc(None, shape, FS, resampled=False) is None


def _swelling_mix(seconds: float = 12.0, fs: int = 44100) -> np.ndarray:
    """Pink-ish noise swelling between -18 and 0 dB every 4 s: a dynamic (orchestral-like) mix."""
    from acetate.kernels import fir as _fir
    from acetate.kernels.spectrum import BAND_CENTRES_HZ as _C

    rng = np.random.default_rng(3)
    n = int(seconds * fs)
    env_db = -9.0 + 9.0 * np.sin(2 * np.pi * np.arange(n) / fs / 4.0)
    h = _fir.design_from_gain(_C, -3.0 * np.log2(np.asarray(_C) / 1000.0), fs, 4097, "linear")
    x = np.asarray(_fir.fft_filter(rng.standard_normal((2, n)).astype(np.float32), h)) * 10 ** (env_db / 20)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def test_compression_before_limiting_reaches_a_target_the_limiter_budget_misses():
    """--max-limiting makes the budget a choice; the chain's compression is pushed before the target is given up."""
    fs = 44100
    x = _swelling_mix(fs=fs)
    fp = analyse.fingerprint(x, fs)
    tight = dict(target_lufs=-14.0, ceiling_dbtp=-1.0, max_limiting_db=0.5)
    pushed = render.master(x, fs, render.MasterSettings(**tight), preset=presets.BALANCED, fingerprint=fp)
    assert pushed.target_met and pushed.ceiling_met, (pushed.output_report, pushed.notes)
    assert pushed.params["compression_push_db"] > 0 and pushed.params["loudness"]["limiter_reduction_db"] <= 0.5 + 1e-3
    assert any("compression pushed" in n for n in pushed.notes)
    assert pushed.output_report["loudness_range_lu"] < fp["loudness_range_lu"]
    # the limiter alone, within the same budget, falls short and says so
    alone = render.master(x, fs, render.MasterSettings(dynamics=False, **tight), preset=presets.BALANCED, fingerprint=fp)
    assert alone.target_met is False and alone.ceiling_met
    assert alone.output_report["integrated_lufs"] < pushed.output_report["integrated_lufs"] - 0.3
    assert any("not reached" in n for n in alone.notes)
    # with the preset's own budget nothing is pushed: the chain is what it always was
    usual = render.master(x, fs, render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0), preset=presets.BALANCED, fingerprint=fp)
    assert usual.target_met and "compression_push_db" not in usual.params
