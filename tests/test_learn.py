"""Learning from pairs: alignment, transform estimation, and the recovery test.

The recovery test builds mixes (demo styles, seeded variations), masters them
with *hidden* known transforms (a distinct EQ curve, dynamics setting and
loudness per style, then a trimmed head and a fade-out), learns a bank from
the pairs through the CLI, and checks that (1) each hidden EQ curve is
recovered by a learned preset within 1 dB per band over 40 Hz..12.5 kHz
(after removing the mean offset: level is the loudness stage's business),
(2) held-out accuracy beats chance by a wide margin, and (3) on fresh
held-out mixes ``acetate master --bank LEARNED`` lands closer to the true
masters (per-band long-term spectrum re. overall level, i.e. after loudness
matching) than the unprocessed mixes are.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

from acetate.kernels import compressor, fir, loudness
from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.pipeline.catalogue import demo
from acetate.pipeline.chain import analyse, presets
from acetate.pipeline.io import audio
from acetate.pipeline.learning import learn
from acetate.schemas.features import THIRD_OCTAVE_LABELS

FS = 44100
C = np.asarray(BAND_CENTRES_HZ)
L2 = np.log2(C)
BAND = (C >= 40.0) & (C <= 12500.0)


def _bell(fc: float, g: float, sd_oct: float) -> np.ndarray:
    return g * np.exp(-0.5 * ((L2 - np.log2(fc)) / sd_oct) ** 2)


#: style -> hidden transform: EQ (dB at band centres), compressor (thr re. RMS, ratio, attack, release, window) or None, loudness.
HIDDEN = {
    "electronic": dict(
        eq=-3.0 / (1 + (C / 70.0) ** 2) + 1.5 * np.clip(np.log2(C / 1000.0), 0, None), comp=(-3.0, 3.0, 0.2, 1.0, 0.4), lufs=-10.0
    ),
    "acoustic": dict(
        eq=3.0 / (1 + (C / 150.0) ** 2) - 1.0 * np.clip(np.log2(C / 2000.0), 0, None), comp=(0.0, 4.0, 0.3, 1.5, 1.0), lufs=-16.0
    ),
    "pop": dict(eq=_bell(2500.0, 4.0, 0.6) + _bell(300.0, -2.0, 0.6), comp=None, lufs=-13.0),
}


def _fir(x: np.ndarray, gains: np.ndarray) -> np.ndarray:
    h = fir.design_from_gain(BAND_CENTRES_HZ, gains, FS, 8191, "linear")
    return np.asarray(fir.fft_filter(x, h), dtype=np.float32)


def make_mix(style: str, seed: int, seconds: float = 6.0) -> np.ndarray:
    """A demo mix with a seeded start, tilt (+-0.75 dB/oct) and level: no two mixes alike."""
    rng = np.random.default_rng([seed, 7])
    x = demo.render_style(style, seconds + 3.0, FS, seed=seed)
    start = int(rng.uniform(0, 2.5) * FS)
    x = x[:, start : start + int(seconds * FS)]
    x = _fir(x, rng.uniform(-0.75, 0.75) * np.log2(C / 1000.0)) * 10 ** (rng.uniform(-4, 2) / 20)
    return np.ascontiguousarray(x, dtype=np.float32)


def make_master(x: np.ndarray, style: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 11])
    h = HIDDEN[style]
    y = _fir(x, h["eq"])
    if h["comp"] is not None:
        thr, ratio, att, rel, win = h["comp"]
        lv = 10 * math.log10(np.mean(y.astype(np.float64) ** 2))
        y, _ = compressor.compress(y, FS, lv + thr, ratio, 6.0, att, rel, window_s=win)
    y = y * 10 ** ((h["lufs"] - loudness.integrated_loudness(y, FS)) / 20)
    y = y[:, int(rng.uniform(0.1, 0.6) * FS) :].copy()  # mastering trims the head...
    fade = int(0.5 * FS)
    y[:, -fade:] *= np.linspace(1, 0, fade)  # ...and fades the tail
    return np.ascontiguousarray(y, dtype=np.float32)


def _ltas(fp) -> np.ndarray:
    return np.array([fp[f"ltas_mid_{b}hz_db"] for b in THIRD_OCTAVE_LABELS])


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from acetate.pipeline.cli import main

    d = tmp_path_factory.mktemp("pairs")
    rows = []
    for seed in range(8):  # 8 "albums", one track of each style
        for style in HIDDEN:
            x = make_mix(style, seed)
            audio.encode(x, FS, d / f"{style}-{seed}-mix.wav", "wav32f")
            audio.encode(make_master(x, style, seed), FS, d / f"{style}-{seed}-master.wav", "wav32f")
            rows.append({"mix_path": f"{style}-{seed}-mix.wav", "master_path": f"{style}-{seed}-master.wav", "group": f"album{seed}"})
    with open(d / "pairs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["mix_path", "master_path", "group"])
        w.writeheader()
        w.writerows(rows)
    out = d / "learned.parquet"
    assert main(["learn", "--pairs", str(d / "pairs.csv"), "--out", str(out), "--json"]) == 0
    return out


def test_align_finds_offset_and_rejects_strangers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4 * 8000)).astype(np.float32)
    lag, corr = learn.align(x, 0.5 * x[:, 1234:], 8000)
    assert lag == 1234 and corr > 0.99
    lag, corr = learn.align(x[:, 500:], x, 8000)  # master longer at the head
    assert lag == -500
    with pytest.raises(ValueError, match="does not align"):
        learn.estimate_transform(x, rng.standard_normal((2, 4 * 8000)).astype(np.float32), 8000)


def test_estimate_transform_recovers_eq_and_gain():
    x = make_mix("pop", 3)
    y = _fir(x, HIDDEN["pop"]["eq"]) * 10 ** (6 / 20)
    t = learn.estimate_transform(x, y[:, 3000:], FS)
    assert t.offset_s == pytest.approx(3000 / FS, abs=1e-9)
    err = (t.eq_mid_db - HIDDEN["pop"]["eq"])[BAND]
    err = err - np.nanmean(err)
    assert np.nanmax(np.abs(err)) < 0.6
    g = learn.estimate_transform(x, 2.0 * x[:, 3000:], FS)  # a pure gain: +6.02 dB, nothing else
    assert g.loudness_change_db == pytest.approx(6.02, abs=0.05)
    assert np.nanmax(np.abs(g.eq_mid_db[BAND])) < 0.05 and abs(g.crest_change_db) < 0.05


def test_manifest_validation(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("mix,master\na.wav,b.wav\n")
    with pytest.raises(ValueError, match="mix_path"):
        learn.read_manifest(bad)
    ok = tmp_path / "ok.csv"
    ok.write_text("mix_path,master_path\na.wav,/abs/b.wav\n")
    (p,) = learn.read_manifest(ok)
    assert p.mix_path == str(tmp_path / "a.wav") and p.master_path == "/abs/b.wav" and p.group == p.mix_path


def test_learned_bank_recovers_hidden_transforms(learned):
    bank = presets.load_bank(learned)
    report = bank.meta["report"]
    assert bank.meta["kind"] == "learned" and report["n_pairs"] == 24 and report["k"] == len(bank) >= 3
    assert sum(report["per_preset"].values()) == 24
    # held-out accuracy (split by album) beats chance by a wide margin
    assert report["accuracy"] >= max(0.8, report["chance"] + 0.3), report
    for style, h in HIDDEN.items():
        errs = []
        for le in bank.learned:
            d = (np.asarray(le["eq_mid_db"], dtype=float) - h["eq"])[BAND]
            d = d - np.nanmean(d)
            errs.append(np.nanmax(np.abs(d)))
        assert min(errs) < 1.0, (style, errs)
    # loudness targets follow the masters
    assert min(p.target_lufs for p in bank.presets) == pytest.approx(-16.0, abs=0.6)
    assert max(p.target_lufs for p in bank.presets) == pytest.approx(-10.0, abs=0.6)


def test_master_with_learned_bank_lands_closer_to_true_masters(learned, tmp_path):
    from acetate.pipeline.cli import main

    truths = {}
    for style in HIDDEN:
        for seed in (100, 101):  # mixes never seen in training
            x = make_mix(style, seed)
            stem = f"{style}-{seed}"
            audio.encode(x, FS, tmp_path / "in" / f"{stem}.wav", "wav32f")
            truths[stem] = (x, make_master(x, style, seed))
    out = tmp_path / "out"
    assert (
        main(
            [
                "master",
                str(tmp_path / "in"),
                "--out",
                str(out),
                "--bank",
                str(learned),
                "--intensity",
                "high",
                "--format",
                "wav24",
                "--json",
            ]
        )
        == 0
    )
    d_mix, d_out = [], []
    for stem, (x, y) in truths.items():
        (path,) = [p for p in os.listdir(out) if p.startswith(stem + ".")]
        z, fs = audio.decode(out / path)
        ref = _ltas(analyse.fingerprint(y, FS))
        d_mix.append(np.nanmean(np.abs(_ltas(analyse.fingerprint(x, FS)) - ref)[BAND]))
        d_out.append(np.nanmean(np.abs(_ltas(analyse.fingerprint(z, fs)) - ref)[BAND]))
    d_mix, d_out = np.array(d_mix), np.array(d_out)
    assert np.all(d_out < d_mix), (d_mix, d_out)
    assert d_out.mean() < 0.7 * d_mix.mean(), (d_mix.mean(), d_out.mean())


# --- relative presets, blends, confidence, the speech guard, determinism, the report --------------


def test_learned_presets_are_relative_and_carry_the_hidden_move(learned):
    bank = presets.load_bank(learned)
    assert all(p.eq_mode == "relative" and len(p.correction_mid_db) == 31 for p in bank.presets)
    assert all(p.content == "music" for p in bank.presets)
    for style, h in HIDDEN.items():  # the curve the renderer applies recovers the hidden EQ within 1 dB per band
        errs = []
        for p in bank.presets:
            d = (np.asarray(p.correction_mid_db) - h["eq"])[BAND]
            errs.append(np.max(np.abs(d - d.mean())))
        assert min(errs) < 1.0, (style, errs)
    report = bank.meta["report"]
    assert report["model"]["method"] in ("nearest_prototype", "knn") and report["cv"]
    tr = report["transfer"]
    assert tr["learned_db"] < 0.5 * tr["none_db"], tr  # the held-out moves are predicted, not guessed
    r = report["rendered"]
    assert r["learned_db"] < r["raw_db"] and r["ratio"] < 0.8, r
    assert report["warnings"] == []


def test_a_relative_preset_applies_its_move_to_any_track():
    """The same learned move on two different songs: each keeps what is particular to it."""
    shelf = np.where(C >= 4000.0, 4.0, 0.0)
    p = presets.Preset(name="air", eq_mode="relative", correction_mid_db=tuple(shelf), eq_max_db=6.0)
    curves = []
    for style in ("electronic", "acoustic"):
        fp = analyse.fingerprint(make_mix(style, 3), FS)
        g = render_eq(p, fp)
        ok = BAND & np.isfinite(_ltas(fp)) & (_ltas(fp) > -70)
        d = (g - shelf)[ok]
        assert np.max(np.abs(d - d.mean())) < 0.05, style
        curves.append(g)
    # a target preset would instead drag both songs toward one spectrum: different curves
    t = presets.load_bank()["balanced"]
    a, b = (render_eq(t, analyse.fingerprint(make_mix(s, 3), FS)) for s in ("electronic", "acoustic"))
    assert np.max(np.abs((a - b)[BAND])) > 2.0


def render_eq(preset, fp):
    from acetate.pipeline.chain import render

    return render.eq_curve(preset, fp, FS, 1.0)


def _two_preset_bank(ca, cb, blend_k=2):
    feats = list(presets.SELECTION_FEATURES)
    rng = np.random.default_rng(0)
    base = np.array([-20.0] * 28 + [-3.0, 12.0, 6.0, -12.0])
    step = np.zeros(len(feats))
    step[20:28] = 3.0  # the two presets differ in their top bands
    protos = np.array([base - step, base + step])
    members = [p + rng.standard_normal((12, len(feats))) * 0.5 for p in protos]
    ps = [
        presets.Preset(name="a", eq_mode="relative", correction_mid_db=tuple(ca), eq_max_db=12.0),
        presets.Preset(name="b", eq_mode="relative", correction_mid_db=tuple(cb), eq_max_db=12.0),
    ]
    meta = {"name": "two", "selection": {"features": feats, "method": "nearest_prototype", "blend_k": blend_k, "temperature": 1.0}}
    return presets.Bank(ps, protos, members, meta), base


def test_a_mix_equidistant_between_two_presets_gets_their_mean_move():
    ca, cb = np.where(C > 3000, 6.0, 0.0), np.where(C < 200, 4.0, 0.0)
    bank, mid = _two_preset_bank(ca, cb)
    sel = bank.select(dict(zip(bank.features, mid)))
    assert [w for _, w in sel.weights] == pytest.approx([0.5, 0.5])
    assert np.asarray(sel.rendered.correction_mid_db) == pytest.approx((ca + cb) / 2)
    assert sel.confidence < 0.6  # the runner-up is as near: not a confident pick
    # nearer one preset: its move dominates, and the confidence rises
    near_a = dict(zip(bank.features, bank.prototypes[0]))
    s2 = bank.select(near_a)
    assert s2.weights[0][0] == "a" and s2.weights[0][1] > 0.9 and s2.confidence > sel.confidence
    # one preset when blend_k is 1
    assert bank.select(dict(zip(bank.features, mid)), blend_k=1).rendered.name == "a"


def test_far_from_every_preset_gets_the_gentle_default_and_a_note():
    bank, mid = _two_preset_bank(np.zeros(31), np.zeros(31))
    far = dict(zip(bank.features, mid + 40.0))
    sel = bank.select(far)
    assert sel.confidence < 0.15 and sel.rendered is presets.GENTLE
    assert any("gentle default" in n for n in sel.notes)
    assert bank.select(far, min_confidence=0.0).rendered is not presets.GENTLE


def _sustained_music(seconds=6.0, fs=FS, stereo=True):
    """Sustained harmonic chords band-limited like speech (no bass, little top): a speech preset's
    spectrum, but music: steady, wide."""
    t = np.arange(int(seconds * fs)) / fs
    rng = np.random.default_rng(5)
    x = np.zeros((2, t.size))
    for f0 in (220.0, 277.2, 329.6, 440.0):
        for h in range(1, 8):
            ph = rng.uniform(0, 2 * np.pi, 2)
            x += (0.3 / h**1.5) * np.sin(2 * np.pi * f0 * h * t + ph[:, None])
    if stereo:
        x[1] = 0.6 * x[1] + 0.4 * x[0]
    else:
        x[1] = x[0]
    return (0.1 * x / np.max(np.abs(x))).astype(np.float32)


def _syllables(seconds=6.0, fs=FS):
    """Speech-like: mono, no low end, switched on and off four times a second."""
    rng = np.random.default_rng(6)
    n = int(seconds * fs)
    noise = rng.standard_normal(n)
    h = fir.design_from_gain(BAND_CENTRES_HZ, np.where((C > 150) & (C < 4000), 0.0, -40.0), fs, 4097, "linear")
    v = np.asarray(fir.fft_filter(noise[None, :].astype(np.float32), h))[0]
    gate = (np.sin(2 * np.pi * 4.0 * np.arange(n) / fs) > 0.2).astype(float)
    x = 0.2 * v * gate
    return np.stack([x, x]).astype(np.float32)


def test_music_never_gets_the_speech_preset_speech_still_does():
    bank = presets.load_bank()
    speech_fp = analyse.fingerprint(_syllables(), FS)
    assert presets.speech_likeness(speech_fp) >= 0.5
    assert bank.select(speech_fp).preset.name == "spoken_word"
    for stereo in (True, False):
        fp = analyse.fingerprint(_sustained_music(stereo=stereo), FS)
        assert presets.speech_likeness(fp) < 0.5
        sel = bank.select(fp)
        assert sel.preset.content == "music" and sel.rendered.content == "music", sel.to_dict()
    # were the guard off, the mono music's nearest preset is the speech one: the guard is what kept it off
    fp = analyse.fingerprint(_sustained_music(stereo=False), FS)
    d = bank.distances(fp)
    if bank.names[int(np.argmin(d))] == "spoken_word":
        assert any("speech preset" in n for n in bank.select(fp).notes)
    # forcing by name still works
    from acetate.pipeline import stages

    assert stages.select(fp, "spoken_word", bank).preset.name == "spoken_word"


def test_same_pairs_and_seed_give_the_same_bank_byte_for_byte(learned, tmp_path):
    from acetate.pipeline.cli import main

    manifest = learned.parent / "pairs.csv"
    outs = []
    for i in range(2):
        out = tmp_path / f"again{i}.json"
        assert main(["learn", "--pairs", str(manifest), "--out", str(out), "--json", "--no-render-check"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_learn_warns_and_strict_fails_when_the_moves_cannot_be_predicted(tmp_path, capsys):
    """Random moves unrelated to the mixes: no better than no EQ; --strict exits 3."""
    from acetate.pipeline.cli import main

    rng = np.random.default_rng(1)
    rows = []
    for seed in range(8):
        x = make_mix("pop", seed, seconds=4.0)
        eq = rng.choice([-1, 1]) * 4.0 * np.exp(-0.5 * ((L2 - np.log2(rng.choice([100.0, 1000.0, 8000.0]))) / 0.7) ** 2)
        audio.encode(x, FS, tmp_path / f"m{seed}.wav", "wav32f")
        audio.encode(_fir(x, eq), FS, tmp_path / f"x{seed}.wav", "wav32f")
        rows.append({"mix_path": f"m{seed}.wav", "master_path": f"x{seed}.wav", "group": f"g{seed}"})
    with open(tmp_path / "pairs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["mix_path", "master_path", "group"])
        w.writeheader()
        w.writerows(rows)
    code = main(["learn", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "b.json"), "--strict", "--no-render-check"])
    err = capsys.readouterr().err
    assert code == 3 and "warning" in err, err
    assert (tmp_path / "b.json").exists()


def test_the_selection_says_which_features_drove_it():
    bank, mid = _two_preset_bank(np.zeros(31), np.zeros(31))
    near_b = dict(zip(bank.features, bank.prototypes[1] + 0.2))
    sel = bank.select(near_b)
    assert sel.preset.name == "b"
    top = [f for f, _ in sel.drivers]
    assert top and all(bank.features.index(f) in range(20, 28) for f in top), sel.drivers  # the bands the presets differ in
    assert sum(s for _, s in sel.drivers) <= 1.0 + 1e-9
    assert sel.nearest_members[0][0] == "b"
