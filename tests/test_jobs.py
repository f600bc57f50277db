"""Job files: validation (unknown keys named), defaults, overrides, manifests, folders and globs."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from acetate.pipeline.catalogue import jobs


def _write_manifest(path, rows, cols=("track_id", "path", "album")):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(cols))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("name", ["demo", "remaster-catalogue", "nightly"])
def test_shipped_jobs_load(name):
    job = jobs.load_job(jobs.builtin_job_path(name))
    assert job.name == name
    assert job.mode in jobs.MODES
    assert job.target and all(t in job.targets for t in job.target)
    assert jobs.load_job(name).name == name  # a bare name finds the built-in job


def test_defaults_fill_in():
    job = jobs.parse_job({"inputs": {"paths": ["x"]}}, default_name="mine")
    assert job.name == "mine" and job.mode == "master"
    assert job.target == ["streaming"] and job.targets["streaming"]["integrated_lufs"] == -14.0
    assert job.formats == ["wav24"] and job.album_mode == "auto"
    assert job.options["strict"] is False and job.options["device"] == "auto"


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"colour": "blue"}, "'colour'"),
        ({"inputs": {"folder": "x"}}, "'folder'"),
        ({"options": {"retry": 3}}, "'retry'"),
        ({"presets": {"bnak": "x"}}, "'bnak'"),
        ({"targets": {"loud": {"integrated_lufs": -9, "ceiling": -1}}}, "'ceiling'"),
        ({"inputs": {"demo": {"tracks": 3}}}, "'tracks'"),
        ({"mode": "mastering"}, "'mastering'"),
        ({"formats": ["ogg"]}, "'ogg'"),
        ({"formats": ["wav24", "wav16"]}, "share a file extension"),
        ({"target": "nowhere"}, "'nowhere'"),
        ({"targets": {"x": {"integrated_lufs": "loud"}}}, "targets.x.integrated_lufs"),
        ({"targets": {"x": {"integrated_lufs": -14, "true_peak_dbtp": 1}}}, "targets.x: ceiling +1.00 dBTP is above 0 dBTP"),
        ({"targets": {"x": {"integrated_lufs": 5}}}, "targets.x: target +5.0 LUFS is outside -60..0 LUFS"),
        ({"targets": {"x": {"integrated_lufs": -3}}}, "set options.allow_unsafe_levels: true"),
        (
            {"targets": {"x": {"integrated_lufs": -3}}, "options": {"allow_unsafe_levels": "yes"}},
            "allow_unsafe_levels must be true or false",
        ),
        ({"options": {"device": "tpu"}}, "'tpu'"),
        ({"options": {"retries": -1}}, "retries"),
        ({"album_mode": "sometimes"}, "'sometimes'"),
        ({"presets": {"intensity": "max"}}, "'max'"),
        ({"inputs": {"paths": ["a"], "manifest": "m.csv"}}, "not ['paths', 'manifest']"),
    ],
)
def test_invalid_jobs_name_the_problem(data, needle):
    with pytest.raises(jobs.JobError) as err:
        jobs.parse_job(data)
    assert needle in str(err.value)


def test_load_job_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(jobs.JobError, match="not valid YAML"):
        jobs.load_job(bad)
    with pytest.raises(jobs.JobError, match="file not found: .*missing.yaml .*built-in jobs: demo, nightly"):
        jobs.load_job(tmp_path / "missing.yaml")
    with pytest.raises(jobs.JobError, match=r"^file not found: nosuch.yaml \(built-in jobs: .*remaster-catalogue"):
        jobs.load_job("nosuch.yaml")  # looks like a file name: never "no built-in job named"
    with pytest.raises(jobs.JobError, match="no built-in job named 'nope'; built-in jobs: demo"):
        jobs.load_job("nope")
    with pytest.raises(jobs.JobError, match="not a regular file: a directory"):
        jobs.load_job(tmp_path)


def test_overrides_replace_inputs_output_strict(tmp_path):
    job = jobs.load_job("nightly")
    j2 = jobs.apply_overrides(job, input=str(tmp_path / "m.parquet"), out=str(tmp_path / "o"), strict=False)
    assert j2.inputs == {"manifest": str(tmp_path / "m.parquet")}
    assert j2.output == str(tmp_path / "o") and j2.options["strict"] is False
    j3 = jobs.apply_overrides(job, input=str(tmp_path))
    assert j3.inputs == {"paths": [str(tmp_path)]}
    assert job.inputs == {"paths": ["incoming"]}  # the original is untouched
    assert jobs.config_hash(j2) != jobs.config_hash(job)


def test_manifest_csv_relative_paths_targets_and_albums(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    m = _write_manifest(
        tmp_path / "manifest.csv",
        [
            {"track_id": "t1", "path": "a.wav", "album": "A", "target": "", "extra": "ignored"},
            {"track_id": "t2", "path": "/abs/b.flac", "album": "", "target": "streaming;apple", "extra": ""},
        ],
        cols=("track_id", "path", "album", "target", "extra"),
    )
    job = jobs.parse_job({"inputs": {"manifest": str(m)}, "targets": {"streaming": None}})
    specs, album = jobs.resolve_tracks(job)
    assert album is True
    assert specs[0].path == str(tmp_path / "a.wav") and specs[0].album == "A" and specs[0].targets == ("streaming",)
    assert specs[1].path == "/abs/b.flac" and specs[1].album is None and specs[1].targets == ("streaming", "apple")
    assert "apple" in job.targets  # a built-in target named by a row joins the job
    off = jobs.parse_job({"inputs": {"manifest": str(m)}, "album_mode": False})
    assert jobs.resolve_tracks(off)[1] is False


def test_manifest_parquet(tmp_path):
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"track_id": ["x", "y"], "path": ["x.wav", "y.wav"], "isrc": ["GBAAA0000001", None]}), m)
    rows = jobs.read_manifest(m)
    assert [r["track_id"] for r in rows] == ["x", "y"]
    assert rows[0]["isrc"] == "GBAAA0000001" and rows[1]["isrc"] is None and rows[0]["album"] is None


def test_manifest_errors(tmp_path):
    with pytest.raises(jobs.JobError, match="'path'"):
        jobs.read_manifest(_write_manifest(tmp_path / "a.csv", [{"track_id": "x"}], cols=("track_id",)))
    with pytest.raises(jobs.JobError, match="duplicate track_id 'x'"):
        jobs.read_manifest(
            _write_manifest(tmp_path / "b.csv", [{"track_id": "x", "path": "1"}, {"track_id": "x", "path": "2"}], cols=("track_id", "path"))
        )
    with pytest.raises(jobs.JobError, match="row 2: empty path"):
        jobs.read_manifest(_write_manifest(tmp_path / "c.csv", [{"track_id": "x", "path": ""}], cols=("track_id", "path")))
    m = _write_manifest(tmp_path / "d.csv", [{"track_id": "x", "path": "1", "target": "moon"}], cols=("track_id", "path", "target"))
    with pytest.raises(jobs.JobError, match="'moon'"):
        jobs.resolve_tracks(jobs.parse_job({"inputs": {"manifest": str(m)}}))


def test_folders_and_globs(tmp_path):
    (tmp_path / "cat" / "disc1").mkdir(parents=True)
    for p in ("cat/one.wav", "cat/disc1/two.flac", "cat/notes.txt", "cat/.hidden.wav"):
        (tmp_path / p).write_bytes(b"x")
    job = jobs.parse_job({"inputs": {"paths": [str(tmp_path / "cat")]}})
    specs, album = jobs.resolve_tracks(job)
    assert sorted(s.track_id for s in specs) == ["disc1__two", "one"] and album is False
    job = jobs.parse_job({"inputs": {"paths": [str(tmp_path / "cat" / "**" / "*.flac")]}})
    assert [s.track_id for s in jobs.resolve_tracks(job)[0]] == ["two"]
    with pytest.raises(jobs.JobError, match="matches anything"):
        jobs.resolve_tracks(jobs.parse_job({"inputs": {"paths": [str(tmp_path / "nothing")]}}))
    with pytest.raises(jobs.JobError, match="no inputs"):
        jobs.resolve_tracks(jobs.parse_job({}))


def test_job_settings_are_jsonable_and_yaml_roundtrip(tmp_path):
    job = jobs.load_job("remaster-catalogue")
    import json

    json.dumps(job.settings())
    p = tmp_path / "j.yaml"
    p.write_text(yaml.safe_dump(job.raw))
    assert jobs.load_job(p).settings() == job.settings()
