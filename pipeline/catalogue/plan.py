"""Know before you run: what a job would do to each track, and where an output folder stands.

:func:`plan_job` is ``acetate run --dry-run``: for every track of the job it says
whether a run would master it (``new``), ``skip`` it (done with the same key),
``redo`` it (the file, the settings or the delivered files changed, and which),
``retry`` it (it failed last time) or ``refuse`` it (its header says decoding it
would fail, and why). It reads headers, the ledger and the measure cache, and hashes
the inputs (the key of a track is its content hash and its settings' hash, as the
run computes them: :func:`acetate.pipeline.catalogue.track.settings_hash`), but it
decodes no audio, writes no master and leaves the ledger as it was.

:func:`folder_status` is ``acetate status OUT``: counts of the ledger by status, the
latest failures by stage, the last run, and (where that run's job file is still
there) what a rerun would do.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from acetate.pipeline.catalogue import jobs
from acetate.pipeline.io import store

__all__ = ["PlanRow", "Plan", "ACTIONS", "run_settings", "plan_job", "FolderStatus", "folder_status"]

#: What a run would do to a track, in the order a summary lists them.
ACTIONS = ("new", "redo", "retry", "skip", "refuse")


@dataclass
class PlanRow:
    """One track of a dry run: ``action`` (one of :data:`ACTIONS`) and why."""

    track_id: str
    path: str
    action: str
    reason: str
    album: str | None = None
    duration_s: float | None = None  # from the header (None where it cannot be read)
    outputs: list[str] = field(default_factory=list)  # masters a run would write (or has written, for skip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """A dry run of a job: its rows, and the time a run would take at the last run's pace."""

    job: str
    mode: str
    out_root: str
    rows: list[PlanRow]
    x_realtime: float | None  # the last finished run's pace, None when there is none

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.action for r in self.rows)
        return {a: c.get(a, 0) for a in ACTIONS}

    @property
    def work_seconds(self) -> float:
        """Audio a run would process (new, redo, retry), in seconds."""
        return float(sum(r.duration_s or 0.0 for r in self.rows if r.action in ("new", "redo", "retry")))

    @property
    def estimated_wall_s(self) -> float | None:
        return self.work_seconds / self.x_realtime if self.x_realtime else None

    def summary_lines(self) -> list[str]:
        c = self.counts
        lines = [
            f"dry run of job {self.job!r} ({self.mode}) into {self.out_root}: {len(self.rows)} tracks: "
            + ", ".join(f"{c[a]} {a}" for a in ACTIONS)
        ]
        est = self.estimated_wall_s
        pace = (
            f"about {_duration(est)} at the last run's {self.x_realtime:.0f}x realtime"
            if est is not None
            else "no earlier run to estimate the time from"
        )
        lines.append(f"{_duration(self.work_seconds)} of audio to process; {pace}")
        return lines


