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
