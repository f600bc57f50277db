"""The report's view of a run: one record per track, read from the Parquet datasets only.

:func:`load_tracks` joins ``presets``, ``loudness``, ``features`` and ``failures``
(``acetate.pipeline.io.store.read_dataset``) into :class:`TrackRow` records (the
track's first target: the one whose masters lie directly under ``OUT/masters``);
:func:`triage` ranks what a human should listen to first. Nothing here decodes audio.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from acetate.pipeline.chain import presets as presets_mod
from acetate.pipeline.io import store
from acetate.schemas.features import THIRD_OCTAVE_LABELS

__all__ = ["TrackRow", "RunData", "load_run", "triage", "TriageEntry", "row_hash", "BAND_HZ"]

#: 1/3-octave centres of the ``ltas_mid_*`` features, in Hz.
BAND_HZ: tuple[float, ...] = tuple(float(lab.replace("p", ".").replace("k", "000")) for lab in THIRD_OCTAVE_LABELS)


@dataclass
class TrackRow:
    """Everything the report shows of one track (None where the run holds no figure)."""

    track_id: str
    name: str  # store.safe_name(track_id): file names of its page and assets
    status: str = "unknown"  # done | failed
    album: str | None = None
    target: str | None = None
    preset: str | None = None
    nearest: str | None = None
    distance: float | None = None
    confidence: float | None = None
    forced: bool = False
    runners_up: list[dict[str, Any]] = field(default_factory=list)
    blend: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    input_path: str | None = None
    master_path: str | None = None
    in_lufs: float | None = None
    out_lufs: float | None = None
    in_lra: float | None = None
    out_lra: float | None = None
    in_tp: float | None = None
    out_tp: float | None = None
    gain_db: float | None = None
    limiter_db: float | None = None  # deepest limiter gain reduction, dB (positive)
    target_met: bool | None = None
    ceiling_met: bool | None = None
    in_ltas: list[float] | None = None
    out_ltas: list[float] | None = None
    target_ltas: list[float] | None = None
    speech_likeness: float | None = None
    preset_is_speech: bool = False
    failure_stage: str | None = None
    failure_message: str | None = None
    digest: str = ""  # hash of the track's rows (incremental rebuild)

    @property
    def spectral_change_db(self) -> float | None:
        """Mean absolute difference of the output's and the input's long-term spectrum (dB, finite bands)."""
        if not self.in_ltas or not self.out_ltas:
            return None
        d = [abs(b - a) for a, b in zip(self.in_ltas, self.out_ltas) if _finite(a) and _finite(b)]
        return sum(d) / len(d) if d else None

    @property
    def lra_reduction_lu(self) -> float | None:
        if self.in_lra is None or self.out_lra is None:
            return None
        return self.in_lra - self.out_lra

    @property
    def speech_on_music(self) -> bool:
        return bool(self.preset_is_speech and self.speech_likeness is not None and self.speech_likeness < 0.5)


@dataclass
class RunData:
    out_root: str
    tracks: list[TrackRow]
    runs: list[dict[str, Any]]
    failures_by_stage: dict[str, int]

    @property
    def last_run(self) -> dict[str, Any] | None:
        return self.runs[-1] if self.runs else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _num(v: Any) -> float | None:
    return float(v) if _finite(v) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def row_hash(rows: Any) -> str:
    """A stable hash of a track's rows (dicts, lists, numbers), for the rebuild manifest."""
    text = json.dumps(rows, sort_keys=True, default=_jsonable, allow_nan=True)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _ltas(fp: dict[str, Any] | None) -> list[float] | None:
    if not fp:
        return None
    vals = [fp.get(f"ltas_mid_{lab}hz_db") for lab in THIRD_OCTAVE_LABELS]
    return [float(v) if _finite(v) else math.nan for v in vals]


def _bank() -> Any:
    try:
        return presets_mod.load_bank()
    except (OSError, ValueError):  # pragma: no cover - the shipped bank is package data
        return None


