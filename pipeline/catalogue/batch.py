"""A job's tracks as tasks on a Dask client: resume, album gains, progress, the runs row.

:func:`run_job` is what ``acetate run`` calls.  It

1. resolves the job's tracks (:func:`acetate.pipeline.catalogue.jobs.resolve_tracks`);
2. in album mode (``mode: master`` and albums in the inputs) runs the first
   phase, :func:`acetate.pipeline.catalogue.track.measure_track`, for the album tracks
   and pools each album's gating blocks into its input loudness;
3. submits :func:`acetate.pipeline.catalogue.track.run_track` for every track, at most
   ``max_in_flight`` at a time (``client.submit`` + ``as_completed``), each
   task keyed by the run and track; workers read and write the shared paths,
   only small summaries come back, and the client lets go of each future as
   soon as its summary is in (so the scheduler holds nothing big or old);
4. records lost tasks (a worker that died more often than the scheduler's
   ``allowed-failures``) as ``failures`` rows with stage ``worker``;
5. writes the album loudness rows and the ``runs`` row.

Resume is per track (see :mod:`acetate.pipeline.catalogue.track`): rerunning a job
skips what is done with the same key, redoes what changed and retries what
failed.  Ctrl-C cancels the outstanding tasks, writes the ``runs`` row with
status ``interrupted`` and re-raises.

The client writes only small files under the output root (album rows, worker
failures, the runs row), so it must see the output root too.
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from acetate.pipeline.catalogue import jobs, track
from acetate.pipeline.io import store

__all__ = ["RunResult", "Progress", "run_job", "album_loudness", "code_version", "new_run_id"]


@dataclass
class RunResult:
    """What a run did (also written as its ``runs`` row)."""

    run_id: str
    job: str
    out_root: str
    status: str
    tracks: int
    done: int
    skipped: int
    failed: int
    audio_seconds: float
    wall_seconds: float
    failures: list[dict[str, Any]] = field(default_factory=list)
    album_mode: bool = False

    @property
    def x_realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def exit_code(self, strict: bool) -> int:
        """0, or 1 when ``strict`` and any track failed."""
        return 1 if strict and self.failed else 0


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def code_version() -> str:
    """The package version, plus the git commit of the source tree when it is a checkout."""
    try:
        from importlib.metadata import version

        v = version("acetate")
    except Exception:
        v = "unknown"
    head = Path(__file__).resolve().parents[2] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        v += f"+g{ref[:10]}"
    except OSError:
        pass
    return v


class Progress:
    """A one-line progress bar: done / failed / remaining and x-realtime so far.

    On a terminal the line is redrawn in place; otherwise a line is printed at
    most every ``every_s`` seconds and at the end.
    """

    def __init__(self, total: int, stream: TextIO | None = None, *, enabled: bool = True, width: int = 24, every_s: float = 5.0) -> None:
        self.total, self.width, self.every_s = total, width, every_s
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.skipped = self.failed = 0
        self.audio_s = 0.0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, status: str, audio_s: float = 0.0) -> None:
        if status == "done":
            self.done += 1
            self.audio_s += audio_s
        elif status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        self.draw()

    def line(self) -> str:
        n = self.done + self.skipped + self.failed
        frac = n / self.total if self.total else 1.0
        fill = int(round(frac * self.width))
        wall = time.perf_counter() - self.t0
        xrt = self.audio_s / wall if wall > 0 else 0.0
        return (
            f"[{'#' * fill}{'.' * (self.width - fill)}] {n}/{self.total}  done {self.done}  skipped {self.skipped}  "
            f"failed {self.failed}  remaining {self.total - n}  {xrt:.1f}x realtime  {wall:.0f}s"
        )

    def draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self._last >= self.every_s:
            self._last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()


def album_loudness(blocks: list[np.ndarray]) -> float | None:
    """Album integrated loudness (LUFS) from the pooled gating-block loudness of its tracks (BS.1770 gating)."""
    from acetate.kernels import loudness

    pooled = np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks]) if blocks else np.empty(0)
    if pooled.size == 0:
        return None
    v = loudness.gated_loudness(loudness.power_from_loudness(pooled))
    return float(v) if math.isfinite(v) else None


def _file_hash(path: str | None) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    return track.content_hash(path)


def _worker_failure(out_root: str, run_id: str, spec: dict[str, Any], exc: BaseException, n: int) -> dict[str, Any]:
    """The ``worker`` failure row of a task lost with its worker (the next run retries the track)."""
    from acetate.pipeline.stages import StageFailure, error_message

    why = f"{error_message(exc)} (the worker running this track died or the task was lost; the next run retries it)"
    return track.write_failure(out_root, run_id, spec, StageFailure("worker", type(exc).__name__, why), n, None, part_suffix=f"w{n}")


def _album_rows(
    run_id: str, album: str, stage: str, lufs: float | None, duration: float, n_tracks: int, job: jobs.Job, targets: list[str]
) -> list[dict]:
    rows = []
    for t in targets:
        ts = job.targets[t]
        rows.append(
            {
                "run_id": run_id,
                "track_id": None,
                "album": album,
                "scope": "album",
                "stage": stage,
                "target": t,
                "path": None,
                "integrated_lufs": lufs,
                "duration_s": duration,
                "channels": None,
                "target_lufs": ts["integrated_lufs"],
                "target_true_peak_dbtp": ts["true_peak_dbtp"],
                "tolerance_lu": ts["tolerance_lu"],
                "delta_lu": None if lufs is None else lufs - ts["integrated_lufs"],
                "passed": None if lufs is None else abs(lufs - ts["integrated_lufs"]) <= ts["tolerance_lu"],
            }
        )
    return rows


def _stream_tasks(
    client: Any,
    fn: Callable,
    items: list[dict[str, Any]],
    args: tuple,
    *,
    run_id: str,
    prefix: str,
    max_in_flight: int,
    resources: dict | None,
    on_result: Callable[[dict, Any], None],
    on_error: Callable[[dict, BaseException], None],
    retries: int = 0,
) -> None:
    """Submit ``fn(item, *args)`` for each item, at most ``max_in_flight`` at once; call back as they finish.

    ``retries``: how often Dask re-runs a task that erred (a worker that died under it).
    """
    from distributed import as_completed

    it = iter(items)
    pending: dict[Any, dict[str, Any]] = {}

    def submit_next() -> Any | None:
        try:
            item = next(it)
        except StopIteration:
            return None
        key = f"{prefix}-{store.safe_name(item['track_id'])}-{run_id}"
        fut = client.submit(fn, item, *args, key=key, pure=False, resources=resources, retries=retries)
        pending[fut] = item
        return fut

    first = [f for f in (submit_next() for _ in range(max_in_flight)) if f is not None]
    ac = as_completed(first)
    try:
        for fut in ac:
            item = pending.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # KilledWorker, CancelledError, a worker without acetate ...
                on_error(item, exc)
            else:
                on_result(item, res)
            fut.release()
            nxt = submit_next()
            if nxt is not None:
                ac.add(nxt)
    except BaseException:
        client.cancel(list(pending))
        raise


def run_job(
    job: jobs.Job,
    client: Any,
    *,
    run_id: str | None = None,
    progress: bool | None = None,
    stream: TextIO | None = None,
    cluster_desc: str = "",
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``job`` on a connected Dask ``client`` and return what happened.

    Parameters
    ----------
    job : Job
        Validated, overrides applied.
    client : distributed.Client
    run_id : str, optional
        Default: a UTC timestamp plus a random suffix.
    progress : bool, optional
        Show the progress bar (default: the job's ``options.progress``).
    stream : file, optional
        Where the progress bar and messages go (default stderr).
    cluster_desc : str
        Recorded in the runs row.
    log : callable, optional
        Receives one-line messages (default: print to ``stream``).
    """
    stream = stream or sys.stderr
    say = log or (lambda m: print(m, file=stream, flush=True))
    run_id = run_id or new_run_id()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    try:
        out_root = str(store.check_output_root(job.output, "output"))
    except ValueError as exc:
        raise jobs.JobError(str(exc)) from None
    lock = store.output_lock(out_root, run_id=run_id)
    try:
        held = lock.__enter__()  # one run per output root; refused before any work
    except store.OutputBusy as exc:
        raise jobs.JobError(str(exc)) from None
    try:
        if held.get("unlocked"):
            say(f"warning: {held['unlocked']}")
        if held.get("stale"):
            st = held["stale"]
            say(
                f"note: took over the lock of an earlier run that is no longer running (run {st.get('run_id')}, pid {st.get('pid')} on {st.get('host')})"
            )
        return _run_locked(job, client, run_id, started, t0, out_root, stream, say, progress, cluster_desc)
    finally:
        lock.__exit__(None, None, None)