def _duration(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def run_settings(job: jobs.Job) -> dict[str, Any]:
    """The settings a run hands its workers: :meth:`Job.settings` plus the content hashes of the
    preset bank and the references (a changed file redoes its tracks, a moved one does not)."""
    from acetate.pipeline.catalogue import track
    from acetate.pipeline.chain import presets

    settings = job.settings()
    bank = settings.get("preset_bank") or str(presets.DEFAULT_BANK_PATH)
    settings["preset_bank_hash"] = track.content_hash(bank) if os.path.isfile(bank) else None
    if settings.get("reference"):
        from acetate.pipeline.chain.reference import parse_reference

        refs = [parse_reference(r) for r in settings["reference"]]
        settings["reference_hash"] = [f"{track.content_hash(p) if os.path.isfile(p) else None}:{w:g}" for p, w in refs]
    return settings


def _last_pace(out_root: str) -> float | None:
    """x-realtime of the last finished run that mastered anything (None where there is none)."""
    try:
        runs = store.read_dataset(out_root, "runs").to_pylist()
    except (OSError, ValueError):
        return None
    done = [r for r in runs if r.get("status") == "finished" and (r.get("done") or 0) > 0 and (r.get("x_realtime") or 0) > 0]
    if not done:
        return None
    return float(max(done, key=lambda r: r["ended"])["x_realtime"])


def _album_keys(specs: list[dict[str, Any]], out_root: str, hashes: dict[str, str | None]) -> dict[str, float | None]:
    """Album loudness (rounded as a run rounds it) from the measure cache, per album whose every track
    was measured by an earlier run with its current content (None where one is missing)."""
    from acetate.pipeline.catalogue import batch, track

    by_album: dict[str, list[str]] = {}
    for s in specs:
        if s.get("album"):
            by_album.setdefault(s["album"], []).append(s["track_id"])
    out: dict[str, float | None] = {}
    for album, ids in by_album.items():
        blocks = []
        for tid in ids:
            h = hashes.get(tid)
            cache = store.read_json(track._measure_cache_path(out_root, h)) if h else None
            if not cache or cache.get("version") != track.ANALYSIS_VERSION:
                blocks = None
                break
            blocks.append(cache["blocks"])
        lufs = batch.album_loudness(blocks) if blocks is not None else None
        out[album] = None if lufs is None else round(lufs, 3)
    return out


def _settings_diff(old: Any, new: dict[str, Any]) -> list[str]:
    if not isinstance(old, dict):
        return []
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def plan_job(job: jobs.Job, *, out_root: str | None = None) -> Plan:
    """What ``acetate run JOB`` would do to each of ``job``'s tracks (see the module docstring).

    Parameters
    ----------
    job : Job
        Validated, overrides applied.
    out_root : str, optional
        The output root (default the job's).
    """
    from acetate.pipeline.catalogue import track
    from acetate.pipeline.io import audio

    out_root = os.fspath(out_root or job.output)
    specs, album_on = jobs.resolve_tracks(job)
    album_on = album_on and job.mode == "master"
    settings = run_settings(job)
    spec_dicts = [s.to_dict() for s in specs]
    rows: list[PlanRow] = []
    hashes: dict[str, str | None] = {}
    headers: dict[str, Any] = {}
    for s in spec_dicts:
        try:
            headers[s["track_id"]] = audio.check_header(s["path"])
        except audio.AudioError as exc:
            headers[s["track_id"]] = exc
            hashes[s["track_id"]] = None
        else:
            hashes[s["track_id"]] = track.content_hash(s["path"])
    albums = _album_keys(spec_dicts, out_root, hashes) if album_on else {}
    for s in spec_dicts:
        tid, head = s["track_id"], headers[s["track_id"]]
        row = PlanRow(tid, s["path"], "new", "", album=s.get("album"))
        if isinstance(head, audio.AudioError):
            row.action, row.reason = "refuse", str(head)
            rows.append(row)
            continue
        row.duration_s = round(float(head.duration_s), 3)
        planned = (
            list(track.planned_outputs(out_root, tid, list(s.get("targets") or []), settings.get("formats") or []))
            if job.mode == "master"
            else []
        )
        album_note = ""
        if album_on and s.get("album"):
            s["album_loudness_lufs"] = albums.get(s["album"])
            if s["album_loudness_lufs"] is None:
                album_note = " (album loudness not measured yet: the run measures the album first)"
        key = f"{hashes[tid]}:{track.settings_hash(settings, s)}"
        ledger = track.read_ledger(out_root, tid) or {}
        old_key = str(ledger.get("key") or "")
        old_hash, _, old_settings = old_key.partition(":")
        row.outputs = planned
        if not ledger:
            row.reason = "never run into this output folder"
        elif ledger.get("status") == "done" and old_key == key:
            missing = [p for p in ledger.get("outputs", []) if not (os.path.exists(p) and track._inside_root(p, out_root))]
            if missing:
                row.action, row.reason = "redo", f"delivered file(s) missing: {', '.join(missing)}"
            else:
                row.action, row.reason, row.outputs = "skip", "done with the same file and settings", list(ledger.get("outputs", []))
        elif old_hash and old_hash != hashes[tid]:
            row.action, row.reason = "redo", "the input file changed since its last run"
        elif old_key and old_key != key:
            changed = _settings_diff(ledger.get("settings"), track.settings_blob(settings, s))
            row.action = "redo"
            row.reason = "settings changed" + (f": {', '.join(changed)}" if changed else "") + album_note
        elif ledger.get("status") == "failed":
            row.action = "retry"
            row.reason = f"failed last time (attempt {ledger.get('attempts', 1)}" + (
                f", at {ledger['stage']}: {ledger.get('message')})" if ledger.get("stage") else ")"
            )
        elif ledger.get("status") == "running":
            row.action, row.reason = "redo", f"an attempt of run {ledger.get('run_id')} did not finish (interrupted or its worker died)"
        else:
            row.reason = "never finished" + album_note
        rows.append(row)
    return Plan(job.name, job.mode, out_root, rows, _last_pace(out_root))


@dataclass
class FolderStatus:
    """Where an output folder stands (``acetate status OUT``)."""

    out_root: str
    ledger: dict[str, int]  # status -> tracks (done, failed, running)
    failed_by_stage: dict[str, int]  # the latest failure of each track still failed, by stage
    last_run: dict[str, Any] | None
    runs: int
    plan: Plan | None = None
    plan_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "plan"}
        if self.last_run:
            d["last_run"] = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in self.last_run.items()}
        if self.plan is not None:
            d["rerun"] = {
                "counts": self.plan.counts,
                "work_seconds": self.plan.work_seconds,
                "estimated_wall_s": self.plan.estimated_wall_s,
            }
        return d

    def summary_lines(self) -> list[str]:
        total = sum(self.ledger.values())
        lines = [f"{self.out_root}: {total} tracks in the ledger: " + ", ".join(f"{n} {s}" for s, n in sorted(self.ledger.items()))]
        if self.failed_by_stage:
            lines.append("failed, by stage: " + ", ".join(f"{s} {n}" for s, n in sorted(self.failed_by_stage.items())))
        r = self.last_run
        if r:
            ended = r.get("ended")
            ended = ended.isoformat(timespec="seconds") if hasattr(ended, "isoformat") else ended
            lines.append(
                f"last run {r.get('run_id')} ({r.get('job')}, {r.get('status')}, ended {ended}): "
                f"{r.get('done')} done, {r.get('skipped')} skipped, {r.get('failed')} failed of {r.get('tracks')}; "
                f"{(r.get('x_realtime') or 0):.1f}x realtime  ({self.runs} run(s) in all)"
            )
        else:
            lines.append("no run has finished writing its runs row here")
        if self.plan is not None:
            c = self.plan.counts
            lines.append("a rerun of the same job would do: " + ", ".join(f"{c[a]} {a}" for a in ACTIONS))
        elif self.plan_error:
            lines.append(f"what a rerun would do: unknown ({self.plan_error})")
        return lines


