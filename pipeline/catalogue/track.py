"""One track's journey -- the unit a Dask worker runs.

``hash -> decode -> analyse -> select -> render -> verify -> write``

A worker receives a track spec (a dict of :class:`acetate.pipeline.catalogue.jobs.TrackSpec`)
and the job's settings, reads the audio from the shared path itself, writes
its masters and its Parquet part files under the output root itself, and
returns only a small summary dict.  Every exception is caught per stage and
becomes a ``failures`` row (stage, error type, message, attempt); nothing
escapes except a dying process.

Resume
------
A track's *key* is ``<content hash>:<settings hash>``: the blake2b of the
file's bytes and a hash of everything in the job that changes its results
(mode, its targets, formats, preset bank and choice, intensity, album gain).
The per-track ledger file ``OUT/.acetate/ledger/<track>.json`` is written
atomically: ``running`` when an attempt starts, ``done`` after its masters and
part files are in place, ``failed`` after a failure row.  A task whose ledger
says ``done`` with the same key (and whose masters exist) returns
``skipped`` at once, so a rerun -- or Dask re-running a task whose worker
died -- never does a finished track twice.

Album mode
----------
:func:`measure_track` is the first phase: decode and analyse (cached by
content hash in ``OUT/.acetate/measure/``), return the integrated loudness and
the gating-block loudness series.  The batch pools an album's blocks into the
album loudness and sets each track's ``album_loudness_lufs``.  :func:`run_track`
then masters each album track, per target, to ``its input loudness + album
gain`` where the album gain is ``target - album loudness`` (one offset for the
whole album, as album ReplayGain): a per-track loudness target handed to
render's loudness stage, which keeps the album's relative loudness through the
chain while render's limiter holds each track's ceiling.  The cached analysis
is reused, so phase 2 decodes again but does not analyse again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from acetate.pipeline import stages
from acetate.pipeline.catalogue.runtime import track_scope
from acetate.pipeline.io import audio, store
from acetate.pipeline.stages import StageFailure, error_message
from acetate.pipeline.stages import stage as _stage

__all__ = [
    "SETTINGS_VERSION",
    "ANALYSIS_VERSION",
    "content_hash",
    "settings_hash",
    "master_paths",
    "planned_outputs",
    "ledger_path",
    "read_ledger",
    "write_failure",
    "measure_track",
    "run_track",
]

#: Bump when a code change should redo finished tracks (part of every settings hash).
SETTINGS_VERSION = "1"
#: Bump when the cached input analysis (fingerprint, report, blocks) changes.
ANALYSIS_VERSION = "2"  # 2: mono measured as delivered (dual mono)

_GPU_LOCK = threading.Lock()  # one GPU section per worker process at a time
_BANK_CACHE: dict[str, Any] = {}


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- keys -------------------------------------------------------------------------


def content_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """blake2b (128-bit) of the bytes of ``path``, hex."""
    p = os.fspath(path)
    stages.check_input(p)
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def planned_outputs(
    out_root: str | os.PathLike, track_id: str, targets: list[str] | tuple[str, ...], formats: list[str] | tuple[str, ...]
) -> list[str]:
    """Every master file a ``master`` attempt of ``track_id`` may write (recorded before it writes any)."""
    stems = master_paths(out_root, track_id, list(targets))
    return [f"{stems[t]}.{audio.FORMATS[f][0]}" for t in targets for f in formats]


def _check_room(out_root: str, path: str) -> None:
    """Raise :class:`~acetate.pipeline.io.files.DiskFull` when the output file system has less room
    than the input file takes (a master is at least about that size, or the disk is simply full)."""
    from acetate.pipeline.io import files

    where = Path(out_root)
    while not where.exists() and where.parent != where:  # not made yet: its file system
        where = where.parent
    st = os.statvfs(where)
    if st.f_bavail * st.f_frsize < max(os.path.getsize(path), 1 << 20):
        raise files.DiskFull(Path(out_root) / "masters")


class Superseded(Exception):
    """A task of a run whose client is gone, while another run holds the output folder."""


def _check_not_superseded(out_root: str, run_id: str) -> None:
    """Raise :class:`Superseded` when another run holds the output folder's lock: a task that an
    interrupted client left running on a shared cluster must not write into a rerun's folder."""
    holder = store.lock_holder(out_root).get("run_id")
    if holder and run_id and holder != run_id:
        raise Superseded(f"run {run_id} was superseded by run {holder}, which holds {out_root}; nothing written")


