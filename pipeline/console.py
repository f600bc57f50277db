"""What the command line shows while and after it works: a progress bar, warnings, the end summary.

The progress bar is :mod:`tqdm`'s, on standard error, and only where standard error is a
terminal (a log file or a pipe gets no bar); the end summary is plain lines on standard
output, the same for every command that masters tracks (``acetate master``, ``acetate run``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

__all__ = ["progress_bar", "low_confidence_warning", "master_triage", "summary_lines"]


def progress_bar(total: int, *, enabled: bool = True, unit: str = "track", stream: TextIO | None = None) -> Any:
    """A tqdm bar of ``total`` items (n/N, elapsed, ETA) on ``stream`` (default stderr).

    Disabled (every call a no-op) when ``enabled`` is false, when the stream is not a
    terminal, or for fewer than two items. Print through its ``write`` method while it
    runs, so that lines are not torn by the bar.

    Examples
    --------
    >>> import io
    >>> bar = progress_bar(3, stream=io.StringIO())   # not a terminal: no bar drawn
    >>> bar.disable
    True
    """
    from tqdm import tqdm

    stream = stream or sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(total=total, unit=unit, file=stream, disable=not (enabled and tty and total > 1), dynamic_ncols=True, leave=False)


def low_confidence_warning(path: str, selection: Mapping[str, Any] | None) -> str | None:
    """The warning line for a selection the bank was not confident of (None otherwise).

    ``selection`` is a selection record (:meth:`acetate.pipeline.stages.Choice.record`):
    flagged where its ``low_confidence`` is set, that is where the confidence fell below
    the bank's ``min_confidence`` and the gentle fallback was rendered.

    Examples
    --------
    >>> low_confidence_warning("a.wav", {"low_confidence": True, "confidence": 0.09, "nearest": "balanced", "distance": 4.2})
    'warning: a.wav: low selection confidence 0.09 (nearest preset balanced at distance 4.20): mastered with the gentle fallback; listen before release'
    >>> low_confidence_warning("a.wav", {"low_confidence": False, "confidence": 0.8}) is None
    True
    """
    if not selection or not selection.get("low_confidence"):
        return None
    conf, near, dist = selection.get("confidence"), selection.get("nearest"), selection.get("distance")
    what = f"low selection confidence {conf:.2f}" if isinstance(conf, (int, float)) else "low selection confidence"
    where = f" (nearest preset {near} at distance {dist:.2f})" if near and isinstance(dist, (int, float)) else ""
    return f"warning: {path}: {what}{where}: mastered with the gentle fallback; listen before release"


def _track_row(i: int, row: Mapping[str, Any]) -> Any:
    """A report :class:`~acetate.pipeline.report.data.TrackRow` of one ``acetate master`` row (for the triage ranking)."""
    from acetate.pipeline.report import data as rdata

    path = str(row.get("path"))
    t = rdata.TrackRow(track_id=path, name=f"t{i}")
    if "error" in row:
        t.status, t.failure_stage, t.failure_message = "failed", row.get("stage"), row.get("error")
        return t
    sel = row.get("selection") or {}
    inp, out = row.get("input") or {}, row.get("output") or {}
    t.status = "done"
    t.preset, t.nearest, t.forced = row.get("preset"), sel.get("nearest"), bool(sel.get("forced"))
    t.distance, t.confidence = sel.get("distance"), sel.get("confidence")
    t.speech_likeness = (sel.get("explain") or {}).get("speech")
    t.in_lufs, t.out_lufs = inp.get("integrated_lufs"), out.get("integrated_lufs")
    t.in_lra, t.out_lra = inp.get("loudness_range_lu"), out.get("loudness_range_lu")
    t.in_tp, t.out_tp = inp.get("true_peak_dbtp"), out.get("true_peak_dbtp")
    loud = (row.get("params") or {}).get("loudness") or {}
    lim = loud.get("limiter_reduction_db")
    t.gain_db, t.limiter_db = loud.get("gain_db"), (abs(lim) if isinstance(lim, (int, float)) else None)
    t.target_met, t.ceiling_met = row.get("target_met"), row.get("ceiling_met")
    return t


def master_triage(rows: Sequence[Mapping[str, Any]], n: int = 3) -> list[tuple[str, str]]:
    """The ``n`` tracks of an ``acetate master`` run to listen to first, as ``(path, reason)``:
    the review report's ranking (:func:`acetate.pipeline.report.data.triage`: failures, a speech
    preset on music, lowest confidence, loudness-range reduction, deepest limiting), with a
    missed target or ceiling ahead of the measured criteria."""
    from acetate.pipeline.report import data as rdata

    tracks = [_track_row(i, r) for i, r in enumerate(rows)]
    missed = [
        (t.track_id, "missed its " + " and ".join(w for w, ok in (("target", t.target_met), ("ceiling", t.ceiling_met)) if ok is False))
        for t in tracks
        if t.status == "done" and (t.target_met is False or t.ceiling_met is False)
    ]
    ranked = [(e.track_id, e.reason) for e in rdata.triage(tracks, n + len(missed))]
    failed = [e for e in ranked if any(t.track_id == e[0] and t.status == "failed" for t in tracks)]
    rest = [e for e in ranked if e not in failed and e[0] not in {m[0] for m in missed}]
    return (failed + missed + rest)[:n]


def summary_lines(
    *,
    done: int,
    failed: int,
    skipped: int,
    audio_s: float,
    wall_s: float,
    met: tuple[int, int] | None,
    triage: Iterable[tuple[str, str]],
    report: str | None,
) -> list[str]:
    """The end-of-run summary: counts, x-realtime, targets and ceilings met, what to check first, the report.

    ``met`` is ``(targets met, ceilings met)`` over the ``done`` tracks.

    Examples
    --------
    >>> for line in summary_lines(done=2, failed=1, skipped=0, audio_s=60.0, wall_s=3.0, met=(2, 2),
    ...                           triage=[("c.wav", "failed at decode: not audio")], report="out/acetate-master.json"):
    ...     print(line)
    3 tracks: 2 done, 0 skipped, 1 failed; 60 s of audio in 3.0 s (20.0x realtime)
    targets met: 2/2  ceilings met: 2/2
    check  c.wav  failed at decode: not audio
    report: out/acetate-master.json
    """
    xrt = audio_s / wall_s if wall_s > 0 else 0.0
    lines = [
        f"{done + failed + skipped} tracks: {done} done, {skipped} skipped, {failed} failed; "
        f"{audio_s:.0f} s of audio in {wall_s:.1f} s ({xrt:.1f}x realtime)"
    ]
    if met is not None:
        lines.append(f"targets met: {met[0]}/{done}  ceilings met: {met[1]}/{done}")
    for who, reason in triage:
        reason = reason if len(reason) <= 110 else reason[:107] + "..."
        lines.append(f"check  {who}  {reason}")
    if report:
        lines.append(f"report: {report}")
    return lines
