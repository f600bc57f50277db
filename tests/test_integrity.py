"""Integrity: no track shadowed by another, hung on or silently mis-reported; bad environments refused up front.

Each test builds its own signals. The numbered defects of the integrity issue each
have a test here (1: ids, 2: stems, 3: non-regular files, 5: temporaries, 6: the
report of the delivered file, 7: master vs ledger, 8: two runs on one folder); low
sample rates are in ``test_rates.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acetate.kernels import loudness
from acetate.pipeline import cli, mastering
from acetate.pipeline.catalogue import batch, cluster, jobs, track
from acetate.pipeline.chain import render
from acetate.pipeline.io import audio, files, store


def _mix(seconds: float, fs: int = 44100, seed: int = 0) -> np.ndarray:
    """A quiet, dynamic stereo mix (tones + noise, a level swell): something to master."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    f0 = 110.0 * (1 + seed % 7)
    tone = 0.2 * np.sin(2 * np.pi * f0 * t) + 0.05 * np.sin(2 * np.pi * 3.1 * f0 * t)
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t) ** 2
    x = np.stack([tone + 0.03 * rng.standard_normal(n), 0.9 * tone + 0.03 * rng.standard_normal(n)]) * swell
    return x.astype(np.float32)


def _write(path: Path, seconds: float, fs: int = 44100, seed: int = 0, subtype: str = "PCM_24") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _mix(seconds, fs, seed).T, fs, subtype=subtype)
    return path


