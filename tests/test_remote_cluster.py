"""A master job on a real remote cluster -- a ``dask scheduler`` and two ``dask worker``
processes on loopback -- with one worker SIGKILLed while it is mastering a track.

The job must complete on the worker that is left: every track done exactly once (one
``loudness`` output row and one ``presets`` row per track and target, every ledger
``done``, every master decoding to the programme's length), no failure rows for tracks
that are done, and, once a rerun (which skips everything) completed, no temporary file
(``.*.tmp``) left under ``OUT/masters``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from acetate.pipeline.catalogue import batch, cluster, demo, jobs, track
from acetate.pipeline.io import audio, store

pytestmark = pytest.mark.slow

N_PER_STYLE = 3
IDS = [f"{s}-{k:02d}" for k in range(1, N_PER_STYLE + 1) for s in demo.STYLES]
TARGETS = ["streaming", "apple"]
SECONDS = 2.0

#: One thread per library in every process: two workers and the client share two cores.
_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: {p.args[2:4]} exited with {p.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{what} after {timeout:.0f} s")


@pytest.fixture
def remote(tmp_path, request):
    """(address, {name: worker Popen}, log folder): a scheduler and two single-threaded
    workers without nannies (a killed worker stays dead), all torn down whatever happens.
    ``request.param``: the scheduler's allowed-failures (default Dask's 3)."""
    allowed = getattr(request, "param", None)
    env = dict(_ENV, **({} if allowed is None else {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed)}))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    handles = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        fh = open(logs / f"{name}.log", "wb")
        handles.append(fh)
        p = subprocess.Popen(
            [sys.executable, "-m", *args], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
        )
        procs.append(p)
        return p

    try:
        start(
            [
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            "scheduler",
        )
        _wait(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 30, "scheduler start", procs)
        assert json.loads(sched_file.read_text())["address"] == address
        workers = {}
        for name in ("w1", "w2"):
            workers[name] = start(
                [
                    "distributed.cli.dask_worker",
                    address,
                    "--name",
                    name,
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--memory-limit",
                    "2GiB",
                    "--host",
                    "127.0.0.1",
                    "--local-directory",
                    str(tmp_path / f"{name}-space"),
                ],
                name,
            )
        yield address, workers, logs
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10  # all of them together: a graceful close, then SIGKILL
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)
        for fh in handles:
            fh.close()


def _finish(th: threading.Thread, box: dict, timeout: float, logs: Path):
    """The result of the run in ``th`` (joined within ``timeout``), or the failure with the cluster's logs."""
    th.join(timeout=timeout)
    assert not th.is_alive(), f"the job did not finish in {timeout:.0f} s\n" + _logs(logs)
    assert "exc" not in box, f"{box.get('exc')!r}\n" + _logs(logs)
    return box["res"]