def folder_status(out_root: str | os.PathLike, *, with_plan: bool = True) -> FolderStatus:
    """Summarise the output folder ``out_root`` (see the module docstring); ``with_plan`` also
    dry-runs the last run's job against it where its job file is still there."""
    out_root = os.fspath(out_root)
    if not os.path.isdir(out_root):
        raise ValueError(f"no such output folder: {out_root}")
    ledger: Counter[str] = Counter()
    failed_stage: Counter[str] = Counter()
    for p in glob.glob(os.path.join(glob.escape(out_root), store.STATE_DIR, "ledger", "*.json")):
        rec = store.read_json(p)
        if not isinstance(rec, dict):
            ledger["unreadable"] += 1
            continue
        ledger[str(rec.get("status") or "unknown")] += 1
    runs = store.read_dataset(out_root, "runs").to_pylist()
    fails = store.read_dataset(out_root, "failures").to_pylist()
    latest: dict[str, dict[str, Any]] = {}
    for f in fails:
        if f.get("track_id") is not None and f.get("attempt", 0) >= latest.get(f["track_id"], {}).get("attempt", -1):
            latest[f["track_id"]] = f
    for tid, f in latest.items():
        rec = store.read_json(os.path.join(out_root, store.STATE_DIR, "ledger", f"{store.safe_name(tid)}.json"))
        if isinstance(rec, dict) and rec.get("status") == "failed":
            failed_stage[str(f.get("stage"))] += 1
    last = max(runs, key=lambda r: r["ended"]) if runs else None
    st = FolderStatus(out_root, dict(ledger), dict(failed_stage), last, len(runs))
    if with_plan and last:
        path = last.get("job_path")
        try:
            if not path or not os.path.isfile(path):
                raise jobs.JobError(f"the last run's job file {path!r} is not there")
            job = jobs.apply_overrides(jobs.load_job(path), out=out_root, strict=None)
            jobs.check_job(job)
            st.plan = plan_job(job, out_root=out_root)
        except (jobs.JobError, ValueError, OSError) as exc:
            st.plan_error = str(exc)
    return st


def plan_json(plan: Plan) -> str:
    """The dry run as JSON: ``{"job", "mode", "out_root", "counts", "work_seconds", "estimated_wall_s", "rows": [...]}``."""
    doc = {
        "job": plan.job,
        "mode": plan.mode,
        "out_root": plan.out_root,
        "counts": plan.counts,
        "work_seconds": plan.work_seconds,
        "estimated_wall_s": plan.estimated_wall_s,
        "rows": [r.to_dict() for r in plan.rows],
    }
    return json.dumps(doc, indent=2, allow_nan=False, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v))