def _manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["track_id", "path"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def client():
    c = cluster.connect(
        cluster.parse_cluster_config(
            {"kind": "local", "local": {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0", "memory_limit": "2GiB"}}
        )
    )
    yield c.client
    c.close()


def _job(out: Path, **inputs) -> jobs.Job:
    return jobs.parse_job({"name": "t", "inputs": inputs, "output": str(out), "album_mode": False, "options": {"progress": False}})


def _run(job: jobs.Job, client, timeout: float = 240.0) -> tuple[batch.RunResult, str]:
    """Run in a thread with a deadline: a run that hangs fails the test instead of the suite."""
    buf = io.StringIO()
    box: dict = {}

    def go() -> None:
        try:
            box["res"] = batch.run_job(job, client, stream=buf, progress=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["exc"] = exc

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(timeout)
    assert not th.is_alive(), f"the run hung (over {timeout} s)"
    if "exc" in box:
        raise box["exc"]
    return box["res"], buf.getvalue()


def _rows(out: Path, name: str) -> list[dict]:
    return store.read_dataset(out, name).to_pylist()


# --- 1. track ids ---------------------------------------------------------------------

ADVERSARIAL_IDS = [
    "x/y",
    "x_y-8c9048ad",  # what x/y sanitised to before
    store.safe_name("x/y"),  # what x/y sanitises to now
    "Track",
    "track",  # case only: one file on macOS and Windows
    unicodedata.normalize("NFC", "Café"),
    unicodedata.normalize("NFD", "Café"),  # the same name, decomposed
    "trailing.",
    "trailing ",  # a manifest strips it: the track is "trailing"
    "CON",
    "aux.wav",
    "é" * 127 + "x",  # 255 bytes of UTF-8
]


def test_safe_names_of_distinct_ids_never_meet():
    ids = ADVERSARIAL_IDS + ["trailing", "trailing..", "con.x", "Con", "a" * 200, "a" * 201]
    names = [store.safe_name(t) for t in ids]
    keys = [store.name_key(n) for n in names]
    assert len(set(keys)) == len(ids)  # distinct even where case and Unicode fold
    for n in names:
        assert len(n.encode()) <= 120 and n.isascii() and not n.startswith((".", "_")) and not n.endswith((".", " "))
        assert n.split(".")[0].lower() not in {"con", "aux", "nul", "prn"}
    assert store.safe_name("pop-01") == "pop-01"  # plain ids stay readable


def test_plan_refuses_two_ids_that_would_share_a_file(tmp_path, monkeypatch):
    a = _write(tmp_path / "a.wav", 1.0)
    m = _manifest(tmp_path / "m.csv", [("one", str(a)), ("two", str(a))])
    monkeypatch.setattr(store, "safe_name", lambda tid: "same")
    with pytest.raises(jobs.JobError, match="tracks 'one' and 'two' would share the output name 'same'"):
        jobs.resolve_tracks(_job(tmp_path / "out", manifest=str(m)))


def test_adversarial_ids_each_master_their_own_audio(client, tmp_path):
    """Every id masters its own file (lengths differ per track), once; a rerun skips them all."""
    rows, lengths = [], {}
    for k, tid in enumerate(ADVERSARIAL_IDS):
        seconds = 1.0 + 0.05 * k
        rows.append((tid, str(_write(tmp_path / "in" / f"t{k}.wav", seconds, seed=k))))
        lengths[tid.strip()] = int(round(seconds * 44100))
    out = tmp_path / "out"
    job = _job(out, manifest=str(_manifest(tmp_path / "m.csv", rows)))
    res, _ = _run(job, client)
    assert (res.done, res.failed) == (len(rows), 0), res.failures
    masters = set()
    for tid, n in lengths.items():
        led = track.read_ledger(out, tid)
        assert led["status"] == "done" and led["track_id"] == tid
        (path,) = led["outputs"]
        x, _ = audio.decode(path)
        assert x.shape[1] == n, tid  # its own audio, not another id's
        masters.add(store.name_key(Path(path).name))
    assert len(masters) == len(rows)
    assert sorted(r["track_id"] for r in _rows(out, "presets")) == sorted(t.strip() for t in ADVERSARIAL_IDS)
    res2, _ = _run(job, client)
    assert (res2.skipped, res2.done, res2.failed) == (len(rows), 0, 0)


# --- 2. one stem, two inputs --------------------------------------------------------------


def test_master_cli_gives_inputs_with_one_stem_distinct_outputs(tmp_path, capsys):
    a = _write(tmp_path / "d1" / "song.wav", 1.0, seed=1)
    b = tmp_path / "d2" / "song.flac"
    b.parent.mkdir()
    sf.write(str(b), _mix(1.3, seed=2).T, 44100, subtype="PCM_16")
    c = _write(tmp_path / "d2" / "Song.wav", 1.6, seed=3)  # case only
    out = tmp_path / "out"
    code = cli.main(["master", str(a), str(b), str(c), "--out", str(out), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0, rows
    paths = [r["outputs"][0]["path"] for r in rows]
    assert len({store.name_key(Path(p).name) for p in paths}) == 3
    for r, n in zip(rows, (1.0, 1.3, 1.6)):
        x, _ = audio.decode(r["outputs"][0]["path"])
        assert x.shape[1] == int(round(n * 44100))
    assert sorted(os.listdir(out)) == sorted([cli.MASTER_REPORT, *(Path(p).name for p in paths)])


def test_folder_with_one_stem_twice_runs_both(client, tmp_path):
    cat = tmp_path / "cat"
    _write(cat / "song.wav", 1.0, seed=1)
    sf.write(str(cat / "song.flac"), _mix(1.4, seed=2).T, 44100, subtype="PCM_16")
    _write(cat / "other.wav", 1.2, seed=3)
    out = tmp_path / "out"
    res, _ = _run(_job(out, paths=[str(cat)]), client)
    assert (res.done, res.failed) == (3, 0)
    ids = sorted(r["track_id"] for r in _rows(out, "presets"))
    assert ids == ["other", "song.flac", "song.wav"]
    assert audio.decode(track.read_ledger(out, "song.flac")["outputs"][0])[0].shape[1] == int(round(1.4 * 44100))


# --- 3. not regular files ---------------------------------------------------------------


def test_fifo_symlink_loop_and_directory_are_rows_not_hangs(client, tmp_path):
    good = _write(tmp_path / "in" / "good.wav", 1.0)
    fifo = tmp_path / "in" / "pipe.wav"
    os.mkfifo(fifo)
    loop = tmp_path / "in" / "loop.wav"
    os.symlink(loop, loop)
    folder = tmp_path / "in" / "folder.wav"
    folder.mkdir()
    dangling = tmp_path / "in" / "dangling.wav"
    os.symlink(tmp_path / "nowhere.wav", dangling)
    m = _manifest(
        tmp_path / "m.csv",
        [("good", str(good)), ("fifo", str(fifo)), ("loop", str(loop)), ("dir", str(folder)), ("dangling", str(dangling))],
    )
    out = tmp_path / "out"
    res, _ = _run(_job(out, manifest=str(m)), client, timeout=120)
    assert (res.done, res.failed) == (1, 4)
    by_id = {r["track_id"]: r for r in _rows(out, "failures")}
    assert {r["stage"] for r in by_id.values()} == {"input"}
    assert "FIFO" in by_id["fifo"]["message"]
    assert "symbolic link loop" in by_id["loop"]["message"]
    assert "a directory" in by_id["dir"]["message"]
    assert "dangling symbolic link" in by_id["dangling"]["message"]
    # in a folder too: the FIFO and the loop are listed (rows), not skipped, and nothing blocks
    out2 = tmp_path / "out2"
    res2, _ = _run(_job(out2, paths=[str(tmp_path / "in")]), client, timeout=120)
    assert res2.done == 1 and {f["track_id"] for f in res2.failures} == {"pipe", "loop", "dangling"}


def test_master_cli_refuses_a_fifo_without_opening_it(tmp_path, capsys):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    code = cli.main(["master", str(fifo), "--out", str(tmp_path / "o"), "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert code == 1 and row["stage"] == "input" and "FIFO" in row["error"]


# --- 5. temporaries of killed writers ------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    d = tmp_path / "masters"
    d.mkdir()
    host = files._HOST
    dead = d / f".a.wav.acetate-{host}-{_dead_pid()}-abc123de.tmp"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = d / f".b.wav.acetate-{host}-{sleeper.pid}-abc123de.tmp"
        other_host_new = d / f".c.wav.acetate-0badf00d-{sleeper.pid}-abc123de.tmp"
        other_host_old = d / ".d.wav.acetate-0badf00d-1-abc123de.tmp"
        users = [d / ".notes.tmp", d / "mine.tmp", d / ".e.wav.acetate-xyz-1-a.tmp"]
        for p in (dead, live, other_host_new, other_host_old, *users):
            p.write_bytes(b"partial")
        old = time.time() - 7200
        os.utime(other_host_old, (old, old))
        removed = files.remove_stale_temporaries([tmp_path])
        assert sorted(removed) == sorted([str(dead), str(other_host_old)])
        for p in (live, other_host_new, *users):
            assert p.exists(), p
    finally:
        sleeper.kill()
        sleeper.wait()


def test_rerun_removes_temporaries_a_killed_worker_left(client, tmp_path):
    a = _write(tmp_path / "a.wav", 1.0)
    out = tmp_path / "out"
    junk = out / "masters" / f".a.wav.acetate-{files._HOST}-{_dead_pid()}-zz9_zz9z.tmp"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"half a master")
    res, log = _run(_job(out, manifest=str(_manifest(tmp_path / "m.csv", [("a", str(a))]))), client)
    assert res.done == 1 and not junk.exists() and "removed 1 temporary file" in log
    assert not [p for p in out.rglob("*.tmp")]


# --- 6. the report says what the delivered file is --------------------------------------------


def test_every_report_gives_each_delivered_file_as_decoded(client, tmp_path, capsys):
    src = _write(tmp_path / "in.wav", 6.0, seed=4)
    out = tmp_path / "o"
    code = cli.main(["master", str(src), "--out", str(out), "--format", "WAV24,mp3", "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert code == 0, row
    for o in row["outputs"]:
        x, fs = audio.decode(o["path"])
        lufs = loudness.integrated_loudness(x, fs)
        assert abs(lufs - o["integrated_lufs"]) < 0.01, o  # the file's own figure, not the master's
        assert o["target_met"] == (abs(lufs + 14.0) <= 0.1)
        assert o["ceiling_met"] is True and o["true_peak_dbtp"] <= -1.0
    assert row["target_met"] == all(o["target_met"] for o in row["outputs"])
    # the text report prints each file's own figures
    cli.main(["master", str(src), "--out", str(tmp_path / "o2"), "--format", "mp3"])
    text = capsys.readouterr().out
    (mp3,) = [o for o in row["outputs"] if o["format"] == "mp3"]
    x, fs = audio.decode(tmp_path / "o2" / "in.mp3")
    assert f"{loudness.integrated_loudness(x, fs):.2f} LUFS" in text
    # and the batch's loudness rows: one per delivered file, with its figures
    job = jobs.parse_job(
        {
            "name": "t",
            "inputs": {"paths": [str(src)]},
            "output": str(tmp_path / "b"),
            "formats": ["wav24", "mp3"],
            "options": {"progress": False},
        }
    )
    res, _ = _run(job, client)
    assert res.done == 1
    outs = [r for r in _rows(tmp_path / "b", "loudness") if r["stage"] == "output"]
    assert sorted(Path(r["path"]).suffix for r in outs) == [".mp3", ".wav"]
    for r in outs:
        x, fs = audio.decode(r["path"])
        lufs = loudness.integrated_loudness(x, fs)
        assert abs(lufs - r["integrated_lufs"]) < 0.01
        assert r["passed"] == (abs(lufs + 14.0) <= 0.1 and r["true_peak_dbtp"] <= -1.0)


# --- 7. a master and its ledger agree ---------------------------------------------------------


def test_master_beside_a_running_ledger_is_redone_or_removed(client, tmp_path):
    src = _write(tmp_path / "a.wav", 1.0, seed=5)
    out = tmp_path / "out"
    job = _job(out, manifest=str(_manifest(tmp_path / "m.csv", [("a", str(src))])))
    assert _run(job, client)[0].done == 1
    led = track.read_ledger(out, "a")
    master = Path(led["outputs"][0])
    first = master.read_bytes()
    # a client killed between the master and the ledger: the master is complete, the ledger says running
    store.write_json(
        track.ledger_path(out, "a"),
        {**{k: led[k] for k in ("track_id", "key", "run_id")}, "status": "running", "attempts": 1, "planned": led["outputs"]},
    )
    res, _ = _run(job, client)
    assert (res.done, res.skipped) == (1, 0)  # redone, never adopted unverified
    led2 = track.read_ledger(out, "a")
    assert led2["status"] == "done" and led2["attempts"] == 2 and master.read_bytes() == first  # deterministic
    # the same, but the input has become unreadable: no master is left beside the failed ledger
    store.write_json(
        track.ledger_path(out, "a"),
        {**{k: led[k] for k in ("track_id", "key", "run_id")}, "status": "running", "attempts": 1, "planned": led["outputs"]},
    )
    src.write_bytes(b"RIFF\x00\x00not audio")
    res, _ = _run(job, client)
    assert res.failed == 1 and not master.exists() and track.read_ledger(out, "a")["status"] == "failed"


# --- 8. one run per output folder ------------------------------------------------------------


def test_second_run_on_one_output_folder_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from acetate.pipeline.io import store\n"
            "with store.output_lock(sys.argv[1], run_id='first-run'):\n    print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        src = _write(tmp_path / "a.wav", 1.0)
        proc = subprocess.run(
            [sys.executable, "-m", "acetate.pipeline.cli", "run", "demo", "--input", str(src), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2
        msg = proc.stderr.strip()
        assert (
            msg.startswith("acetate run: the output folder")
            and f"pid {holder.pid}" in msg
            and "first-run" in msg
            and "Traceback" not in msg
        )
        assert not (out / "masters").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale, and the next run takes it over
    with store.output_lock(out, run_id="second") as rec:
        assert rec["stale"]["run_id"] == "first-run" and rec["stale"]["pid"] == holder.pid
    with store.output_lock(out) as rec:
        assert rec["stale"] is None  # released cleanly: nothing stale


# --- bad environments: refused before any work, in one sentence ----------------------------------


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    src = _write(tmp_path / "a.wav", 1.0)
    f = tmp_path / "taken"
    f.write_text("a file")
    assert cli.main(["master", str(src), "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"acetate master: --out {f} is an existing file, not a folder"
    assert cli.main(["run", "demo", "--input", str(src), "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"acetate run: --out {f} is an existing file, not a folder"


def test_unwritable_output_folder_is_refused(tmp_path, capsys):
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:  # root passes permission bits: make it immutable instead
        if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a read-only folder here (root, no chattr)")
    else:
        d.chmod(0o500)
    try:
        src = _write(tmp_path / "a.wav", 1.0)
        assert cli.main(["master", str(src), "--out", str(d)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"acetate master: --out {d}: cannot write there: ") and err.count("\n") == 1
    finally:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
        d.chmod(0o700)


def test_levels_presets_and_names_are_checked_before_decoding(tmp_path, capsys, monkeypatch):
    src = _write(tmp_path / "a.wav", 1.0)
    decoded = []
    real = audio.decode
    monkeypatch.setattr(audio, "decode", lambda *a, **k: decoded.append(a) or real(*a, **k))
    out = str(tmp_path / "o")
    cases = [
        (["--target", "5"], "target +5.0 LUFS is outside -60..0 LUFS"),
        (["--target", "-3"], "pass --allow-unsafe-levels if you mean it"),
        (["--target", "-14", "--ceiling", "0.5"], "ceiling +0.50 dBTP is above 0 dBTP"),
        (["--preset", "nosuch"], "no preset 'nosuch' in bank"),
        (["--format", "ogg"], "unknown format(s) ['ogg']; choose from wav24, wav16, wav32f, flac24, flac16, mp3"),
        (["--target", "loudest"], "unknown target 'loudest'"),
    ]
    for extra, needle in cases:
        assert cli.main(["master", str(src), "--out", out, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, (extra, err)
    assert decoded == []  # nothing was decoded for any of them
    assert not os.path.exists(out) or not os.listdir(out)
    # names are matched without regard to case; the bank's names are listed on a miss
    from acetate.pipeline.chain import presets

    name = presets.load_bank(None).names[0]
    cli.main(["master", str(src), "--out", out, "--preset", name.upper(), "--target", "Streaming", "--format", "FLAC24", "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert row["preset"] == name and row["outputs"][0]["path"].endswith(".flac")
    cli.main(["master", str(src), "--out", out, "--preset", "nosuch"])
    assert name in capsys.readouterr().err


def test_help_shows_every_format_and_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["master", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fmt in audio.FORMATS:
        assert fmt in text
    for default in ("(default streaming)", "(default auto)", "(default medium)", "(default wav24)", "(default cpu)"):
        assert default in text


def test_run_of_a_missing_job_file_says_file_not_found(capsys):
    assert cli.main(["run", "nosuch.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("acetate run: file not found: nosuch.yaml") and "demo" in err and "nightly" in err


def test_dashboard_is_named_only_where_it_can_serve(monkeypatch):
    import importlib.util

    class H:
        kind, dashboard_link = "local", "http://127.0.0.1:8787/status"

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bokeh" else real(name, *a))
    assert cli._dashboard_line(H()) == "not available (the dashboard needs bokeh: pip install 'bokeh>=3.1')"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bokeh" else real(name, *a))
    assert cli._dashboard_line(H()) == H.dashboard_link


# --- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (root only); resized with ``remount(size)``."""
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(d)], check=True)

    try:
        yield d, remount
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_full_disk_says_so_keeps_what_is_done_and_resumes(client, tmp_path, small_disk):
    out, remount = small_disk
    rows = [(f"t{k}", str(_write(tmp_path / "in" / f"t{k}.wav", 3.0, seed=k))) for k in range(6)]  # ~0.8 MB a master
    job = jobs.parse_job(
        {
            "name": "t",
            "inputs": {"manifest": str(_manifest(tmp_path / "m.csv", rows))},
            "output": str(out),
            "album_mode": False,
            "options": {"progress": False, "max_in_flight": 1},
        }
    )
    res, _ = _run(job, client)
    assert 1 <= res.done < len(rows) and res.done + res.failed == len(rows)
    msgs = [f["message"] for f in res.failures]
    assert any(f"no space left on device while writing {out}" in m for m in msgs), msgs
    assert not any("System error" in m for m in msgs)
    done = [t for t, _ in rows if (track.read_ledger(out, t) or {}).get("status") == "done"]
    assert len(done) == res.done
    remount("64m")  # space is back
    res2, _ = _run(job, client)
    assert (res2.skipped, res2.done, res2.failed) == (res.done, len(rows) - res.done, 0)
    for t, _ in rows:
        assert audio.decode(track.read_ledger(out, t)["outputs"][0])[0].shape[1] == 3 * 44100
    assert not [p for p in out.rglob("*.tmp")]


# --- all of it at once ----------------------------------------------------------------------


def test_awkward_folder_masters_every_good_track_and_one_row_per_bad_one(client, tmp_path):
    """Colliding ids, one stem twice, a FIFO, a link loop, 8 and 192 kHz, a 0-byte file, a
    truncated FLAC and a read-only sibling, in one folder: every good track is mastered,
    every bad one has one clear row, and the counts add up to the inputs."""
    cat = tmp_path / "cat"
    good = {
        "x/y.wav": _write(cat / "x" / "y.wav", 1.0, seed=1),
        "x__y.wav": _write(cat / "x__y.wav", 1.1, seed=2),  # 'x/y' and 'x__y' meet as ids
        "Track.wav": _write(cat / "Track.wav", 1.2, seed=3),
        "track.wav": _write(cat / "track.wav", 1.3, seed=4),  # case only
        "song.wav": _write(cat / "song.wav", 1.4, seed=5),
        "lo.wav": _write(cat / "lo.wav", 2.0, fs=8000, seed=7),
        "hi.wav": _write(cat / "hi.wav", 1.0, fs=192000, seed=8),
        "readonly.wav": _write(cat / "readonly.wav", 1.0, seed=9),
    }
    sf.write(str(cat / "song.flac"), _mix(1.5, seed=6).T, 44100, subtype="PCM_16")  # one stem, two inputs
    good["song.flac"] = cat / "song.flac"
    os.chmod(good["readonly.wav"], 0o444)
    bad = {"pipe.wav": "FIFO", "loop.wav": "symbolic link loop", "empty.wav": "empty file", "cut.flac": ""}
    os.mkfifo(cat / "pipe.wav")
    os.symlink(cat / "loop.wav", cat / "loop.wav")
    (cat / "empty.wav").write_bytes(b"")
    sf.write(str(tmp_path / "whole.flac"), _mix(3.0, seed=10).T, 44100, subtype="PCM_16")
    (cat / "cut.flac").write_bytes((tmp_path / "whole.flac").read_bytes()[:3000])  # truncated mid-stream
    out = tmp_path / "out"
    res, _ = _run(_job(out, paths=[str(cat)]), client)
    n_inputs = len(good) + len(bad)
    assert res.tracks == n_inputs and res.done + res.skipped + res.failed == n_inputs
    assert res.failed == len(bad), res.failures
    failures = store.read_dataset(out, "failures").to_pylist()
    assert len(failures) == len(bad)  # one row each
    by_path = {Path(f["path"]).name: f for f in failures}
    assert sorted(by_path) == sorted(bad)
    for name, needle in bad.items():
        assert needle in by_path[name]["message"] and by_path[name]["message"].strip(), by_path[name]
    masters = {}
    for r in store.read_dataset(out, "loudness").to_pylist():
        if r["stage"] == "output":
            assert r["passed"], r  # on target, under the ceiling, at every rate
            masters[r["track_id"]] = r["path"]
    assert len(masters) == len(good) and len({store.name_key(Path(p).name) for p in masters.values()}) == len(good)
    inputs = {r["track_id"]: Path(r["path"]) for r in store.read_dataset(out, "features").to_pylist() if r["stage"] == "input"}
    for tid, master in masters.items():  # each master is its own input's audio (length and rate)
        src = sf.info(str(inputs[tid]))
        got = sf.info(master)
        assert (got.samplerate, got.frames) == (src.samplerate, src.frames), tid


def test_an_output_folder_inside_the_input_folder_is_not_an_input(client, tmp_path, capsys):
    cat = tmp_path / "music"
    _write(cat / "a.wav", 1.0)
    out = cat / "mastered"
    job = _job(out, paths=[str(cat)])
    assert _run(job, client)[0].done == 1
    res, _ = _run(job, client)  # its own master is not a new track
    assert (res.tracks, res.skipped) == (1, 1)
    assert cli.main(["master", str(cat), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "left out 1 file(s) under the output folder" in cap.err and cap.out.count("ok ") == 1


@pytest.mark.parametrize("fs, delivered", [(96000, 48000), (88200, 44100), (12000, 12000)])
def test_mp3_is_delivered_at_a_rate_it_can_hold_and_keeps_the_ceiling(tmp_path, fs, delivered):
    src = _write(tmp_path / "in.wav", 4.0, fs=fs, seed=11)
    row = mastering.master_file(
        str(src), tmp_path / "o", render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0), formats=["wav24", "mp3"]
    )
    assert "error" not in row, row
    wav, mp3 = row["outputs"]
    assert sf.info(wav["path"]).samplerate == fs  # the master keeps its rate
    x, got = audio.decode(mp3["path"])
    assert got == delivered
    assert (delivered == fs) or any(f"mp3: delivered at {delivered} Hz" in n for n in row["notes"])
    from acetate.kernels import truepeak

    tp = float(truepeak.to_db(np.max(truepeak.true_peak(x, got, oversample=16))))
    assert tp <= -1.0 and mp3["ceiling_met"] is True and abs(tp - mp3["true_peak_dbtp"]) < 1e-6
    assert mp3["target_met"] == (abs(loudness.integrated_loudness(x, got) + 14.0) <= 0.1)


def test_analyze_and_training_data_refuse_an_unusable_out_before_any_work(tmp_path, capsys):
    src = _write(tmp_path / "a.wav", 1.0)
    (tmp_path / "d").mkdir()
    assert cli.main(["analyze", str(src), "--out", str(tmp_path / "d")]) == 2
    assert "is a folder; give the Parquet file's path" in capsys.readouterr().err
    assert cli.main(["training-data", str(src), "--out", str(src)]) == 2
    assert capsys.readouterr().err.strip() == f"acetate training-data: --out {src} is an existing file, not a folder"


def test_loudness_and_analyze_refuse_a_fifo_without_opening_it(tmp_path, capsys):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    assert cli.main(["loudness", str(fifo), "--json"]) == 1
    (row,) = json.loads(capsys.readouterr().out)
    assert "not a regular file: a FIFO" in row["error"]
    assert cli.main(["analyze", str(fifo), "--out", str(tmp_path / "f.parquet")]) == 1
    assert "not a regular file: a FIFO" in capsys.readouterr().out


# --- found by review: a done track's delivery is never lost to a bad rerun ----------------------


def test_a_done_track_keeps_its_masters_when_its_input_is_gone_or_the_disk_is_full(client, tmp_path, monkeypatch):
    src = _write(tmp_path / "in" / "a.wav", 1.0)
    out = tmp_path / "out"
    job = _job(out, manifest=str(_manifest(tmp_path / "m.csv", [("a", str(src))])))
    assert _run(job, client)[0].done == 1
    led = track.read_ledger(out, "a")
    master = Path(led["outputs"][0])
    os.rename(src.parent, tmp_path / "away")  # the source share is not mounted tonight
    res, _ = _run(job, client)
    assert res.failed == 1 and res.failures[0]["stage"] == "input"
    assert master.exists() and track.read_ledger(out, "a") == led  # last night's delivery stands
    os.rename(tmp_path / "away", src.parent)
    res, _ = _run(job, client)
    assert res.skipped == 1  # and is still recognised as done


def test_a_copied_output_folder_never_deletes_the_original_masters(client, tmp_path):
    import shutil

    src = _write(tmp_path / "a.wav", 1.0)
    a, b = tmp_path / "outA", tmp_path / "outB"
    m = _manifest(tmp_path / "m.csv", [("a", str(src))])
    assert _run(_job(a, manifest=str(m)), client)[0].done == 1
    shutil.copytree(a, b, symlinks=True)
    job_b = jobs.parse_job(
        {"name": "t", "inputs": {"manifest": str(m)}, "output": str(b), "formats": ["wav16"], "options": {"progress": False}}
    )
    assert _run(job_b, client)[0].done == 1  # other settings: redone in B
    assert (a / "masters" / "a.wav").exists() and (b / "masters" / "a.wav").exists()


def test_an_output_folder_holding_the_inputs_keeps_them_as_inputs(client, tmp_path, capsys):
    lib = tmp_path / "lib"
    _write(lib / "album" / "s1.wav", 1.0, seed=1)
    _write(lib / "album" / "s2.wav", 1.1, seed=2)
    res, _ = _run(_job(lib, paths=[str(lib / "album")]), client)
    assert (res.tracks, res.done) == (2, 2)
    assert cli.main(["master", str(lib / "album" / "s1.wav"), str(lib / "album" / "s2.wav"), "--out", str(lib), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    # and a master never overwrites its own input
    assert cli.main(["master", str(lib / "album" / "s1.wav"), "--out", str(lib / "album")]) == 2
    assert "would overwrite it" in capsys.readouterr().err


def test_a_failure_after_the_masters_leaves_no_master_beside_its_ledger(tmp_path, monkeypatch):
    src = _write(tmp_path / "a.wav", 1.0)
    out = tmp_path / "out"
    job = jobs.parse_job({"name": "t", "inputs": {"paths": [str(src)]}, "output": str(out)})
    settings = dict(job.settings(), preset_bank_hash="test")
    real = store.write_json

    def failing(path, obj):
        if isinstance(obj, dict) and obj.get("status") == "done":
            raise OSError(5, "Input/output error")
        return real(path, obj)

    monkeypatch.setattr(store, "write_json", failing)
    spec = jobs.TrackSpec(track_id="a", path=str(src), targets=("streaming",)).to_dict()
    summary = track.run_track(spec, settings, str(out), "run-1")
    assert summary["status"] == "failed" and summary["stage"] == "write"
    assert not list((out / "masters").glob("*.wav")) and track.read_ledger(out, "a")["status"] == "failed"
    assert not (out / "loudness").exists() or not list((out / "loudness").glob("*.parquet"))


def test_another_thread_is_another_run_for_the_lock(tmp_path):
    out = tmp_path / "out"
    got: list = []
    with store.output_lock(out, run_id="first"):
        th = threading.Thread(target=lambda: got.append(_try_lock(out)))
        th.start()
        th.join(10)
    assert got and "in use by run first" in got[0]


def _try_lock(out) -> str:
    try:
        with store.output_lock(out, run_id="second"):
            return "held"
    except store.OutputBusy as exc:
        return str(exc)


def test_mp3_between_mpeg_rates_is_delivered_at_the_next_one_up(tmp_path):
    src = _write(tmp_path / "in.wav", 2.0, fs=37800, seed=3)
    row = mastering.master_file(str(src), tmp_path / "o", render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0), formats=["mp3"])
    assert "error" not in row, row
    assert audio.decode(row["outputs"][0]["path"])[1] == 44100 and row["outputs"][0]["ceiling_met"]


def test_a_nightly_folder_keeps_each_files_id_when_a_sibling_with_its_stem_arrives(client, tmp_path):
    inc = tmp_path / "incoming"
    _write(inc / "song.wav", 1.0, seed=1)
    out = tmp_path / "out"
    job = _job(out, paths=[str(inc)])
    assert _run(job, client)[0].done == 1  # night 1: "song"
    sf.write(str(inc / "song.flac"), _mix(1.2, seed=2).T, 44100, subtype="PCM_16")
    res, _ = _run(job, client)  # night 2: song.wav is still "song", the newcomer is "song.flac"
    assert (res.skipped, res.done) == (1, 1)
    assert sorted(p.name for p in (out / "masters").iterdir()) == ["song.flac.wav", "song.wav"]
    assert audio.decode(track.read_ledger(out, "song.flac")["outputs"][0])[0].shape[1] == int(round(1.2 * 44100))


def test_a_task_of_an_interrupted_run_writes_nothing_into_a_rerun_s_folder(tmp_path):
    """Ctrl-C leaves tasks running on a shared cluster; once a rerun holds the folder they stop."""
    src = _write(tmp_path / "a.wav", 1.0)
    out = tmp_path / "out"
    job = jobs.parse_job({"name": "t", "inputs": {"paths": [str(src)]}, "output": str(out)})
    settings = dict(job.settings(), preset_bank_hash="test")
    spec = jobs.TrackSpec(track_id="a", path=str(src), targets=("streaming",)).to_dict()
    with store.output_lock(out, run_id="rerun"):
        summary = track.run_track(spec, settings, str(out), "interrupted")
        assert summary["status"] == "failed" and "superseded by run rerun" in summary["message"]
        assert track.read_ledger(out, "a") is None and not (out / "masters").exists() and not (out / "failures").exists()
        assert track.run_track(spec, settings, str(out), "rerun")["status"] == "done"  # the holder's own tasks run