def _start(job: jobs.Job, client, box: dict) -> threading.Thread:
    def run():
        try:
            box["res"] = batch.run_job(job, client, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            box["exc"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _logs(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.iterdir()))


def _job(cat: Path, out: Path) -> jobs.Job:
    return jobs.parse_job(
        {
            "name": "remote-kill",
            "mode": "master",
            "inputs": {"manifest": str(cat)},
            "output": str(out),
            "target": TARGETS,
            "formats": ["wav24"],
            "album_mode": False,
            "options": {"progress": False, "max_in_flight": 2},  # one track per worker at a time: the victim is mid-track
        }
    )


def _run_and_kill(tmp_path: Path, remote) -> dict:
    """Run the job on the remote cluster, SIGKILL the worker mastering a track once one
    track is done, let the job finish, then rerun it on the survivor. Returns what happened."""
    address, workers, logs = remote
    cat = demo.make_catalogue(tmp_path / "cat", seconds=SECONDS, per_style=N_PER_STYLE, include_bad=False)
    out = tmp_path / "out"
    job = _job(cat, out)
    cfg = {"kind": "address", "address": {"address": address, "wait_for_workers": 2, "timeout_s": 30}}
    box: dict = {}
    with cluster.connect(cfg) as h:
        client = h.client
        pids = client.run(os.getpid)  # worker address -> pid
        by_pid = {p.pid: name for name, p in workers.items()}
        assert sorted(by_pid.get(pid, "?") for pid in pids.values()) == ["w1", "w2"], pids

        th = _start(job, client, box)

        # The victim: a worker processing a track whose ledger says it is running, once a
        # first track is done (so the kill lands mid-job, on a track in progress).
        victim: dict = {}

        def mid_track() -> bool:
            if "exc" in box or "res" in box:
                raise AssertionError(f"the job ended before the kill: {box}")
            if not any((track.read_ledger(out, t) or {}).get("status") == "done" for t in IDS):
                return False
            for addr, keys in client.processing().items():
                for k in keys:
                    tid = next((t for t in IDS if f"track-{store.safe_name(t)}-" in str(k)), None)
                    if tid and (track.read_ledger(out, tid) or {}).get("status") == "running":
                        victim.update(addr=addr, pid=pids[addr], track=tid)
                        return True
            return False

        _wait(mid_track, 60, "a worker mastering a track")
        done_at_kill = {t: track.read_ledger(out, t)["finished"] for t in IDS if (track.read_ledger(out, t) or {}).get("status") == "done"}
        name = by_pid[victim["pid"]]
        os.kill(victim["pid"], signal.SIGKILL)
        workers[name].wait(timeout=15)  # reaped: its pid is dead, so its temporaries are stale
        res = _finish(th, box, 120, logs)
        print(f"killed {name} (pid {victim['pid']}) mastering {victim['track']}; done before: {sorted(done_at_kill)}; first run: {res}")
        assert 1 <= len(done_at_kill) < len(IDS) and victim["track"] not in done_at_kill
        assert len(h.workers()) == 1  # the victim stayed dead: the survivor finished the job
        assert res.status == "finished" and res.tracks == len(IDS)
        for t, fin in done_at_kill.items():  # finished before the kill: not mastered again
            assert track.read_ledger(out, t)["finished"] == fin, t
        box2: dict = {}
        res2 = _finish(_start(job, client, box2), box2, 120, logs)  # the rerun, on the survivor
    return {"out": out, "res": res, "res2": res2, "victim": victim, "done_at_kill": done_at_kill}


def _assert_complete(out: Path, logged: tuple = ()) -> None:
    """Every track done exactly once, its masters decoding, no failure rows for done tracks
    but the ``logged`` (track_id, stage, run_id) of attempts that did fail (the table is a
    log: schemas/failures.py), no temporary files under OUT/masters."""
    ledgers = {t: track.read_ledger(out, t) for t in IDS}
    assert all(led and led["status"] == "done" for led in ledgers.values()), {t: (led or {}).get("status") for t, led in ledgers.items()}
    assert sorted(p.stem for p in (out / store.STATE_DIR / "ledger").glob("*.json")) == sorted(store.safe_name(t) for t in IDS)
    for t in IDS:
        expected = [str(out / "masters" / f"{store.safe_name(t)}.wav"), str(out / "masters" / "apple" / f"{store.safe_name(t)}.wav")]
        assert sorted(ledgers[t]["outputs"]) == sorted(expected), ledgers[t]["outputs"]
        for p in expected:
            x, fs = audio.decode(p)
            assert x.shape == (2, int(SECONDS * fs)) and fs == 44100, p
    loud = store.read_dataset(out, "loudness").to_pylist()
    per_target = Counter({(t, g): 1 for t in IDS for g in TARGETS})
    assert Counter((r["track_id"], r["target"]) for r in loud if r["stage"] == "output") == per_target
    assert Counter((r["track_id"], r["target"]) for r in loud if r["stage"] == "input") == per_target
    assert Counter((r["track_id"], r["target"]) for r in store.read_dataset(out, "presets").to_pylist()) == per_target
    done = {t for t, led in ledgers.items() if led["status"] == "done"}
    stale = sorted(
        (r["track_id"], r["stage"], r["run_id"]) for r in store.read_dataset(out, "failures").to_pylist() if r["track_id"] in done
    )
    assert stale == sorted(logged), f"failure rows of tracks that are done: {stale}"
    leftovers = [str(p) for p in (out / "masters").rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    runs = sorted(store.read_dataset(out, "runs").to_pylist(), key=lambda r: r["started"])
    assert [r["status"] for r in runs] == ["finished", "finished"]


def test_master_job_survives_a_worker_killed_mid_track(tmp_path, remote):
    """Dask's default (allowed-failures 3): the victim's track is rescheduled on the
    survivor; the job completes in one run, the rerun skips everything."""
    r = _run_and_kill(tmp_path, remote)
    res, res2 = r["res"], r["res2"]
    # a track the victim finished but could not report is re-run and found done (skipped), not mastered again
    assert res.failed == 0 and res.done + res.skipped == len(IDS) and res.skipped <= 1, res
    assert (track.read_ledger(r["out"], r["victim"]["track"]) or {}).get("status") == "done"
    assert (res2.done, res2.skipped, res2.failed) == (0, len(IDS), 0), res2
    _assert_complete(r["out"])


@pytest.mark.parametrize("remote", [0], indirect=True, ids=["allowed-failures-0"])
def test_a_track_lost_with_its_worker_is_completed_by_the_rerun(tmp_path, remote):
    """A scheduler that gives up on a task at its first dead worker: the victim's track is
    a ``worker`` failure of the first run (its one failure row, kept as the log of that
    attempt), and the rerun masters exactly that track."""
    r = _run_and_kill(tmp_path, remote)
    res, res2, victim = r["res"], r["res2"], r["victim"]
    assert res.failed >= 1 and res.done + res.skipped + res.failed == len(IDS), res
    assert victim["track"] in {f["track_id"] for f in res.failures} and all(f["stage"] == "worker" for f in res.failures), res.failures
    assert (res2.done, res2.skipped, res2.failed) == (res.failed, len(IDS) - res.failed, 0), res2
    _assert_complete(r["out"], logged=tuple((f["track_id"], "worker", res.run_id) for f in res.failures))
