"""Catalogue jobs on a real local Dask cluster: outputs, failures, album mode, resume, kill and rerun."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from acetate.pipeline.catalogue import batch, cluster, demo, jobs, track
from acetate.pipeline.io import audio, store
from acetate.schemas import registry

GOOD = [f"{s}-01" for s in demo.STYLES]
BAD = ["bad-silent", "bad-corrupt", "bad-empty"]


@pytest.fixture(scope="module")
def handle():
    cfg = cluster.parse_cluster_config(
        {"kind": "local", "local": {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0", "memory_limit": "2GiB"}}
    )
    h = cluster.connect(cfg)
    yield h
    h.close()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    return demo.make_catalogue(root, seconds=3.0, per_style=1, include_bad=True)


def _job(manifest, out, **extra) -> jobs.Job:
    data = {"name": "t", "inputs": {"manifest": str(manifest)}, "output": str(out), "options": {"progress": True}}
    data.update(extra)
    return jobs.parse_job(data)


def _run(job, client, **kw) -> tuple[batch.RunResult, str]:
    buf = io.StringIO()
    res = batch.run_job(job, client, stream=buf, **kw)
    return res, buf.getvalue()


def _ids(out, name, **where) -> list[str]:
    rows = store.read_dataset(out, name).to_pylist()
    return [r["track_id"] for r in rows if all(r[k] == v for k, v in where.items())]


def test_master_job_end_to_end_then_rerun_skips(handle, catalogue, tmp_path):
    out = tmp_path / "out"
    job = _job(catalogue, out)
    res, log = _run(job, handle.client)
    assert (res.tracks, res.done, res.skipped, res.failed) == (8, 5, 0, 3)
    assert res.album_mode and "realtime" in log and "remaining 0" in log
    # masters: one per good track, decodable, at the album's relative loudness
    for tid in GOOD:
        x, fs = audio.decode(out / "masters" / f"{tid}.wav")
        assert fs == 44100 and x.shape == (2, 3 * 44100)
    assert sorted(p.name for p in (out / "masters").iterdir()) == sorted(f"{t}.wav" for t in GOOD)
    # failures: one row per bad file, with the stage and a clear message
    fails = {r["track_id"]: r for r in store.read_dataset(out, "failures").to_pylist()}
    assert set(fails) == set(BAD)
    assert fails["bad-empty"]["stage"] == "decode" and "empty file" in fails["bad-empty"]["message"]
    assert fails["bad-corrupt"]["stage"] == "decode" and fails["bad-corrupt"]["error_type"] == "AudioError"
    assert fails["bad-silent"]["stage"] == "analyse" and "silent" in fails["bad-silent"]["message"]
    assert all(r["attempt"] == 1 for r in fails.values())
    # every dataset reads back with plain pyarrow and the registry's schema + version
    for name in registry.DATASETS:
        parts = store.list_parts(out, name)
        assert parts, name
        for p in parts:
            registry.check(name, pq.read_schema(p))
        assert store.read_dataset(out, name).schema.equals(registry.schema(name), check_metadata=True)
    feats = Counter((t, s) for t, s in zip(_ids(out, "features"), [r["stage"] for r in store.read_dataset(out, "features").to_pylist()]))
    assert feats == Counter({(t, s): 1 for t in GOOD for s in ("input", "output")})
    assert sorted(_ids(out, "presets")) == sorted(GOOD)
    presets = store.read_dataset(out, "presets").to_pylist()
    assert all(json.loads(p["params"])["album_loudness_lufs"] < -14 for p in presets)
    # loudness: input and output per track; album rows; outputs on their (album-relative) targets
    loud = store.read_dataset(out, "loudness").to_pylist()
    tr = {(r["track_id"], r["stage"]): r for r in loud if r["scope"] == "track"}
    assert set(tr) == {(t, s) for t in GOOD for s in ("input", "output")}
    assert all(tr[(t, "output")]["passed"] for t in GOOD)
    gains = [tr[(t, "output")]["integrated_lufs"] - tr[(t, "input")]["integrated_lufs"] for t in GOOD]
    assert max(gains) - min(gains) < 0.2  # one album gain: relative loudness preserved
    album = {r["stage"]: r for r in loud if r["scope"] == "album"}
    assert set(album) == {"input", "output"} and album["output"]["track_id"] is None
    assert abs(album["output"]["integrated_lufs"] - (-14.0)) < 0.5
    assert np.isclose(album["input"]["integrated_lufs"] + np.mean(gains), album["output"]["integrated_lufs"], atol=0.2)
    # runs row
    run_rows = store.read_dataset(out, "runs").to_pylist()
    assert len(run_rows) == 1 and run_rows[0]["status"] == "finished" and run_rows[0]["done"] == 5
    assert run_rows[0]["x_realtime"] > 0 and run_rows[0]["code_version"]

    mtimes = {t: os.stat(out / "masters" / f"{t}.wav").st_mtime_ns for t in GOOD}
    res2, _ = _run(job, handle.client)
    assert (res2.done, res2.skipped, res2.failed) == (0, 5, 3)  # past failures are retried
    assert mtimes == {t: os.stat(out / "masters" / f"{t}.wav").st_mtime_ns for t in GOOD}
    assert Counter(_ids(out, "presets")) == Counter(GOOD)  # no duplicate rows
    fails2 = store.read_dataset(out, "failures").to_pylist()
    assert sorted(r["attempt"] for r in fails2 if r["track_id"] == "bad-empty") == [1, 2]
    assert len(store.read_dataset(out, "runs")) == 2
    assert len([r for r in store.read_dataset(out, "loudness").to_pylist() if r["scope"] == "album"]) == 2


def test_changed_file_or_settings_are_redone(handle, tmp_path):
    cat = demo.make_catalogue(tmp_path / "cat", seconds=2.0, per_style=1, include_bad=False)
    out = tmp_path / "out"
    job = _job(cat, out, mode="analyze", album_mode=False)
    res, _ = _run(job, handle.client, progress=False)
    assert (res.done, res.skipped, res.failed) == (5, 0, 0)
    assert not (out / "masters").exists()  # analyze writes no audio
    # change one file's content
    audio.encode(demo.render_style("pop", 2.0, 44100, seed=7), 44100, cat.parent / "pop-01.flac", "flac24")
    res, _ = _run(job, handle.client, progress=False)
    assert (res.done, res.skipped) == (1, 4)
    # change the settings: every track is redone once
    job2 = _job(cat, out, mode="analyze", album_mode=False, targets={"apple": None})
    res, _ = _run(job2, handle.client, progress=False)
    assert (res.done, res.skipped) == (5, 0)
    assert Counter(_ids(out, "features")) == Counter({t: 1 for t in GOOD})
    assert set(r["target"] for r in store.read_dataset(out, "loudness").to_pylist()) == {"apple"}


def test_cli_run_strict_and_address_cluster(handle, catalogue, tmp_path, capsys):
    from acetate.pipeline import cli

    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(f"kind: address\naddress:\n  address: {handle.scheduler_address}\n")
    job = tmp_path / "job.yaml"
    job.write_text("name: cli\nmode: analyze\nformats: [wav24]\noptions: {progress: false}\n")
    argv = ["run", str(job), "--cluster", str(cfg), "--input", str(catalogue), "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "dashboard:" in text and "3 failed" in text and "Parquet:" in text and str(tmp_path / "o") in text
    assert cli.main(argv + ["--strict"]) == 1
    assert cli.main(["run", str(tmp_path / "missing.yaml")]) == 2


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_killed_worker_mid_job_loses_nothing_and_repeats_nothing(tmp_path):
    """Kill a worker process mid-job: the job completes, no track lost, none done twice; a rerun skips all."""
    from distributed import Client, LocalCluster

    cat = demo.make_catalogue(tmp_path / "cat", seconds=2.0, per_style=3, include_bad=False)
    out = tmp_path / "out"
    ids = [f"{s}-{k:02d}" for k in (1, 2, 3) for s in demo.STYLES]
    job = _job(cat, out, album_mode=False, options={"progress": False, "max_in_flight": 4})
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit="2GiB") as lc,
        Client(lc) as client,
    ):
        pids = _worker_pids(client)
        assert len(pids) == 2
        box: dict = {}
        th = threading.Thread(target=lambda: box.setdefault("res", batch.run_job(job, client, progress=False)))
        th.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            done = [t for t in ids if (track.read_ledger(out, t) or {}).get("status") == "done"]
            if len(done) >= 3:
                break
            time.sleep(0.05)
        snapshot = {t: track.read_ledger(out, t)["finished"] for t in done}
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        th.join(timeout=120)
        assert not th.is_alive()
        res = box["res"]
    assert len(done) < len(ids), "the job finished before the kill: make the test catalogue longer"
    # a track the victim finished but could not report is re-run by Dask and found done: "skipped", not redone
    assert res.done + res.skipped + res.failed == len(ids) and res.failed <= 1 and res.skipped <= 1
    # a task lost with its worker is either re-run by Dask (done) or a 'worker' failure row
    for r in res.failures:
        assert r["stage"] == "worker"
    # tracks finished before the kill were not redone
    for t, fin in snapshot.items():
        assert track.read_ledger(out, t)["finished"] == fin
    # rerun completes the catalogue (if a track was lost) and skips the rest
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as lc, Client(lc) as client:
        res2 = batch.run_job(job, client, progress=False)
    assert res2.failed == 0 and res2.done == res.failed and res2.skipped == len(ids) - res.failed
    for t in ids:
        led = track.read_ledger(out, t)
        assert led["status"] == "done", t
        x, _ = audio.decode(out / "masters" / f"{t}.wav")
        assert x.shape[1] == 2 * 44100
    for name in ("features", "presets", "loudness"):
        got = Counter(_ids(out, name))
        per = 2 if name in ("features", "loudness") else 1
        assert got == Counter({t: per for t in ids}), name
    # no half-written file anywhere, hidden or not: the runs removed what the killed worker left
    leftovers = [p for p in Path(out).rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert leftovers == []


def test_interrupted_run_resumes(handle, tmp_path):
    """Ctrl-C on ``acetate run`` (SIGINT), then the same command again: the catalogue completes."""
    # Enough tracks, one in flight, that the job cannot finish between the poll
    # seeing two done and the signal landing, even on a loaded machine.
    cat = demo.make_catalogue(tmp_path / "cat", seconds=2.0, per_style=8, include_bad=False)
    ids = [f"{s}-{k:02d}" for k in range(1, 9) for s in demo.STYLES]
    out = tmp_path / "out"
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(f"kind: address\naddress:\n  address: {handle.scheduler_address}\n")
    job = tmp_path / "job.yaml"
    job.write_text("name: intr\nmode: master\nalbum_mode: false\noptions: {progress: false, max_in_flight: 1}\n")
    cmd = [sys.executable, "-m", "acetate.pipeline.cli", "run", str(job), "--cluster", str(cfg), "--input", str(cat), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if sum((track.read_ledger(out, t) or {}).get("status") == "done" for t in ids) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    runs_rows = store.read_dataset(out, "runs").to_pylist()
    assert [r["status"] for r in runs_rows] == ["interrupted"]
    done_before = {t for t in ids if (track.read_ledger(out, t) or {}).get("status") == "done"}
    assert 2 <= len(done_before) < len(ids)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # tasks already running when the client stopped may still finish on the workers: they count as done
    import re

    m = re.search(r"(\d+) done, (\d+) already done, 0 failed", proc.stdout)
    assert m, proc.stdout
    assert int(m.group(2)) >= len(done_before) and int(m.group(1)) + int(m.group(2)) == len(ids)
    assert int(m.group(1)) > 0
    assert Counter(_ids(out, "presets")) == Counter(ids)
    assert [r["status"] for r in sorted(store.read_dataset(out, "runs").to_pylist(), key=lambda r: r["started"])] == [
        "interrupted",
        "finished",
    ]


def test_several_targets_forced_preset_and_training_data(handle, tmp_path):
    cat = demo.make_catalogue(tmp_path / "cat", seconds=2.0, per_style=1, include_bad=False)
    out = tmp_path / "out"
    bank_first = __import__("acetate.pipeline.chain.presets", fromlist=["x"]).load_bank(None).names[0]
    job = _job(cat, out, album_mode=False, target=["streaming", "apple"], presets={"preset": bank_first}, options={"progress": False})
    res, _ = _run(job, handle.client)
    assert (res.done, res.failed) == (5, 0)
    for t in GOOD:
        assert (out / "masters" / f"{t}.wav").exists() and (out / "masters" / "apple" / f"{t}.wav").exists()
    loud = [r for r in store.read_dataset(out, "loudness").to_pylist() if r["stage"] == "output"]
    assert {(r["target"], r["target_lufs"]) for r in loud} == {("streaming", -14.0), ("apple", -16.0)}
    assert all(r["passed"] for r in loud)
    pres = store.read_dataset(out, "presets").to_pylist()
    assert len(pres) == 10 and all(p["preset"] == bank_first and p["forced"] for p in pres)

    out2 = tmp_path / "training"
    tjob = _job(
        cat,
        out2,
        mode="training-data",
        album_mode=False,
        options={"progress": False},
        training={"presets": [bank_first], "intensities": ["low"], "format": "flac24"},
    )
    res, _ = _run(tjob, handle.client)
    assert (res.done, res.failed) == (5, 0)
    for t in GOOD:
        table = pq.read_table(out2 / "training" / t / "training.parquet")
        assert table.num_rows == 1
    assert Counter(_ids(out2, "features")) == Counter({t: 1 for t in GOOD})


def test_replaced_by_a_corrupt_file_leaves_no_stale_master(handle, tmp_path):
    cat = demo.make_catalogue(tmp_path / "cat", seconds=2.0, per_style=1, include_bad=False)
    out = tmp_path / "out"
    job = _job(cat, out, album_mode=False)
    res, _ = _run(job, handle.client, progress=False)
    assert res.done == 5 and (out / "masters" / "pop-01.wav").exists()
    (cat.parent / "pop-01.flac").write_bytes(b"fLaC but not really")  # the source goes bad
    res, _ = _run(job, handle.client, progress=False)
    assert (res.done, res.skipped, res.failed) == (0, 4, 1)
    assert not (out / "masters" / "pop-01.wav").exists()  # the old audio is not left looking delivered
    assert "pop-01" in _ids(out, "failures") and "pop-01" not in _ids(out, "presets")


def test_mono_is_measured_as_delivered(handle, tmp_path):
    # A mono track and the same samples in stereo: the same programme after delivery,
    # so the same input loudness (not 3 dB apart) and the same album treatment.
    x = demo.render_style("acoustic", 3.0, 44100, seed=4)[:1]
    audio.encode(x, 44100, tmp_path / "in" / "mono.flac", "flac24")
    audio.encode(np.concatenate([x, x]), 44100, tmp_path / "in" / "stereo.flac", "flac24")
    job = _job(tmp_path / "in", tmp_path / "out", inputs={"paths": [str(tmp_path / "in")]}, album_mode=False)
    res, _ = _run(job, handle.client, progress=False)
    assert res.done == 2
    loud = {(r["track_id"], r["stage"]): r["integrated_lufs"] for r in store.read_dataset(tmp_path / "out", "loudness").to_pylist()}
    assert loud[("mono", "input")] == pytest.approx(loud[("stereo", "input")], abs=1e-6)
    assert loud[("mono", "output")] == pytest.approx(-14.0, abs=0.1)


def test_mono_in_an_album_keeps_its_place(handle, tmp_path):
    # Album phase 1 and phase 2 must measure a mono track the same way (as delivered).
    x = demo.render_style("acoustic", 3.0, 44100, seed=4)
    audio.encode(x[:1], 44100, tmp_path / "in" / "mono.flac", "flac24")
    audio.encode(x, 44100, tmp_path / "in" / "stereo.flac", "flac24")
    manifest = tmp_path / "in" / "m.csv"
    manifest.write_text("track_id,path,album\nmono,mono.flac,A\nstereo,stereo.flac,A\n")
    res, _ = _run(_job(manifest, tmp_path / "out"), handle.client, progress=False)
    assert res.done == 2 and res.album_mode
    loud = {
        (r["track_id"], r["stage"]): r["integrated_lufs"]
        for r in store.read_dataset(tmp_path / "out", "loudness").to_pylist()
        if r["scope"] == "track"
    }
    gain = {t: loud[(t, "output")] - loud[(t, "input")] for t in ("mono", "stereo")}
    assert gain["mono"] == pytest.approx(gain["stereo"], abs=0.2)  # one album gain for both


def test_run_track_hands_the_input_to_its_last_render(tmp_path, monkeypatch):
    """A track with two targets keeps its decoded input for the first render and hands it
    over to the last one, which frees it before its limiter (the memory peak)."""
    import weakref

    from acetate.kernels import limiter as tp_limiter
    from acetate.pipeline.chain import render

    path = tmp_path / "mix.wav"
    audio.encode(demo.render_style("rock", 4.0, 44100, seed=4), 44100, path, "wav24")
    job = jobs.parse_job(
        {"name": "t", "inputs": {"paths": [str(path)]}, "output": str(tmp_path / "out"), "target": ["streaming", "ebu-r128"]}
    )
    settings = dict(job.settings(), preset_bank_hash="test")
    refs, alive = [], []
    decode, limit = audio.decode_programme, tp_limiter.true_peak_limit

    def decoded(p):
        x, fs = decode(p)
        refs.append(weakref.ref(x))
        return x, fs

    def limiter(*a, **k):
        alive.append(refs[-1]() is not None)
        return limit(*a, **k)

    monkeypatch.setattr(audio, "decode_programme", decoded)
    monkeypatch.setattr(render.limiter, "true_peak_limit", limiter)
    spec = jobs.TrackSpec(track_id="mix", path=str(path), targets=["streaming", "ebu-r128"]).to_dict()
    summary = track.run_track(spec, settings, str(tmp_path / "out"), "run-1")
    assert summary["status"] == "done", summary
    assert len(refs) == 1 and alive == [True, False]