def load_run(out_root: str | os.PathLike) -> RunData:
    """Read a finished or partly finished run's datasets into one :class:`TrackRow` per track."""
    out_root = os.fspath(out_root)
    presets = store.read_dataset(out_root, "presets").to_pylist()
    loud = store.read_dataset(out_root, "loudness").to_pylist()
    feats = store.read_dataset(out_root, "features").to_pylist()
    fails = store.read_dataset(out_root, "failures").to_pylist()
    runs = sorted(store.read_dataset(out_root, "runs").to_pylist(), key=lambda r: (r["started"], r["run_id"]))
    masters_dir = os.path.join(out_root, "masters")
    bank = _bank()

    by_track: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def slot(tid: str, kind: str) -> list[dict[str, Any]]:
        return by_track.setdefault(tid, {"presets": [], "loudness": [], "features": [], "failures": []})[kind]

    for r in presets:
        slot(r["track_id"], "presets").append(r)
    for r in loud:
        if r["scope"] == "track" and r["track_id"] is not None:
            slot(r["track_id"], "loudness").append(r)
    for r in feats:
        if r["track_id"] is not None:
            slot(r["track_id"], "features").append(r)
    for r in fails:
        if r["stage"] != "job":
            slot(r["track_id"], "failures").append(r)

    tracks = []
    for tid in sorted(by_track):
        rows = by_track[tid]
        t = TrackRow(track_id=tid, name=store.safe_name(tid))
        t.digest = row_hash(rows)
        outs = [r for r in rows["loudness"] if r["stage"] == "output"]
        # the first target: its files lie directly under OUT/masters
        primary = [r for r in outs if r["path"] and os.path.dirname(os.path.abspath(r["path"])) == os.path.abspath(masters_dir)]
        targets = [r["target"] for r in (primary or outs or rows["presets"] or rows["loudness"])]
        t.target = targets[0] if targets else None
        ok_run = max((r["run_id"] for r in rows["presets"] + outs), default="")
        last_fail = max(rows["failures"], key=lambda r: (r["run_id"], r["attempt"]), default=None)
        if last_fail is not None and last_fail["run_id"] >= ok_run:
            t.status = "failed"
            t.failure_stage = last_fail["stage"]
            t.failure_message = f"{last_fail['error_type']}: {last_fail['message']}"
            t.input_path = last_fail["path"]
        elif ok_run:
            t.status = "done"
        p = next((r for r in rows["presets"] if r["target"] == t.target), rows["presets"][0] if rows["presets"] else None)
        if p is not None:
            t.preset, t.nearest, t.forced = p["preset"], p["nearest"], bool(p["forced"])
            t.distance, t.confidence = _num(p["distance"]), _num(p["confidence"])
            t.runners_up = list(p["runners_up"] or [])
            t.blend = list(p["blend"] or [])
            try:
                t.params = json.loads(p["params"]) if p["params"] else {}
            except ValueError:
                t.params = {}
            lp = t.params.get("loudness") or {}
            t.gain_db = _num(lp.get("gain_db"))
            lim = _num(lp.get("limiter_reduction_db"))
            t.limiter_db = abs(lim) if lim is not None else None
        inp = next((r for r in rows["loudness"] if r["stage"] == "input" and r["target"] == t.target), None)
        inp = inp or next((r for r in rows["loudness"] if r["stage"] == "input"), None)
        if inp is not None:
            t.album = inp["album"]
            t.input_path = inp["path"] or t.input_path
            t.in_lufs, t.in_lra, t.in_tp = _num(inp["integrated_lufs"]), _num(inp["loudness_range_lu"]), _num(inp["true_peak_dbtp"])
        mine = [r for r in outs if r["target"] == t.target]
        if mine:
            lossless = [r for r in mine if not str(r["path"]).lower().endswith(".mp3")] or mine
            o = lossless[0]
            t.album = t.album or o["album"]
            t.master_path = o["path"]
            t.out_lufs, t.out_lra, t.out_tp = _num(o["integrated_lufs"]), _num(o["loudness_range_lu"]), _num(o["true_peak_dbtp"])
            t.target_met = all(bool(r["passed"]) for r in mine)
            t.ceiling_met = all(
                r["true_peak_dbtp"] is not None
                and r["target_true_peak_dbtp"] is not None
                and r["true_peak_dbtp"] <= r["target_true_peak_dbtp"]
                for r in mine
            )
        fin = next((r for r in rows["features"] if r["stage"] == "input" and not r["error"]), None)
        fout = next((r for r in rows["features"] if r["stage"] == "output" and r["target"] == t.target and not r["error"]), None)
        if fin is not None:
            t.in_ltas = _ltas(fin)
            t.input_path = t.input_path or fin["path"]
            try:
                s = presets_mod.speech_likeness(fin)
                t.speech_likeness = s if math.isfinite(s) else None
            except (KeyError, TypeError, ValueError):
                t.speech_likeness = None
        if fout is not None:
            t.out_ltas = _ltas(fout)
        if t.preset and bank is not None:
            used = [b["name"] for b in t.blend] if t.blend else [t.preset]
            if t.preset in bank.names:
                used = [t.preset]
            for name in used:
                pr = bank.get(name)
                if pr is not None and pr.content == "speech":
                    t.preset_is_speech = True
            pr = bank.get(t.preset)
            if pr is not None and pr.eq_mode == "target":
                t.target_ltas = list(pr.target_mid_db)
        tracks.append(t)

    by_stage: dict[str, int] = {}
    for t in tracks:
        if t.status == "failed" and t.failure_stage:
            by_stage[t.failure_stage] = by_stage.get(t.failure_stage, 0) + 1
    return RunData(out_root=out_root, tracks=tracks, runs=runs, failures_by_stage=by_stage)


