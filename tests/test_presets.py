"""Preset banks: the shipped default bank, the bank format (no pickle), selection."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from acetate.pipeline.catalogue import demo
from acetate.pipeline.chain import presets
from acetate.pipeline.chain.presets import SELECTION_FEATURES, Bank, load_bank, save_bank, selection_vector
from acetate.schemas import bank as bank_schema

REQUIRED_STYLES = {"balanced", "warm", "bright", "bass_heavy", "dynamic_acoustic", "dense_loud", "vocal_forward", "spoken_word"}


@pytest.fixture(scope="module")
def demo_fps():
    from acetate.pipeline.chain.analyse import fingerprint

    return {s: fingerprint(demo.render_style(s, 8.0, 44100, seed=0), 44100) for s in demo.STYLES}


def test_default_bank_ships_the_required_styles_with_sources():
    bank = load_bank()
    assert 6 <= len(bank) <= 12
    assert REQUIRED_STYLES <= set(bank.names)
    assert bank.meta["kind"] == "default"
    for p in bank:
        assert p.source and bank.meta["sources"][p.name] == p.source
        assert len(p.target_mid_db) == 31 and all(math.isfinite(v) for v in p.target_mid_db)
    # the shipped file is exactly the documented builder's output
    from acetate.pipeline.chain.default_bank import build_default_bank

    built = build_default_bank()
    assert built.to_rows() == bank.to_rows()
    assert presets.DEFAULT_BANK_PATH.exists()


def test_character_of_styles():
    bank = load_bank()
    assert bank["dynamic_acoustic"].target_lufs < bank["balanced"].target_lufs < bank["dense_loud"].target_lufs
    assert max(bank["dynamic_acoustic"].ratio) < min(bank["dense_loud"].ratio)
    i63, i1k, i8k = (presets.BAND_CENTRES_HZ.index(f) for f in (63.0, 1000.0, 8000.0))

    def rel(name, i):  # level re. the 1 kHz band: the curve's shape
        return bank[name].target_mid_db[i] - bank[name].target_mid_db[i1k]

    assert rel("bass_heavy", i63) > rel("balanced", i63) + 3
    assert rel("bright", i8k) > rel("balanced", i8k) > rel("warm", i8k)
    assert rel("spoken_word", i63) < rel("balanced", i63) - 10


@pytest.mark.parametrize("ext", ["parquet", "json"])
def test_round_trip_and_schema(tmp_path, ext):
    bank = load_bank()
    path = save_bank(bank, tmp_path / f"bank.{ext}")
    again = load_bank(path)
    assert again.names == bank.names and again.to_rows() == bank.to_rows()
    if ext == "parquet":
        md = pq.read_schema(path).metadata
        assert md[b"acetate.schema"] == b"bank" and md[b"acetate.schema_version"] == bank_schema.SCHEMA_VERSION.encode()
        assert json.loads(md[b"acetate.bank"])["selection"]["features"] == list(SELECTION_FEATURES)


def test_bank_columns_match_preset_fields():
    from dataclasses import fields

    assert set(bank_schema.PRESET_COLUMNS) == {f.name for f in fields(presets.Preset)}


def test_loading_rejects_non_banks_and_bad_contents(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"acetate.schema": "features", "acetate.schema_version": "1.0"}))
    with pytest.raises(ValueError, match="not a preset bank"):
        load_bank(p)
    doc = json.loads(presets.DEFAULT_BANK_PATH.read_text())
    doc["acetate.schema_version"] = "2.0"
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="version"):
        load_bank(p)
    doc["acetate.schema_version"] = "1.0"
    doc["presets"][0]["ratio"] = ["__import__('os')"]
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="ratio"):
        load_bank(p)
    doc = json.loads(presets.DEFAULT_BANK_PATH.read_text())
    doc["presets"][0]["prototype"] = [0.0]
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="prototype"):
        load_bank(p)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="Parquet"):
        load_bank(tmp_path / "junk.parquet")
    with pytest.raises(FileNotFoundError):
        load_bank(tmp_path / "missing.parquet")


def test_unknown_preset_names_the_choices():
    with pytest.raises(KeyError, match="balanced"):
        load_bank()["nope"]


def test_selection_vector_clips_and_reports_missing():
    fp = {k: 0.0 for k in SELECTION_FEATURES} | {"width_overall_db": -120.0, "ltas_mid_1000hz_db": -120.0}
    v = selection_vector(fp)
    assert v[-1] == -40.0 and v[SELECTION_FEATURES.index("ltas_mid_1000hz_db")] == -80.0
    with pytest.raises(KeyError, match="crest_factor_db"):
        selection_vector({k: 0.0 for k in SELECTION_FEATURES if k != "crest_factor_db"})


def test_a_prototype_selects_its_own_preset():
    bank = load_bank()
    for p, proto in zip(bank.presets, bank.prototypes):
        sel = bank.select(dict(zip(bank.features, proto)))
        assert sel.preset.name == p.name and sel.distance == pytest.approx(0.0, abs=1e-9)
        assert len(sel.runners_up) == 3 and sel.runners_up[0][1] >= sel.distance


def test_demo_styles_select_sensibly_and_deterministically(demo_fps):
    bank = load_bank()
    picks = {s: bank.select(fp) for s, fp in demo_fps.items()}
    assert picks["electronic"].preset.name == "bass_heavy"
    assert picks["spoken"].preset.name == "spoken_word"
    assert picks["rock"].preset.name == "dense_loud"
    again = {s: bank.select(fp).to_dict() for s, fp in demo_fps.items()}
    assert again == {s: sel.to_dict() for s, sel in picks.items()}
    rep = picks["pop"].to_dict()
    assert set(rep) == {
        "preset", "applied", "distance", "confidence", "weights", "runners_up", "method", "bank", "n_features", "speech", "notes",
        "drivers", "nearest_members",
    }  # fmt: skip
    assert rep["drivers"] and all(0 < d["share"] <= 1 for d in rep["drivers"]) and len(rep["nearest_members"]) == 3
    assert 0.0 <= rep["confidence"] <= 1.0 and rep["weights"][0]["name"] == rep["preset"]
    json.dumps(rep, allow_nan=False)


def test_missing_bands_are_skipped_not_fatal(demo_fps):
    bank = load_bank()
    fp = dict(demo_fps["electronic"])
    fp["ltas_mid_16000hz_db"] = math.nan  # e.g. a 22.05 kHz file
    fp["loudness_range_lu"] = math.nan
    sel = bank.select(fp)
    assert sel.preset.name == "bass_heavy" and sel.n_features == len(SELECTION_FEATURES) - 2
    with pytest.raises(ValueError, match="none of the selection features"):
        bank.select({k: math.nan for k in SELECTION_FEATURES})


def test_knn_method_and_module_level_select():
    bank = load_bank()
    meta = dict(bank.meta)
    meta["selection"] = dict(meta["selection"], method="knn", k=5)
    knn = Bank(bank.presets, bank.prototypes, bank.members, meta)
    for p, proto in zip(bank.presets, bank.prototypes):
        assert knn.select(dict(zip(bank.features, proto))).preset.name == p.name
    assert presets.load_bank(None).select(dict(zip(bank.features, bank.prototypes[2]))).preset.name == bank.names[2]
    with pytest.raises(ValueError, match="method"):
        Bank(bank.presets, bank.prototypes, bank.members, dict(meta, selection=dict(meta["selection"], method="magic")))


def test_cli_presets_lists_and_exports(tmp_path, capsys):
    from acetate.pipeline.cli import main

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "bass_heavy" in out and "spoken_word" in out
    assert main(["presets", "--json", "--export", str(tmp_path / "b.parquet")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["presets"]] == list(load_bank().names)
    assert main(["presets", "--bank", str(tmp_path / "b.parquet")]) == 0
    assert main(["presets", "--bank", str(tmp_path / "missing.parquet")]) == 2
