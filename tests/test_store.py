"""Parquet datasets: schemas with versions, atomic part files, readers that skip temporaries."""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from acetate.pipeline.io import files, store
from acetate.schemas import failures, loudness, presets, registry, runs
from acetate.schemas.features import FEATURE_NAMES

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _rows() -> dict[str, pa.Table]:
    fp = {k: 0.5 for k in FEATURE_NAMES}
    fp["sample_rate"], fp["channels"] = 44100.0, 2.0
    return {
        "features": registry.features_dataset_table(
            [
                {"path": "a.wav", "track_id": "a", "stage": "input", **fp},
                {"path": "m/a.wav", "track_id": "a", "stage": "output", "target": "streaming", **fp},
            ],
            run_id="r1",
        ),
        "presets": presets.presets_table(
            [
                {
                    "run_id": "r1",
                    "track_id": "a",
                    "target": "streaming",
                    "preset": "balanced",
                    "forced": False,
                    "distance": 0.3,
                    "runners_up": [("warm", 0.5), {"name": "bright", "distance": 0.7}],
                    "params": {"gain": 1.5, "bands": (1, 2)},
                }
            ]
        ),
        "loudness": loudness.loudness_table(
            [
                {
                    "run_id": "r1",
                    "track_id": "a",
                    "scope": "track",
                    "stage": "output",
                    "target": "streaming",
                    "integrated_lufs": -14.1,
                    "sample_rate": 44100,
                    "channels": 2,
                    "target_lufs": -14.0,
                    "tolerance_lu": 1.0,
                    "passed": True,
                }
            ]
        ),
        "failures": failures.failures_table(
            [
                {
                    "run_id": "r1",
                    "track_id": "b",
                    "path": "b.wav",
                    "stage": "decode",
                    "error_type": "AudioError",
                    "message": "empty file",
                    "attempt": 1,
                    "time": NOW,
                }
            ]
        ),
        "runs": runs.runs_table(
            [
                {
                    "run_id": "r1",
                    "job": "demo",
                    "mode": "master",
                    "config_hash": "abc",
                    "code_version": "0.1.0",
                    "status": "finished",
                    "started": NOW,
                    "ended": NOW,
                    "tracks": 2,
                    "done": 1,
                    "skipped": 0,
                    "failed": 1,
                }
            ]
        ),
    }


def test_registry_has_versions_for_every_dataset():
    assert set(registry.DATASETS) == {"features", "presets", "loudness", "failures", "runs"}
    for name, schema in registry.DATASETS.items():
        assert schema.metadata[b"acetate.schema"] in (name.encode(), b"features")
        assert registry.version(name) == ("1.1" if name == "presets" else "1.0")
    with pytest.raises(KeyError, match="'nope'"):
        registry.schema("nope")


def test_write_and_read_every_dataset(tmp_path):
    for name, table in _rows().items():
        path = store.write_part(tmp_path, name, table, "part-1")
        assert os.path.basename(path) == "part-1.parquet"
        # a reader with plain pyarrow sees the schema and its version metadata
        on_disk = pq.read_table(path)
        registry.check(name, on_disk.schema)
        assert on_disk.schema.metadata[b"acetate.schema_version"] == registry.version(name).encode()
        back = store.read_dataset(tmp_path, name)
        assert back.schema.equals(registry.schema(name), check_metadata=True)
        assert back.num_rows == table.num_rows
    p = store.read_dataset(tmp_path, "presets").to_pylist()[0]
    assert p["runners_up"] == [{"name": "warm", "distance": 0.5}, {"name": "bright", "distance": 0.7}]
    assert '"gain": 1.5' in p["params"]
    f = store.read_dataset(tmp_path, "features").to_pylist()
    assert [r["stage"] for r in f] == ["input", "output"] and f[1]["target"] == "streaming"


def test_rewriting_a_part_replaces_its_rows(tmp_path):
    t = _rows()["loudness"]
    store.write_part(tmp_path, "loudness", t, "a")
    store.write_part(tmp_path, "loudness", t, "a")
    store.write_part(tmp_path, "loudness", t, "b")
    assert store.read_dataset(tmp_path, "loudness").num_rows == 2
    assert store.remove_part(tmp_path, "loudness", "b") and not store.remove_part(tmp_path, "loudness", "b")
    assert store.read_dataset(tmp_path, "loudness").num_rows == 1


def test_empty_dataset_reads_as_empty_table(tmp_path):
    t = store.read_dataset(tmp_path, "failures")
    assert t.num_rows == 0 and t.schema.equals(registry.schema("failures"))


def test_temporaries_and_crashed_writes_are_invisible(tmp_path):
    store.write_part(tmp_path, "runs", _rows()["runs"], "r1")
    d = tmp_path / "runs"
    (d / ".r2.parquet.abc.tmp").write_bytes(b"PAR1 half written")  # a crashed writer's leftover
    assert store.read_dataset(tmp_path, "runs").num_rows == 1

    def boom(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(d / "r3.parquet", boom)
    assert not (d / "r3.parquet").exists()
    assert sorted(p.name for p in d.iterdir()) == [".r2.parquet.abc.tmp", "r1.parquet"]


def test_schema_mismatch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="columns differ"):
        store.write_part(tmp_path, "runs", pa.table({"x": [1]}), "bad")
    with pytest.raises(ValueError, match="bad part name"):
        store.write_part(tmp_path, "runs", _rows()["runs"], ".hidden")
    d = tmp_path / "failures"
    d.mkdir()
    pq.write_table(pa.table({"track_id": ["x"]}), d / "old.parquet")
    with pytest.raises(ValueError, match="old.parquet"):
        store.read_dataset(tmp_path, "failures")


