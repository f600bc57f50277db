"""Reference mastering and per-stage amounts, on built signals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from acetate.kernels import fir
from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.pipeline.chain import analyse, presets, reference, render
from acetate.pipeline.io import audio
from acetate.schemas.features import THIRD_OCTAVE_LABELS

FS = 44100
C = np.asarray(BAND_CENTRES_HZ)
INNER = (C >= 63.0) & (C <= 12500.0)


def _noise(tilt_db_per_oct: float, seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """Stereo noise whose band energy slopes by ``tilt_db_per_oct`` (0: pink-like band energy re. 1 kHz)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, int(seconds * FS))).astype(np.float32)
    x[1] = 0.7 * x[1] + 0.3 * x[0]
    h = fir.design_from_gain(BAND_CENTRES_HZ, -3.0 * np.log2(C / 1000.0) + tilt_db_per_oct * np.log2(C / 1000.0), FS, 8191, "linear")
    y = np.asarray(fir.fft_filter(x, h), dtype=np.float32)
    return (0.2 * y / np.max(np.abs(y))).astype(np.float32)


def _ltas(fp) -> np.ndarray:
    return np.array([fp[f"ltas_mid_{b}hz_db"] for b in THIRD_OCTAVE_LABELS])


def _dist(a, b) -> float:
    d = (_ltas(a) - _ltas(b))[INNER]
    return float(np.mean(np.abs(d)))


def test_a_pink_mix_mastered_toward_a_bright_reference_moves_toward_it(tmp_path):
    from acetate.pipeline.cli import main

    mix, ref = _noise(0.0, seed=1), _noise(+2.0, seed=2)  # the reference: 2 dB/oct brighter
    audio.encode(mix, FS, tmp_path / "mix.wav", "wav32f")
    audio.encode(ref, FS, tmp_path / "bright.wav", "wav32f")
    out = tmp_path / "out"
    args = ["master", str(tmp_path / "mix.wav"), "--out", str(out), "--reference", str(tmp_path / "bright.wav"), "--format", "wav24"]
    assert main([*args, "--json", "--intensity", "high"]) == 0
    z, fs = audio.decode(out / "mix.wav")
    f_mix, f_ref, f_out = (analyse.fingerprint(a, FS) for a in (mix, ref, z))
    assert _dist(f_out, f_ref) < 0.5 * _dist(f_mix, f_ref), (_dist(f_mix, f_ref), _dist(f_out, f_ref))
    hi = (C >= 4000) & (C <= 12500)
    assert np.mean((_ltas(f_out) - _ltas(f_mix))[hi]) > 3.0  # the top came up
    # the target and the ceiling are the job's, not the reference's
    from acetate.kernels import loudness

    assert loudness.integrated_loudness(z, fs) == pytest.approx(-14.0, abs=0.1)
    # a reference replaces the preset: asking for both is refused before any work
    assert main([*args, "--preset", "warm"]) == 2


def test_two_references_weighted_one_to_one_give_the_mean_of_their_targets():
    a, b = analyse.fingerprint(_noise(-1.5, seed=3), FS), analyse.fingerprint(_noise(+1.5, seed=4), FS)
    pa, pb = reference.reference_preset([(a, 1.0)]), reference.reference_preset([(b, 1.0)])
    both = reference.reference_preset([(a, 1.0), (b, 1.0)])
    inner = (C >= 40.0) & (C <= 16000.0)
    mean = (np.asarray(pa.target_mid_db) + np.asarray(pb.target_mid_db)) / 2
    assert np.asarray(both.target_mid_db)[inner] == pytest.approx(mean[inner], abs=1e-3)
    # 3:1 leans toward the first
    lean = np.asarray(reference.reference_preset([(a, 3.0), (b, 1.0)]).target_mid_db)[inner]
    assert np.all(np.abs(lean - np.asarray(pa.target_mid_db)[inner]) <= np.abs(lean - np.asarray(pb.target_mid_db)[inner]) + 1e-9)
    # the extremes follow the base preset's shape, not the references' rumble or hiss
    base = np.asarray(presets.BALANCED.target_mid_db)
    lo = int(np.argmax(C >= 40.0))
    assert np.asarray(both.target_mid_db)[:lo] - np.asarray(both.target_mid_db)[lo] == pytest.approx(base[:lo] - base[lo], abs=1e-3)
    with pytest.raises(ValueError, match="weights"):
        reference.reference_preset([(a, 0.0)])