def _state_folders(out_root: str) -> list[str]:
    """The folders of an output root that runs write temporaries into."""
    from acetate.schemas import registry

    return [os.path.join(out_root, d) for d in ("masters", "training", store.STATE_DIR, *registry.DATASETS)]


def _run_locked(
    job: jobs.Job,
    client: Any,
    run_id: str,
    started: datetime,
    t0: float,
    out_root: str,
    stream: TextIO,
    say: Callable[[str], None],
    progress: bool | None,
    cluster_desc: str,
) -> RunResult:
    """:func:`run_job` with the output root locked for this run."""
    from acetate.pipeline.io import files

    gone = files.remove_stale_temporaries(_state_folders(out_root))
    if gone:
        say(f"removed {len(gone)} temporary file(s) an interrupted run left behind")
    specs, album_on = jobs.resolve_tracks(job)
    jobs.record_track_ids(job, specs)
    album_on = album_on and job.mode == "master"
    settings = job.settings()
    from acetate.pipeline.chain import presets

    settings["preset_bank_hash"] = _file_hash(settings.get("preset_bank") or str(presets.DEFAULT_BANK_PATH))
    if settings.get("reference"):  # what the references are, not where: a changed file redoes its tracks
        from acetate.pipeline.chain.reference import parse_reference

        settings["reference_hash"] = [f"{_file_hash(parse_reference(r)[0])}:{parse_reference(r)[1]:g}" for r in settings["reference"]]
    info = client.scheduler_info().get("workers", {})
    threads = sum(int(w.get("nthreads", 1)) for w in info.values()) or 1
    max_in_flight = int(job.options.get("max_in_flight") or 2 * threads)
    retries = int(job.options.get("retries", 2))
    resources = {"GPU": 1} if settings["device"] == "gpu" else None
    if resources and not any((w.get("resources") or {}).get("GPU", 0) > 0 for w in info.values()):
        raise jobs.JobError(
            "options.device is 'gpu' but no worker declares the resource GPU: use cluster kind 'gpu', "
            "start GPU workers with --resources GPU=<nthreads>, or set options.device to auto"
        )
    show = job.options.get("progress", True) if progress is None else progress

    counts = {"done": 0, "skipped": 0, "failed": 0}
    audio_s = 0.0
    failures: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    status = "error"
    bar = Progress(len(specs), stream, enabled=show)
    albums: dict[str, list[str]] = defaultdict(list)
    album_in: dict[str, tuple[float | None, float]] = {}
    try:
        spec_dicts = [s.to_dict() for s in specs]
        # Phase 1: album loudness.
        if album_on:
            for s in spec_dicts:
                if s.get("album"):
                    albums[s["album"]].append(s["track_id"])
            album_specs = [s for s in spec_dicts if s.get("album")]
            say(f"album mode: measuring {len(album_specs)} track(s) of {len(albums)} album(s)")
            measured: dict[str, dict[str, Any]] = {}
            _stream_tasks(
                client,
                track.measure_track,
                album_specs,
                (settings, out_root),
                run_id=run_id,
                prefix="measure",
                max_in_flight=max_in_flight,
                resources=resources,
                retries=retries,
                on_result=lambda item, res: measured.__setitem__(item["track_id"], res),
                on_error=lambda item, exc: None,  # phase 2 retries the track and records what fails
            )
            for album, ids in albums.items():
                ok = [measured[i] for i in ids if i in measured and measured[i]["error"] is None]
                lost = [i for i in ids if i not in measured]  # tasks lost with a worker, not bad files
                lufs = album_loudness([m["blocks"] for m in ok])
                album_in[album] = (lufs, sum(m["duration_s"] for m in ok))
                note = None
                if lost:
                    note = f"album loudness from {len(ok)} of {len(ids)} tracks: {', '.join(lost)} could not be measured (rerun to include them)"
                    say(f"warning: album {album!r}: {note}")
                if lufs is not None:
                    for s in spec_dicts:
                        if s.get("album") == album:
                            s["album_loudness_lufs"] = round(lufs, 3)
                            if note:
                                s["album_note"] = note
        # Phase 2: every track.
        attempts: dict[str, int] = defaultdict(int)

        def on_result(item: dict, res: dict) -> None:
            nonlocal audio_s
            summaries[item["track_id"]] = res
            counts[res["status"]] += 1
            if res["status"] == "done":
                audio_s += float(res.get("duration_s") or 0.0)
            if res["status"] == "failed":
                failures.append({k: res.get(k) for k in ("track_id", "stage", "error_type", "message", "attempt")})
            bar.update(res["status"], float(res.get("duration_s") or 0.0))

        def on_error(item: dict, exc: BaseException) -> None:
            attempts[item["track_id"]] += 1
            row = _worker_failure(out_root, run_id, item, exc, attempts[item["track_id"]])
            counts["failed"] += 1
            failures.append({k: row[k] for k in ("track_id", "stage", "error_type", "message", "attempt")})
            bar.update("failed")

        _stream_tasks(
            client,
            track.run_track,
            spec_dicts,
            (settings, out_root, run_id),
            run_id=run_id,
            prefix="track",
            max_in_flight=max_in_flight,
            resources=resources,
            retries=retries,
            on_result=on_result,
            on_error=on_error,
        )
        bar.draw(final=True)
        files.remove_stale_temporaries(_state_folders(out_root))  # those of workers that died during this run
        # Album rows: input (phase 1) and output (pooled master blocks).
        if album_on:
            for album, ids in albums.items():
                targets = list(dict.fromkeys(t for s in spec_dicts if s.get("album") == album for t in s["targets"]))
                lufs_in, dur_in = album_in.get(album, (None, 0.0))
                rows = _album_rows(run_id, album, "input", lufs_in, dur_in, len(ids), job, targets)
                for t in targets:
                    got = [summaries[i] for i in ids if i in summaries and summaries[i]["status"] in ("done", "skipped")]
                    blocks = [g["output_blocks"][t] for g in got if t in (g.get("output_blocks") or {})]
                    lufs_out = album_loudness(blocks)
                    rows += _album_rows(
                        run_id, album, "output", lufs_out, sum(float(g.get("duration_s") or 0) for g in got), len(got), job, [t]
                    )
                from acetate.schemas import loudness as lschema

                store.write_part(out_root, "loudness", lschema.loudness_table(rows), f"album--{store.safe_name(album)}")
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        bar.draw(final=True)
        say("interrupted: finished tracks are kept; run the job again to complete it")
        raise
    finally:
        wall = time.perf_counter() - t0
        result = RunResult(
            run_id=run_id,
            job=job.name,
            out_root=out_root,
            status=status,
            tracks=len(specs),
            done=counts["done"],
            skipped=counts["skipped"],
            failed=counts["failed"],
            audio_seconds=audio_s,
            wall_seconds=wall,
            failures=failures,
            album_mode=album_on,
        )
        _write_runs_row(job, result, started, cluster_desc, len(info), threads)
    return result


def _write_runs_row(job: jobs.Job, r: RunResult, started: datetime, cluster_desc: str, workers: int, threads: int) -> None:
    from acetate.schemas import runs

    row = {
        "run_id": r.run_id,
        "job": r.job,
        "job_path": job.path,
        "mode": job.mode,
        "config_hash": jobs.config_hash(job),
        "code_version": code_version(),
        "cluster": cluster_desc,
        "status": r.status,
        "started": started,
        "ended": datetime.now(timezone.utc),
        "tracks": r.tracks,
        "done": r.done,
        "skipped": r.skipped,
        "failed": r.failed,
        "audio_seconds": r.audio_seconds,
        "wall_seconds": r.wall_seconds,
        "x_realtime": r.x_realtime,
        "workers": workers,
        "threads": threads,
    }
    try:
        store.write_part(r.out_root, "runs", runs.runs_table([row]), r.run_id)
    except Exception as exc:  # noqa: BLE001 - never mask the run's own outcome
        print(f"warning: could not write the runs row: {type(exc).__name__}: {exc}", file=sys.stderr)