def test_row_builders_name_bad_columns_and_values():
    with pytest.raises(ValueError, match="'colour'"):
        loudness.loudness_table([{"scope": "track", "stage": "input", "run_id": "r", "colour": 1}])
    with pytest.raises(ValueError, match="'middle'"):
        loudness.loudness_table([{"scope": "track", "stage": "middle", "run_id": "r"}])
    with pytest.raises(ValueError, match="'mixing'"):
        failures.failures_table([{"stage": "mixing"}])
    with pytest.raises(ValueError, match="runners_up"):
        presets.presets_table([{"run_id": "r", "track_id": "a", "preset": "p", "forced": False, "runners_up": ["x"]}])
    with pytest.raises(ValueError, match="stage"):
        registry.features_dataset_table([{"path": "a", "stage": "later"}], run_id="r")


def test_safe_name_is_unique_and_file_safe():
    assert store.safe_name("pop-01") == "pop-01"
    a, b = store.safe_name("a/b"), store.safe_name("a_b")
    assert a != b and "/" not in a
    assert not store.safe_name(".hidden").startswith(".")
    assert store.safe_name("Ünïcode track") != store.safe_name("_n_code track")
    with pytest.raises(ValueError):
        store.safe_name("")


def test_json_records_are_atomic(tmp_path):
    p = tmp_path / "x" / "rec.json"
    store.write_json(p, {"a": 1, "nan": math.nan})
    assert store.read_json(p)["a"] == 1
    p.write_text("{broken")
    assert store.read_json(p) is None and store.read_json(tmp_path / "none.json") is None


def test_reports_and_ledgers_get_the_usual_file_mode(tmp_path):
    """Parquet parts and ledgers are readable like any file the process creates (0666 & ~umask),
    not mkstemp's 0600: the rest of a label's team reads the reports."""
    from acetate.pipeline.io import files

    part = store.write_part(tmp_path, "runs", _rows()["runs"], "r1")
    ledger = store.write_json(tmp_path / ".acetate" / "ledger" / "t.json", {"status": "done"})
    for p in (part, ledger):
        assert os.stat(p).st_mode & 0o777 == 0o666 & ~files._UMASK, p
    assert 0o666 & ~files._UMASK != 0o600  # the check means something under this umask


def test_presets_dataset_reads_its_1_0_parts_beside_1_1_parts(tmp_path):
    """A rerun into an output folder written by the previous version: old parts read, new columns null."""
    new = presets.presets_table(
        [
            {
                "run_id": "r2", "track_id": "b", "target": "main", "preset": "blend(a:0.6,b:0.4)", "forced": False, "distance": 1.0,
                "runners_up": [("b", 1.2)], "params": {}, "confidence": 0.7, "nearest": "a", "blend": [("a", 0.6), ("b", 0.4)],
            }
        ]
    )  # fmt: skip
    old_fields = [f for f in presets.PRESETS_SCHEMA if f.name not in ("confidence", "nearest", "blend")]
    old_schema = pa.schema(old_fields, metadata={b"acetate.schema": b"presets", b"acetate.schema_version": b"1.0"})
    old = pa.Table.from_pylist(
        [
            {
                "run_id": "r1",
                "track_id": "a",
                "target": "main",
                "preset": "warm",
                "forced": False,
                "distance": 0.5,
                "runners_up": [],
                "params": "{}",
            }
        ],
        schema=old_schema,
    )
    d = store.dataset_dir(tmp_path, "presets")
    d.mkdir(parents=True)
    pq.write_table(old, d / "part-a.parquet")
    store.write_part(tmp_path, "presets", new, "part-b")
    t = store.read_dataset(tmp_path, "presets")
    assert t.schema.metadata[b"acetate.schema_version"] == b"1.1"
    rows = t.to_pylist()
    assert [r["track_id"] for r in rows] == ["a", "b"]
    assert rows[0]["confidence"] is None and rows[0]["blend"] is None and rows[0]["preset"] == "warm"
    assert rows[1]["confidence"] == 0.7 and rows[1]["blend"] == [{"name": "a", "weight": 0.6}, {"name": "b", "weight": 0.4}]
    # a newer major version, or an old part with an unknown column, is still refused by name
    bad = old.append_column("mystery", pa.array([1]))
    pq.write_table(bad.replace_schema_metadata(old_schema.metadata), d / "part-c.parquet")
    with pytest.raises(ValueError, match="part-c.parquet.*mystery"):
        store.read_dataset(tmp_path, "presets")


def test_a_1_0_bank_file_loads_with_the_1_1_defaults(tmp_path):
    import json

    from acetate.pipeline.chain import presets as chain_presets

    path = chain_presets.save_bank(chain_presets.load_bank(), tmp_path / "bank.json")
    doc = json.loads(open(path).read())
    doc["acetate.schema_version"] = "1.0"
    for r in doc["presets"]:
        for k in ("eq_mode", "correction_mid_db", "content"):
            del r[k]
    open(path, "w").write(json.dumps(doc))
    bank = chain_presets.load_bank(path)
    assert all(p.eq_mode == "target" and p.correction_mid_db == () for p in bank.presets)
    assert all(p.content == "music" for p in bank.presets)  # 1.0 had no content: nothing is kept off music
    assert bank.names == chain_presets.load_bank().names
