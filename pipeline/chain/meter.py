"""Loudness reports: the project's meter applied to arrays and files.

A report is a flat dict with the CLI contract's keys (``acetate loudness
--json``); undefined values (silence, too short) are ``None``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from acetate.kernels import backend, loudness, truepeak
from acetate.pipeline.io import audio

__all__ = [
    "LOUDNESS_FIGURES",
    "REPORT_KEYS",
    "loudness_report",
    "measure_report",
    "gating_blocks",
    "report_from_fingerprint",
    "measure_file",
]

#: The six loudness figures of a report (LUFS, LU, dBTP, dBFS); null where undefined.
LOUDNESS_FIGURES = (
    "integrated_lufs",
    "loudness_range_lu",
    "true_peak_dbtp",
    "sample_peak_dbfs",
    "momentary_max_lufs",
    "short_term_max_lufs",
)
#: Keys of one ``acetate loudness --json`` object (the CLI contract).
REPORT_KEYS = ("path", *LOUDNESS_FIGURES, "duration_s", "sample_rate", "channels")


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def loudness_report(x: Any, fs: int, *, oversample: int | None = None) -> dict[str, Any]:
    """Loudness figures of ``x`` (channels, samples; NumPy or CuPy) at ``fs`` hertz.

    ``oversample`` sets the true-peak ratio (default: BS.1770's 4x below 96 kHz).
    """
    return measure_report(x, fs, oversample=oversample)[0]


def gating_blocks(stats: loudness.LoudnessStats) -> np.ndarray:
    """Loudness (LUFS, float32) of the BS.1770 gating blocks above the absolute gate.

    Pooling several programmes' blocks and gating them together gives their
    joint (album) integrated loudness, as BS.1770 defines it.
    """
    m = np.asarray(stats.momentary)  # 400 ms blocks every 100 ms: the gating grid
    return m[m > loudness.ABSOLUTE_GATE_LUFS].astype(np.float32)


def measure_report(
    x: Any,
    fs: int,
    *,
    oversample: int | None = None,
    stats: loudness.LoudnessStats | None = None,
    true_peak: Any = None,
    sample_peaks: Any = None,
    peak_db: tuple[float, float] | None = None,
) -> tuple[dict[str, Any], loudness.LoudnessStats]:
    """:func:`loudness_report` and the meter's :class:`~acetate.kernels.loudness.LoudnessStats` (one pass).

    ``stats``, ``true_peak`` (per channel, linear, at ``oversample``) and
    ``sample_peaks`` (per channel, linear): this very ``x``'s
    :func:`acetate.kernels.loudness.measure`, :func:`acetate.kernels.truepeak.true_peak`
    and :func:`~acetate.kernels.truepeak.sample_peak` when the caller has them
    already (the renderer's last checks of a master); they are not measured again.
    ``peak_db``: their maxima in dB (true peak, sample peak), when the caller has read
    them already; else both are read here, in one transfer (the meter's figures in another).
    """
    xp = backend.namespace(x)
    if stats is None:
        stats = loudness.measure(x, fs)
    if peak_db is None or true_peak is None or sample_peaks is None:
        sp = truepeak.sample_peak(x) if sample_peaks is None else sample_peaks
        tp = truepeak.true_peak(x, fs, oversample=oversample, sample_peaks=sp) if true_peak is None else true_peak
        tp_db, sp_db = (float(v) for v in backend.read_together(truepeak.to_db(xp.max(tp)), truepeak.to_db(xp.max(sp))))
    else:
        tp_db, sp_db = peak_db
    return {
        "integrated_lufs": _finite(stats.integrated_lufs),
        "loudness_range_lu": _finite(stats.loudness_range_lu) if math.isfinite(stats.integrated_lufs) else None,
        "true_peak_dbtp": _finite(tp_db),
        "sample_peak_dbfs": _finite(sp_db),
        "momentary_max_lufs": _finite(stats.momentary_max_lufs),
        "short_term_max_lufs": _finite(stats.short_term_max_lufs),
        "duration_s": x.shape[-1] / fs,
        "sample_rate": int(fs),
        "channels": int(x.shape[0]),
    }, stats


def report_from_fingerprint(fp: Mapping[str, float]) -> dict[str, Any]:
    """The loudness report already inside a fingerprint (NaN -> None), without measuring again."""
    rep: dict[str, Any] = {k: _finite(fp.get(k, math.nan)) for k in LOUDNESS_FIGURES}
    if rep["integrated_lufs"] is None:
        rep["loudness_range_lu"] = None
    rep.update(duration_s=float(fp["duration_s"]), sample_rate=int(fp["sample_rate"]), channels=int(fp["channels"]))
    return rep


def measure_file(path: str, *, oversample: int | None = None) -> dict[str, Any]:
    """Report for one file; ``{"path", "error"}`` if it cannot be measured."""
    try:
        x, fs = audio.decode(path)
        if x.shape[0] > 6:
            raise audio.AudioError(f"{x.shape[0]} channels: BS.1770 layouts cover 1 to 6 channels")
        return {"path": path, **loudness_report(x, fs, oversample=oversample)}
    except (audio.AudioError, ValueError, MemoryError) as exc:
        return {"path": path, "error": f"{type(exc).__name__}: {exc}"}