def test_a_reference_is_measured_once_per_content(tmp_path, monkeypatch):
    from acetate.pipeline import stages

    audio.encode(_noise(0.5, seed=5), FS, tmp_path / "r.wav", "wav32f")
    (tmp_path / "copy.wav").write_bytes((tmp_path / "r.wav").read_bytes())
    calls = []
    real = stages.decode
    monkeypatch.setattr(stages, "decode", lambda *a, **k: calls.append(a) or real(*a, **k))
    reference._CACHE.clear()
    p1, _ = reference.reference_from_files([str(tmp_path / "r.wav")])
    p2, rec = reference.reference_from_files([str(tmp_path / "copy.wav") + ":2"])
    assert len(calls) == 1 and p1.target_mid_db == p2.target_mid_db and rec[0]["weight"] == 2.0


def test_eq_amount_zero_leaves_the_spectrum_untouched():
    x = _noise(-2.0, seed=6)
    fp = analyse.fingerprint(x, FS)
    bright = presets.load_bank()["bright"]
    full = render.master(x, FS, render.MasterSettings(intensity="high"), preset=bright, fingerprint=fp)
    assert np.max(np.abs(full.params["eq"]["gain_db"])) > 1.0  # the preset does move this track
    off = render.MasterSettings(amounts=render.parse_amounts("eq=0,dynamics=0,width=0"))
    z = render.master(x, FS, off, preset=bright, fingerprint=fp)
    assert np.max(np.abs(z.params["eq"]["gain_db"])) == 0.0
    d = (_ltas(analyse.fingerprint(z.audio, FS)) - _ltas(fp))[INNER]
    assert np.max(np.abs(d - d.mean())) < 0.15, d
    half = render.master(x, FS, render.MasterSettings(amounts=(("eq", 0.5),)), preset=bright, fingerprint=fp)
    assert np.asarray(half.params["eq"]["gain_db"]) == pytest.approx(np.asarray(full.params["eq"]["gain_db"]) / 2, abs=2e-3)
    assert half.params["amounts"]["eq"] == 0.5 and half.params["amounts"]["dynamics"] == render.INTENSITY["medium"]
    json.dumps(half.params)


def test_limiter_amount_zero_limits_nothing_and_the_ceiling_holds():
    x = _noise(0.0, seed=7)
    fp = analyse.fingerprint(x, FS)
    r = render.master(x, FS, render.MasterSettings(target_lufs=-9.0, amounts=(("limiter", 0.0),)), preset=presets.BALANCED, fingerprint=fp)
    assert r.params["loudness"]["limiter_reduction_db"] == pytest.approx(0.0, abs=1e-3)
    assert r.ceiling_met and r.target_met is False


@pytest.mark.parametrize("bad", ["eq=2", "tone=0.5", "eq", "eq=x"])
def test_bad_amounts_are_refused_naming_them(bad):
    with pytest.raises(ValueError, match="eq|tone"):
        render.MasterSettings(amounts=render.parse_amounts(bad))