@dataclass(frozen=True)
class TriageEntry:
    track_id: str
    name: str
    reason: str
    kind: str  # failed | speech-on-music | low-confidence | spectral-change | lra-reduction | limiter


#: Below these nothing is flagged: a track is only worth a listen when a figure stands out.
THRESHOLDS = {"low-confidence": 0.5, "spectral-change": 1.0, "lra-reduction": 1.0, "limiter": 1.0}


def triage(tracks: list[TrackRow], n: int = 10) -> list[TriageEntry]:
    """The ``n`` tracks to check first, each with its reason (one entry per track).

    Failures come first, then a speech preset rendered on a track that measures as
    music, then the worst of each measured criterion in turn (lowest selection
    confidence, largest spectral change, largest loudness-range reduction, deepest
    limiting), round-robin so that one criterion does not fill the list.
    """
    out: list[TriageEntry] = []
    seen: set[str] = set()

    def add(t: TrackRow, kind: str, reason: str) -> None:
        if t.track_id not in seen and len(out) < n:
            seen.add(t.track_id)
            out.append(TriageEntry(t.track_id, t.name, reason, kind))

    for t in tracks:
        if t.status == "failed":
            add(t, "failed", f"failed at {t.failure_stage}: {t.failure_message}")
    done = [t for t in tracks if t.status == "done"]
    for t in sorted(
        (t for t in done if t.speech_on_music), key=lambda t: (t.speech_likeness if t.speech_likeness is not None else 1.0, t.track_id)
    ):
        add(t, "speech-on-music", f"speech preset {t.preset} on a track that measures as music (speech likeness {t.speech_likeness:.2f})")

    def ranked(kind: str, key, fmt) -> list[tuple[TrackRow, str]]:
        vals = [(key(t), t) for t in done if key(t) is not None]
        vals = [(v, t) for v, t in vals if v >= THRESHOLDS[kind]]
        vals.sort(key=lambda vt: (-vt[0], vt[1].track_id))
        return [(t, fmt(t)) for _, t in vals]

    lists = {
        "low-confidence": ranked(
            "low-confidence",
            lambda t: None if t.confidence is None else 1.0 - t.confidence,
            lambda t: f"lowest selection confidence: {t.confidence:.2f} (nearest {t.nearest}, rendered {t.preset})",
        ),
        "spectral-change": ranked(
            "spectral-change",
            lambda t: t.spectral_change_db,
            lambda t: f"large spectral change: {t.spectral_change_db:.1f} dB mean per band",
        ),
        "lra-reduction": ranked(
            "lra-reduction",
            lambda t: t.lra_reduction_lu,
            lambda t: f"loudness range reduced by {t.lra_reduction_lu:.1f} LU ({t.in_lra:.1f} → {t.out_lra:.1f})",
        ),
        "limiter": ranked("limiter", lambda t: t.limiter_db, lambda t: f"limiter working hard: {t.limiter_db:.1f} dB of gain reduction"),
    }
    depth = 0
    while len(out) < n and any(depth < len(v) for v in lists.values()):
        for kind, items in lists.items():
            if depth < len(items):
                t, reason = items[depth]
                add(t, kind, reason)
        depth += 1
    return out
