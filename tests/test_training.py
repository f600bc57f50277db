"""Training-data generation: variants, the Parquet table, reproducibility."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from acetate.pipeline.catalogue import demo
from acetate.pipeline.io import audio
from acetate.pipeline.learning import training
from acetate.schemas.features import FEATURE_NAMES
from acetate.schemas.training import SCHEMA_VERSION, TRAINING_SCHEMA, training_table


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tracks")
    for style in ("electronic", "acoustic"):
        audio.encode(demo.render_style(style, 3.0, 22050, seed=1), 22050, d / f"{style}.flac", "flac24")
    return d


def test_variants_grid_and_seeded_draws():
    assert training.variants("a.wav", ["x", "y"], ["low", "high"]) == [
        ("x", "low", None),
        ("x", "high", None),
        ("y", "low", None),
        ("y", "high", None),
    ]
    a = training.variants("a.wav", ["x", "y", "z"], n_random=5, seed=3)
    assert a == training.variants("a.wav", ["x", "y", "z"], n_random=5, seed=3)
    assert a != training.variants("a.wav", ["x", "y", "z"], n_random=5, seed=4)
    assert all(-18.0 <= lufs <= -9.0 for _, _, lufs in a)
    with pytest.raises(ValueError, match="intensities"):
        training.variants("a.wav", ["x"], ["loud"])


def test_generate_writes_audio_and_table(inputs, tmp_path):
    from acetate.pipeline.cli import main

    out = tmp_path / "td"
    assert (
        main(
            [
                "training-data",
                str(inputs),
                "--out",
                str(out),
                "--presets",
                "balanced,bass_heavy",
                "--intensities",
                "low,high",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    table = pq.read_table(out / "training.parquet")
    assert table.schema.metadata[b"acetate.schema"] == b"training"
    assert table.schema.metadata[b"acetate.schema_version"] == SCHEMA_VERSION.encode()
    assert table.schema.equals(TRAINING_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert len(rows) == 2 * 2 * 2 and all(r["error"] is None for r in rows)
    for r in rows:
        assert (out / r["audio_path"]).exists()
        assert len(r["eq_gain_db"]) == 31 and json.loads(r["params"])["preset"] == r["preset"]
        assert all(f"in_{n}" in r and f"out_{n}" in r for n in FEATURE_NAMES)
        assert r["out_integrated_lufs"] == pytest.approx(r["target_lufs"], abs=0.3) or r["target_met"] is False
    # low intensity applies less EQ than high for the same track and preset
    by = {(r["track_id"], r["preset"], r["intensity"]): r for r in rows}
    lo = np.abs(by[("electronic", "balanced", "low")]["eq_gain_db"]).max()
    hi = np.abs(by[("electronic", "balanced", "high")]["eq_gain_db"]).max()
    assert hi > lo


def test_random_draws_are_reproducible(inputs, tmp_path):
    p1 = training.generate([str(inputs / "acoustic.flac")], tmp_path / "a", n_random=2, seed=9, fmt="wav24")
    p2 = training.generate([str(inputs / "acoustic.flac")], tmp_path / "b", n_random=2, seed=9, fmt="wav24")
    t1, t2 = pq.read_table(p1).to_pylist(), pq.read_table(p2).to_pylist()
    keys = ("variant", "preset", "intensity", "target_lufs", "params", "out_integrated_lufs")
    assert [{k: r[k] for k in keys} for r in t1] == [{k: r[k] for k in keys} for r in t2]
    assert (tmp_path / "a" / t1[0]["audio_path"]).read_bytes() == (tmp_path / "b" / t2[0]["audio_path"]).read_bytes()


def test_bad_inputs_become_error_rows_and_bad_presets_fail(inputs, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF garbage")
    p = training.generate([str(tmp_path / "bad.wav")], tmp_path / "o", presets=["balanced"], intensities=["low"])
    (row,) = pq.read_table(p).to_pylist()
    assert row["error"] and row["variant"] == "bad__error"
    with pytest.raises(KeyError, match="no preset 'nope'"):
        training.generate([str(inputs)], tmp_path / "o2", presets=["nope"])
    with pytest.raises(ValueError, match="unknown training column"):
        training_table([{"track_path": "a", "variant": "v", "colour": 1}])