def _inside_root(path: str, out_root: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(out_root).rstrip(os.sep) + os.sep)


def _remove_files(paths: Any, out_root: str) -> None:
    """Delete the files of ``paths`` that lie inside ``out_root``: a ledger copied with its
    output folder names the original folder's masters, which are never this run's to delete."""
    for path in paths or ():
        if not _inside_root(path, out_root):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def settings_hash(settings: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """Hash of what changes a track's results: the job settings that matter and the spec's choices
    (:func:`settings_blob`, which the ``done`` ledger keeps so that a dry run can say what changed)."""
    return hashlib.blake2b(json.dumps(settings_blob(settings, spec), sort_keys=True).encode(), digest_size=16).hexdigest()


def settings_blob(settings: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`settings_hash` hashes, JSON-able."""
    targets = {t: settings["targets"][t] for t in spec.get("targets") or ()}
    album = spec.get("album_loudness_lufs")
    blob = {
        "v": SETTINGS_VERSION,
        "mode": settings["mode"],
        "targets": targets,
        "target_order": list(spec.get("targets") or ()),
        "formats": list(settings.get("formats") or ()),
        "bank": settings.get("preset_bank_hash") or settings.get("preset_bank"),
        "preset": spec.get("preset") or settings.get("preset"),
        "intensity": settings.get("intensity", "medium"),
        **({"max_limiting_db": settings["max_limiting_db"]} if settings.get("max_limiting_db") is not None else {}),
        **({"reference": settings["reference_hash"]} if settings.get("reference") else {}),
        **({"amounts": spec.get("amounts") or settings.get("amounts")} if spec.get("amounts") or settings.get("amounts") else {}),
        "album_loudness_lufs": None if album is None else round(float(album), 2),
        "training": settings.get("training") if settings["mode"] == "training-data" else None,
        "verify": bool(settings.get("verify", True)),
    }
    return json.loads(json.dumps(blob, sort_keys=True))


def ledger_path(out_root: str | os.PathLike, track_id: str) -> Path:
    return Path(out_root) / store.STATE_DIR / "ledger" / f"{store.safe_name(track_id)}.json"


def read_ledger(out_root: str | os.PathLike, track_id: str) -> dict[str, Any] | None:
    """The ledger record of ``track_id`` (None if it never started)."""
    return store.read_json(ledger_path(out_root, track_id))


def master_paths(out_root: str | os.PathLike, track_id: str, targets: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Target -> path stem (no extension) of its master.

    The first target's master is ``OUT/masters/<track_id>``; further targets
    go to ``OUT/masters/<target>/<track_id>``.
    """
    name = store.safe_name(track_id)
    root = Path(out_root) / "masters"
    return {t: str(root / name) if i == 0 else str(root / store.safe_name(t) / name) for i, t in enumerate(targets)}


# --- measurement --------------------------------------------------------------------


def _device(settings: Mapping[str, Any]) -> str:
    """``cpu`` or ``gpu`` for this task: ``auto`` uses the GPU when this worker declares resource GPU."""
    want = settings.get("device", "auto")
    if want in ("cpu", "gpu"):
        return want
    try:
        from distributed import get_worker

        has_gpu = get_worker().state.total_resources.get("GPU", 0) > 0
    except Exception:  # not in a worker, or an older distributed
        has_gpu = False
    if not has_gpu:
        return "cpu"
    from acetate.kernels import backend

    return "gpu" if backend.gpu_available() else "cpu"


class _DeviceSection:
    """Serialise GPU work within a worker process (decode/encode of other threads overlap)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> None:
        if self.device == "gpu":
            _GPU_LOCK.acquire()

    def __exit__(self, *exc: Any) -> None:
        if self.device == "gpu":
            try:
                import cupy

                cupy.get_default_memory_pool().free_all_blocks()
            except Exception:
                pass
            _GPU_LOCK.release()


def _analyse(prog: stages.Programme, device: str) -> dict[str, Any]:
    """Input loudness report, fingerprint and gating blocks (:func:`acetate.pipeline.chain.analyse`), as the cache keeps them."""
    with _DeviceSection(device):
        found = stages.analyse(prog.audio, prog.fs, device)
    return {"report": found.report, "fingerprint": found.fingerprint, "blocks": [round(float(b), 4) for b in found.blocks]}


def _as_analysis(cached: Mapping[str, Any]) -> stages.Analysis:
    return stages.Analysis(dict(cached["report"]), dict(cached["fingerprint"]), np.asarray(cached["blocks"], np.float32))


def _measure_cache_path(out_root: str, chash: str) -> Path:
    return Path(out_root) / store.STATE_DIR / "measure" / f"{chash}.json"


def _analysis(
    load: Callable[[], stages.Programme], out_root: str, chash: str, device: str
) -> tuple[dict[str, Any], stages.Programme | None]:
    """Cached analysis of the input (by content hash), decoding only when needed.

    Returns (analysis as cached, the decoded programme or None).
    """
    cache = store.read_json(_measure_cache_path(out_root, chash))
    if cache and cache.get("version") == ANALYSIS_VERSION:
        return cache, None
    prog = _stage("decode", load)
    result = _stage("analyse", lambda: _analyse(prog, device))
    result["version"] = ANALYSIS_VERSION
    store.write_json(_measure_cache_path(out_root, chash), result)
    return result, prog


def measure_track(spec: Mapping[str, Any], settings: Mapping[str, Any], out_root: str) -> dict[str, Any]:
    """Album phase 1: content hash, input loudness and gating blocks of one track.

    Returns
    -------
    dict
        ``track_id``, ``album``, ``content_hash``, ``integrated_lufs``,
        ``duration_s``, ``blocks`` (float32 ndarray of block loudness above
        -70 LUFS), ``error`` (None, or ``{stage, error_type, message}``).
    """
    out = {
        "track_id": spec["track_id"],
        "album": spec.get("album"),
        "content_hash": None,
        "integrated_lufs": None,
        "duration_s": 0.0,
        "blocks": np.empty(0, np.float32),
        "error": None,
    }
    try:
        path = spec["path"]
        chash = _stage("hash", lambda: content_hash(path))
        out["content_hash"] = chash
        analysis, _ = _analysis(lambda: stages.decode(path), out_root, chash, _device(settings))
        out["integrated_lufs"] = analysis["report"]["integrated_lufs"]
        out["duration_s"] = float(analysis["report"]["duration_s"])
        out["blocks"] = np.asarray(analysis["blocks"], dtype=np.float32)
    except StageFailure as f:
        out["error"] = {"stage": f.stage, "error_type": f.error_type, "message": f.message}
    return out


# --- presets ------------------------------------------------------------------------


def _load_bank(settings: Mapping[str, Any]) -> Any:
    """The job's preset bank (``None``: the shipped default), loaded once per worker process and bank content."""
    from acetate.pipeline.chain import presets

    key = f"{settings.get('preset_bank')}:{settings.get('preset_bank_hash')}"
    if key not in _BANK_CACHE:
        _BANK_CACHE[key] = presets.load_bank(settings.get("preset_bank"))
    return _BANK_CACHE[key]


def _select(fp: Mapping[str, float], spec: Mapping[str, Any], settings: Mapping[str, Any]) -> stages.Choice:
    """The manifest row's or the job's forced preset, else the job's references (one preset, measured once
    per worker process), else the bank's selection (:func:`acetate.pipeline.stages.select`)."""
    if settings.get("reference") and not spec.get("preset"):
        from acetate.pipeline.chain import reference

        preset, record = reference.reference_from_files(settings["reference"])
        return stages.Choice(preset, True, None, [], explain={"references": record})
    return stages.select(fp, spec.get("preset") or settings.get("preset") or "auto", _load_bank(settings))


# --- rows -------------------------------------------------------------------------


def _loudness_row(
    run_id: str,
    spec: Mapping[str, Any],
    stage: str,
    target: str,
    tspec: Mapping[str, float],
    report: Mapping[str, Any],
    path: str,
    target_lufs: float,
) -> dict[str, Any]:
    i = report.get("integrated_lufs")
    tp = report.get("true_peak_dbtp")
    passed = None
    if i is not None:
        passed = abs(i - target_lufs) <= tspec["tolerance_lu"] and (tp is None or tp <= tspec["true_peak_dbtp"] + 1e-6)
    from acetate.pipeline.chain.meter import REPORT_KEYS

    row = {k: report.get(k) for k in REPORT_KEYS if k != "path"}
    row.update(
        run_id=run_id,
        track_id=spec["track_id"],
        album=spec.get("album"),
        scope="track",
        stage=stage,
        target=target,
        path=path,
        target_lufs=target_lufs,
        target_true_peak_dbtp=tspec["true_peak_dbtp"],
        tolerance_lu=tspec["tolerance_lu"],
        delta_lu=None if i is None else i - target_lufs,
        passed=passed,
    )
    return row


def _feature_row(fp: Mapping[str, float], path: str, track_id: str, stage: str, target: str | None) -> dict[str, Any]:
    return {"path": path, "track_id": track_id, "stage": stage, "target": target, **fp}


def _write_parts(out_root: str, part: str, run_id: str, rows: Mapping[str, list[dict[str, Any]]]) -> None:
    from acetate.schemas import loudness as lschema
    from acetate.schemas import presets as pschema
    from acetate.schemas import registry

    builders = {
        "features": lambda r: registry.features_dataset_table(r, run_id=run_id),
        "presets": pschema.presets_table,
        "loudness": lschema.loudness_table,
    }
    for name, build in builders.items():
        if rows.get(name):
            store.write_part(out_root, name, build(rows[name]), part)
        else:
            store.remove_part(out_root, name, part)


def write_failure(
    out_root: str, run_id: str, spec: Mapping[str, Any], f: StageFailure, attempt: int, key: str | None, *, part_suffix: str | None = None
) -> dict[str, Any]:
    """Write one ``failures`` row (schema :mod:`acetate.schemas.failures`) for a failed attempt; return it.

    The one place failure rows are built: by a worker for its track (``part_suffix``
    None: the attempt's number) and by the batch for a task lost with its worker.
    """
    from acetate.schemas import failures

    row = {
        "run_id": run_id,
        "track_id": spec["track_id"],
        "path": spec.get("path"),
        "stage": f.stage,
        "error_type": f.error_type,
        "message": f.message,
        "attempt": attempt,
        "key": key,
        "time": _now(),
    }
    suffix = str(attempt) if part_suffix is None else part_suffix
    store.write_part(out_root, "failures", failures.failures_table([row]), f"{store.safe_name(spec['track_id'])}.{run_id}.{suffix}")
    return row


# --- the unit of work ----------------------------------------------------------------


@track_scope()
def run_track(spec: Mapping[str, Any], settings: Mapping[str, Any], out_root: str, run_id: str) -> dict[str, Any]:
    """Process one track end to end; write its masters, part files and ledger; return a small summary.

    Parameters
    ----------
    spec : mapping
        :meth:`acetate.pipeline.catalogue.jobs.TrackSpec.to_dict` (absolute ``path``).
    settings : mapping
        :meth:`acetate.pipeline.catalogue.jobs.Job.settings` (plus ``preset_bank_hash``).
    out_root : str
        The output root (a path every worker sees).
    run_id : str

    Returns
    -------
    dict
        ``track_id``, ``status`` (``done`` | ``skipped`` | ``failed``),
        ``key``, ``attempt``, ``duration_s`` (programme seconds),
        ``seconds`` (wall time of the task), ``outputs`` (master paths),
        ``stage`` / ``error_type`` / ``message`` when failed, and for album
        tracks ``output_blocks`` per target (float32 block loudness of the
        master, for the album's output loudness) and ``output_duration_s``.
    """
    t0 = time.perf_counter()
    track_id = spec["track_id"]
    part = store.safe_name(track_id)
    path = spec["path"]
    mode = settings["mode"]
    summary: dict[str, Any] = {
        "track_id": track_id,
        "album": spec.get("album"),
        "status": "failed",
        "key": None,
        "attempt": 1,
        "duration_s": 0.0,
        "outputs": [],
    }
    ledger = read_ledger(out_root, track_id) or {}
    key = None
    attempt = 1
    started = False  # whether this attempt took the track over (its ledger says running)
    try:
        _check_not_superseded(out_root, run_id)
        _stage("input", lambda: stages.check_input(path))
        chash = _stage("hash", lambda: content_hash(path))
        key = f"{chash}:{settings_hash(settings, spec)}"
        summary["key"] = key
        if (
            ledger.get("status") == "done"
            and ledger.get("key") == key
            and all(os.path.exists(p) and _inside_root(p, out_root) for p in ledger.get("outputs", []))
        ):
            summary.update(
                status="skipped",
                duration_s=float(ledger.get("duration_s") or 0.0),
                outputs=ledger.get("outputs", []),
                attempt=int(ledger.get("attempts", 1)),
            )
            summary["output_blocks"] = {}
            if spec.get("album") and ledger.get("output_blocks_file"):
                summary["output_blocks"] = {
                    t: np.asarray(v, np.float32) for t, v in (store.read_json(ledger["output_blocks_file"]) or {}).items()
                }
            summary["seconds"] = time.perf_counter() - t0
            return summary
        attempt = int(ledger.get("attempts", 0)) + 1 if ledger.get("key") == key and ledger.get("status") != "done" else 1
        summary["attempt"] = attempt
        if mode == "master":  # a full disk fails the track now, not after its decode and render
            _stage("write", lambda: _check_room(out_root, path))
        # Not done with this key: the ledger's masters are not this track's delivery. Those
        # of an earlier key (the file or the settings changed) and those an attempt left
        # while its ledger still said ``running`` (a worker or client killed between the
        # masters and the ledger) are removed and the track is redone: only a ``done``
        # ledger vouches for its masters and rows. A failure now never leaves audio that
        # looks delivered.
        started = True
        _remove_files(ledger.get("outputs", []), out_root)
        _remove_files(ledger.get("planned", []), out_root)
        planned = (
            planned_outputs(out_root, track_id, list(spec.get("targets") or []), settings.get("formats") or []) if mode == "master" else []
        )
        store.write_json(
            ledger_path(out_root, track_id),
            {
                "track_id": track_id,
                "status": "running",
                "key": key,
                "attempts": attempt,
                "run_id": run_id,
                "started": _now().isoformat(),
                "planned": planned,
            },
        )

        device = _device(settings)
        # The decoded programme stays on the host here; the device sections move it (one worker
        # thread at a time on a GPU, while the others decode and encode).
        analysis, prog = _analysis(lambda: stages.decode(path), out_root, chash, device)
        report, fp = analysis["report"], analysis["fingerprint"]
        summary["duration_s"] = float(report["duration_s"])
        targets = list(spec.get("targets") or [])
        rows: dict[str, list[dict[str, Any]]] = {"features": [], "presets": [], "loudness": []}
        rows["features"].append(_feature_row(fp, path, track_id, "input", None))
        in_lufs = report["integrated_lufs"]
        album_lufs = spec.get("album_loudness_lufs")

        def album_gain(t: str) -> float | None:
            return None if album_lufs is None else settings["targets"][t]["integrated_lufs"] - float(album_lufs)

        def track_target(t: str) -> float:
            g = album_gain(t)
            return settings["targets"][t]["integrated_lufs"] if g is None else in_lufs + g

        for t in targets:
            rows["loudness"].append(_loudness_row(run_id, spec, "input", t, settings["targets"][t], report, path, track_target(t)))

        if mode == "training-data":
            prog = None
            tdir = Path(out_root) / "training" / part
            table = _stage("render", lambda: _training(path, str(tdir), settings, device))
            summary["outputs"].append(table)

        output_blocks: dict[str, np.ndarray] = {}
        if mode == "master":
            if prog is None:
                prog = _stage("decode", lambda: stages.decode(path))
            sel = _stage("select", lambda: _select(fp, spec, settings))
            found = _as_analysis(analysis)
            stems = master_paths(out_root, track_id, targets)
            for i, t in enumerate(targets):
                tspec = settings["targets"][t]
                tl = track_target(t)
                last = i == len(targets) - 1  # the last render: the input is handed over (freed after its chain)
                result = _stage(
                    "render",
                    lambda: _render(prog, found, sel, tl, tspec, settings, device, last, spec.get("amounts") or settings.get("amounts")),
                )
                out_report = result.output_report
                if settings.get("verify", True):
                    out_fp = _stage("verify", lambda: _verify(result, device))
                    rows["features"].append(_feature_row(out_fp, stems[t], track_id, "output", t))
                if spec.get("album"):
                    output_blocks[t] = result.output_blocks
                written = _stage("write", lambda: _write(result, stems[t], settings["formats"]))
                summary["outputs"].extend(o["path"] for o in written)
                for o in written:  # one row per delivered file, with its figures as decoded
                    file_report = {**{k: v for k, v in out_report.items() if k != "path"}, **o["report"]}
                    rows["loudness"].append(_loudness_row(run_id, spec, "output", t, tspec, file_report, o["path"], tl))
                params = dict(result.params)
                if album_lufs is not None:
                    params.update(album_gain_db=album_gain(t), album_loudness_lufs=float(album_lufs), track_target_lufs=tl)
                    if spec.get("album_note"):
                        params["album_note"] = spec["album_note"]
                if result.notes:
                    params["notes"] = list(result.notes)
                if sel.explain:
                    params["explain"] = sel.explain
                rows["presets"].append(
                    {
                        "run_id": run_id,
                        "track_id": track_id,
                        "target": t,
                        "preset": sel.name,
                        "forced": sel.forced,
                        "distance": sel.distance,
                        "runners_up": sel.runners_up,
                        "params": params,
                        "confidence": sel.confidence,
                        "nearest": sel.nearest,
                        "blend": sel.weights,
                    }
                )
                del result
        prog = None
        _check_not_superseded(out_root, run_id)
        _stage("write", lambda: _write_parts(out_root, part, run_id, rows))
        blocks_file = None
        if output_blocks:
            blocks_file = str(Path(out_root) / store.STATE_DIR / "blocks" / f"{part}.json")
            _stage("write", lambda: store.write_json(blocks_file, {t: [round(float(b), 4) for b in v] for t, v in output_blocks.items()}))
        blob = settings_blob(settings, spec)
        _stage("write", lambda: _write_done_ledger(out_root, track_id, key, attempt, run_id, summary, blocks_file, blob))
        summary.update(status="done", output_blocks=output_blocks)
    except Superseded as exc:  # another run owns the folder now: write nothing, touch nothing
        summary.update(status="failed", stage="job", error_type="Superseded", message=str(exc), attempt=attempt)
        if started:
            _remove_files(summary["outputs"], out_root)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row, never a lost task
        f = exc if isinstance(exc, StageFailure) else StageFailure("job", type(exc).__name__, error_message(exc))
        summary.update(status="failed", stage=f.stage, error_type=f.error_type, message=f.message, attempt=attempt)
        try:
            write_failure(out_root, run_id, spec, f, attempt, key)
            if started:  # this attempt took the track over: nothing it or an earlier attempt wrote stays delivered
                _fail_track(out_root, track_id, part, mode, spec, settings, ledger, summary, key, attempt, run_id, f)
            # else: the track failed before its key was checked against its ledger (the input is
            # gone or unreadable now, the disk is full): the last delivery and its ledger stay
        except Exception as exc2:  # noqa: BLE001 - the output root itself is broken; report that too
            summary["message"] = f"{f.message} (and writing the failure failed: {type(exc2).__name__}: {error_message(exc2)})"
    summary["seconds"] = time.perf_counter() - t0
    return summary


def _write_done_ledger(
    out_root: str,
    track_id: str,
    key: str,
    attempt: int,
    run_id: str,
    summary: Mapping[str, Any],
    blocks_file: str | None,
    blob: Mapping[str, Any] | None = None,
) -> None:
    store.write_json(
        ledger_path(out_root, track_id),
        {
            "track_id": track_id,
            "status": "done",
            "key": key,
            "attempts": attempt,
            "run_id": run_id,
            "finished": _now().isoformat(),
            "duration_s": summary["duration_s"],
            "outputs": summary["outputs"],
            "output_blocks_file": blocks_file,
            "settings": dict(blob) if blob is not None else None,
        },
    )


def _fail_track(
    out_root: str,
    track_id: str,
    part: str,
    mode: str,
    spec: Mapping[str, Any],
    settings: Mapping[str, Any],
    ledger: Mapping[str, Any],
    summary: Mapping[str, Any],
    key: str | None,
    attempt: int,
    run_id: str,
    f: StageFailure,
) -> None:
    """A failed attempt's clean-up: its masters (a half-delivered track, one target of two, is
    not delivered), its part files and an earlier attempt's masters go; the ledger says failed."""
    _remove_files(summary["outputs"], out_root)
    for name in ("features", "presets", "loudness"):
        store.remove_part(out_root, name, part)
    _remove_files(ledger.get("outputs", []), out_root)
    targets = list(spec.get("targets") or [])
    _remove_files(planned_outputs(out_root, track_id, targets, settings.get("formats") or []) if mode == "master" else [], out_root)
    store.write_json(
        ledger_path(out_root, track_id),
        {
            "track_id": track_id,
            "status": "failed",
            "key": key,
            "attempts": attempt,
            "run_id": run_id,
            "stage": f.stage,
            "error_type": f.error_type,
            "message": f.message,
            "finished": _now().isoformat(),
        },
    )


# --- adapters to render ------------------------------------------------------------


def _render(
    prog: stages.Programme,
    found: stages.Analysis,
    choice: stages.Choice,
    target_lufs: float,
    tspec: Mapping[str, float],
    settings: Mapping[str, Any],
    device: str,
    last: bool,
    amounts: str | None = None,
) -> Any:
    """:func:`acetate.pipeline.chain.render` with the job's target, ceiling, intensity, per-stage amounts and device.

    On the ``last`` target the programme hands its audio over, so render frees the
    input once its chain has run, before the limiter phase, the memory peak.

    In album mode ``target_lufs`` is the track's own input loudness plus the
    album gain, so the album's relative loudness survives the chain; render's
    loudness stage lands on it and its limiter holds the ceiling.
    """
    from acetate.pipeline.chain import render

    ms = render.MasterSettings(
        target_lufs=float(target_lufs),
        ceiling_dbtp=float(tspec["true_peak_dbtp"]),
        intensity=settings.get("intensity", "medium"),
        device=device,
        max_limiting_db=settings.get("max_limiting_db"),
        amounts=render.parse_amounts(amounts),
    )
    with _DeviceSection(device):
        return stages.render(prog, found, choice, ms, hand_over=last)


def _verify(result: Any, device: str) -> dict[str, float]:
    """:func:`acetate.pipeline.stages.verify` inside the worker's device section."""
    with _DeviceSection(device):
        return stages.verify(result, device)


def _write(result: Any, stem: str, formats: list[str]) -> list[dict[str, Any]]:
    """:func:`acetate.pipeline.stages.write`: the delivered files, verified (path, figures as decoded)."""
    return stages.write(result, stem, formats)


def _training(path: str, out_dir: str, settings: Mapping[str, Any], device: str) -> str:
    """``training-data`` mode: :func:`acetate.pipeline.learning.training.generate` for one track into ``out_dir``.

    Writes ``out_dir/training.parquet`` (schema ``training``) and the variants
    under ``out_dir/audio/``; the job's ``training`` section gives presets,
    intensities, random draws, seed and format.
    """
    from acetate.pipeline.learning import training

    t = dict(settings.get("training") or {})
    return training.generate(
        [path],
        out_dir,
        presets=t.get("presets"),
        intensities=t.get("intensities") or training.INTENSITIES,
        n_random=t.get("n_random"),
        seed=int(t.get("seed", 0)),
        bank=settings.get("preset_bank"),
        fmt=t.get("format", "flac24"),
        device=device,
    )