def test_house_curve_is_the_median_of_a_labels_masters_and_masters_move_toward_it(tmp_path):
    from acetate.pipeline.cli import main

    folder = tmp_path / "released"
    tilts = [1.0, 1.5, 2.0, 1.2, 1.8]
    for i, t in enumerate(tilts):
        audio.encode(_noise(t, seed=10 + i), FS, folder / f"m{i}.wav", "wav32f")
    (folder / "broken.wav").write_bytes(b"RIFF nonsense")
    bank_path = tmp_path / "house.json"
    assert main(["house", str(folder), "--out", str(bank_path), "--json"]) == 0
    bank = presets.load_bank(bank_path)
    assert bank.names == ("house",) and bank.meta["kind"] == "house" and bank.meta["house"]["n_masters"] == 5
    fps = [analyse.fingerprint(audio.decode(folder / f"m{i}.wav")[0], FS) for i in range(5)]
    med = np.median([_ltas(fp) for fp in fps], axis=0)
    inner = (C >= 40.0) & (C <= 16000.0)
    assert np.asarray(bank["house"].target_mid_db)[inner] == pytest.approx(med[inner], abs=2e-3)
    assert len(bank.meta["house"]["groups"][0]["spread_mid_db"]) == 31
    # a dull mix mastered with the house bank ends nearer the house curve
    mix = _noise(-1.0, seed=30)
    audio.encode(mix, FS, tmp_path / "mix.wav", "wav32f")
    assert main(["master", str(tmp_path / "mix.wav"), "--out", str(tmp_path / "out"), "--bank", str(bank_path), "--intensity", "high"]) == 0
    z, _ = audio.decode(tmp_path / "out" / "mix.wav")
    target = np.asarray(bank["house"].target_mid_db)
    before = np.mean(np.abs((_ltas(analyse.fingerprint(mix, FS)) - target)[INNER]))
    after = np.mean(np.abs((_ltas(analyse.fingerprint(z, FS)) - target)[INNER]))
    assert after < 0.5 * before, (before, after)


def test_a_varied_folder_gets_a_house_curve_per_group():
    from acetate.pipeline.learning import house

    fps = [analyse.fingerprint(_noise(t, seconds=4.0, seed=40 + i), FS) for i, t in enumerate([-3.0, -2.8, -3.2, 3.0, 2.8, 3.2])]
    bank = house.house_bank(fps)
    assert len(bank) == 2, bank.meta["house"]
    hi = (C >= 4000) & (C <= 12500)
    levels = sorted(float(np.mean(np.asarray(p.target_mid_db)[hi])) for p in bank.presets)
    assert levels[1] - levels[0] > 10.0
    assert len(house.house_bank(fps, k=1)) == 1


def test_a_job_file_masters_toward_references_with_per_track_amounts(tmp_path):
    import csv

    import pyarrow.parquet as pq
    import yaml

    from acetate.pipeline.cli import main

    audio.encode(_noise(2.0, seed=50), FS, tmp_path / "ref.wav", "wav32f")
    for name, seed in (("one", 51), ("two", 52)):
        audio.encode(_noise(0.0, seed=seed), FS, tmp_path / f"{name}.wav", "wav32f")
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["track_id", "path", "amounts"])
        w.writeheader()
        w.writerows([{"track_id": "one", "path": "one.wav", "amounts": ""}, {"track_id": "two", "path": "two.wav", "amounts": "eq=0"}])
    job = {
        "inputs": {"manifest": str(tmp_path / "m.csv")},
        "output": str(tmp_path / "out"),
        "presets": {"reference": [f"{tmp_path / 'ref.wav'}:1"], "amounts": {"width": 0}},
        "options": {"progress": False},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--workers", "1"]) == 0
    rows = {r["track_id"]: r for r in pq.read_table(tmp_path / "out" / "presets").to_pylist()}
    one, two = (json.loads(rows[t]["params"]) for t in ("one", "two"))
    assert rows["one"]["preset"].startswith("reference(ref.wav") and rows["one"]["forced"]
    assert one["amounts"]["width"] == 0.0 and max(abs(g) for g in one["eq"]["gain_db"]) > 1.0
    assert two["amounts"]["eq"] == 0.0 and max(abs(g) for g in two["eq"]["gain_db"]) == 0.0
    assert one["explain"]["references"][0]["path"].endswith("ref.wav")
    # a bad amount or a missing reference is refused before any work, naming it
    job["presets"]["amounts"] = "eq=3"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
