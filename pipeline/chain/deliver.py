"""The write stage: deliver a master in each format, every file checked as it decodes.

16-bit formats get TPDF dither seeded from the content and settings (the bytes are
reproducible); 24-bit is rounded to its grid by the encoder. A WAV or FLAC is read back a
block at a time and must hold exactly the samples written (``verified: "exact"``: its
loudness is the master's, its true peak bounded from the master's 16x reading); an MP3 is
decoded and measured (``verified: "measured"``), re-encoded with its gain corrected toward
the ceiling and the target, and reported as it is.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from acetate.kernels import backend, dither, truepeak, units
from acetate.pipeline.chain import meter
from acetate.pipeline.chain.render import CEILING_MARGIN_DB, TARGET_TOLERANCE_LU, VERIFY_OVERSAMPLE, MasterResult, RenderError, resample
from acetate.pipeline.io import audio

__all__ = ["write_outputs"]


#: 16-bit delivery is dithered (TPDF) onto its grid; 24-bit is rounded by the encoder
#: (:func:`acetate.pipeline.io.audio.encode`). Either way a lossless file decodes to exactly
#: ``quantize(written, bits)`` (``written`` as is for float WAV).
_DITHER_BITS = 16


def _max_abs_differences(a: np.ndarray, b: np.ndarray, c: np.ndarray, bits: int | None = None, step: int = 1 << 15) -> tuple[float, float]:
    """``max|a - q(b)|`` and ``max|a - c|`` over (C, n) host arrays, ``q`` the rounding to
    ``bits`` (:func:`acetate.kernels.dither.quantize`; identity for None), a cache-sized
    slice at a time, in two reused buffers (whole-track temporaries, or a slice's
    temporaries made afresh, would cost more than the arithmetic). The comparison is
    made in steps (``x * 2**(bits-1)``: exact; :func:`~acetate.kernels.dither.quantize_steps`
    into a buffer). When ``c`` is ``b`` (the master written as is) one difference gives the second figure.
    """
    n = a.shape[-1]
    d1 = d2 = 0.0
    scale = None if bits is None else np.float32(2.0 ** (int(bits) - 1))
    u = np.empty((a.shape[0], min(step, n)), dtype=np.float32)
    v = np.empty_like(u)
    for s in range(0, n, step):  # a loop over slices of a track, not samples
        e = min(n, s + step)
        t, k = u[:, : e - s], v[:, : e - s]
        np.subtract(a[:, s:e], b[:, s:e], out=t)
        m = np.max(np.abs(t, out=t))
        d2 = float(np.maximum(d2, m)) if c is b else d2  # np.maximum: a NaN is kept, not dropped
        if scale is None:
            d1 = float(np.maximum(d1, m))
        else:  # in steps: a on the grid, q(b) as the encoder rounded it
            dither.quantize_steps(b[:, s:e], bits, out=k)
            np.subtract(np.multiply(a[:, s:e], scale, out=t), k, out=t)
            d1 = float(np.maximum(d1, np.max(np.abs(t, out=t)) / scale))
        if c is not b:
            np.subtract(a[:, s:e], c[:, s:e], out=t)
            d2 = float(np.maximum(d2, np.max(np.abs(t, out=t))))
    return d1, d2


def _exact_check(result: MasterResult, fmt: str, written: np.ndarray, path: str | os.PathLike) -> tuple[float, float] | None:
    """Verify a lossless file against the samples written; bound its loudness and true peak.

    The file is read back a block at a time (:func:`acetate.pipeline.io.audio.decode_blocks`:
    no second copy of the track) and must reproduce ``written`` as the encoder rounds it
    to the format's grid, bit for bit, or the file is corrupt (:class:`RenderError`).
    Then the file's true peak is bounded
    without a second 16x measurement: ``tp(file) <= tp(master) + G * max|file - master|``
    (``G`` = 2.74, the interpolator's largest phase L1 norm; the difference is
    rounding or dither: the bound is < 1e-5 dB loose at 24 bit, ~0.001 dB at 16 bit). Its integrated loudness is the master's
    (rounding at 24 bit and dither at 16 bit sit 80 dB and more under the gated
    blocks). Returns ``(integrated_lufs, true_peak_dbtp)``, or None where that
    shortcut does not apply (lossy format, no master measurement) and the file is measured.
    """
    if not audio.is_lossless(fmt):
        return None
    tp16 = result.output_report.get("true_peak_dbtp_16x")
    lufs = result.output_report.get("integrated_lufs")
    if tp16 is None or lufs is None or not math.isfinite(tp16):
        return None
    meta = audio.info(path)
    n = written.shape[1]
    if meta.sample_rate != result.fs or (meta.channels, meta.frames) != written.shape:
        raise RenderError(
            f"{fmt}: the written file holds {(meta.channels, meta.frames)} at {meta.sample_rate} Hz, not {written.shape} at {result.fs} Hz"
        )
    bits = audio.pcm_bits(fmt)
    resid = err = 0.0
    pos = 0
    try:
        for blk in audio.decode_blocks(path):
            end = pos + blk.shape[1]
            if end > n:
                raise RenderError(f"{fmt}: the written file decodes to more than its {n} frames")
            w = written[:, pos:end]
            r1, r2 = _max_abs_differences(blk, w, w if written is result.audio else result.audio[:, pos:end], bits)
            resid, err = float(np.maximum(resid, r1)), float(np.maximum(err, r2))  # NaN kept
            pos = end
    except audio.AudioError as exc:
        raise RenderError(f"{fmt}: the written file cannot be read back: {exc}") from exc
    if pos != n:
        raise RenderError(f"{fmt}: the written file decodes to {pos} frames, not {n}")
    if resid != 0.0:
        raise RenderError(f"{fmt}: the written file does not decode to the samples written (max difference {resid:.3g})")
    bound = units.db_to_amplitude(tp16) + truepeak.interpolation_gain(VERIFY_OVERSAMPLE) * err
    return float(lufs), units.amplitude_to_db(float(bound))


#: Encodes of one delivery at most (the first, then gain corrections).
_MAX_ENCODES = 5
#: Formats that cannot hold every rate: the highest they can (MPEG-1 Layer III: 48 kHz).
_FORMAT_MAX_RATE = {"mp3": 48000}
#: The rates a format holds at all (MPEG-1, 2 and 2.5 Layer III), where it is not every rate.
_FORMAT_RATES = {"mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)}


def _delivery_rate(fmt: str, fs: int) -> int:
    """The rate ``fmt`` is delivered at for a master at ``fs``: ``fs`` itself where the format holds
    it; above the format's top rate, 44.1 kHz for the 44.1 kHz family and the top rate otherwise;
    between its rates, the next rate up (nothing of the master is lost).

    Examples
    --------
    >>> _delivery_rate("mp3", 44100), _delivery_rate("mp3", 96000), _delivery_rate("mp3", 176400), _delivery_rate("mp3", 37800)
    (44100, 48000, 44100, 44100)
    """
    rates = _FORMAT_RATES.get(fmt)
    if rates is None or fs in rates:
        return fs
    top = _FORMAT_MAX_RATE[fmt]
    if fs > top:
        return 44100 if fs % 11025 == 0 else top
    return min(r for r in rates if r > fs)


#: A lossy file is re-encoded toward the target when it lands further than this from it.
_LOSSY_AIM_LU = 0.05


def _next_gain_step(fmt: str, lossy: bool, integrated: float, tp: float, target: float | None, ceiling: float | None) -> float:
    """The gain change (dB) for the next encode of a delivered file, 0.0 when it is as good as it gets.

    Over the ceiling: down by the excess (plus 0.1 dB for a lossy codec, whose peaks move
    with the gain, or 0.001 dB). A lossy file that keeps the ceiling but lands more than
    0.05 LU from the target: toward the target, as far as the ceiling allows (a codec's
    low-pass and its rounding move loudness by a tenth of an LU or two; the gain moves
    loudness and true peak together, dB for dB).
    """
    if ceiling is not None and math.isfinite(tp) and tp > ceiling:
        return -((tp - ceiling) + (0.1 if lossy else 0.001))
    if not lossy or target is None or not math.isfinite(integrated):
        return 0.0
    miss = target - integrated
    if abs(miss) <= _LOSSY_AIM_LU:
        return 0.0
    # Up only as far as leaves the codec 0.1 dB for its peaks to move (as on the way down).
    room = math.inf if ceiling is None or not math.isfinite(tp) else ceiling - CEILING_MARGIN_DB - 0.1 - tp
    step = min(miss, room)
    return step if abs(step) >= 0.01 and (step < 0) == (miss < 0) else 0.0


def write_outputs(result: MasterResult, out_stem: str | os.PathLike, formats: Sequence[str] = ("wav24",)) -> list[dict[str, Any]]:
    """Write ``result`` in each delivery format as ``<out_stem>.<ext>``, verified.

    16-bit formats get TPDF dither seeded from the content and settings (so the
    bytes are reproducible). Every written file is decoded again:

    * lossless formats (WAV, FLAC) are rounded to their grid by the encoder (24
      bit) or dithered onto it (16 bit) and must decode to exactly those samples; their true peak is then bounded from the master's
      16x reading and the largest sample difference (rounding, dither), and their
      loudness is the master's (``verified: "exact"``);
    * lossy formats (MP3) are measured: integrated loudness and 16x true peak of
      the decoded file (``verified: "measured"``); one that overshoots the
      ceiling is re-encoded with the gain lowered by the overshoot plus 0.1 dB
      (at most 4 tries), and the report says so.

    A lossy file that keeps the ceiling but lands more than 0.05 LU from the target is
    re-encoded with its gain moved toward the target as far as the ceiling allows; one that
    still misses the 0.1 LU tolerance says so (``target_met`` false, and a note).

    Returns
    -------
    list of dict
        Per format: ``format``, ``path``, ``integrated_lufs``, ``true_peak_dbtp``
        (16x, decoded file; an upper bound for ``exact``), ``report`` (the file's loudness
        figures as decoded: the master's for an ``exact`` file), ``target_met`` and
        ``ceiling_met`` (of this file; None where there is no target or ceiling),
        ``tolerance_lu``, ``gain_adjust_db``, ``verified``.

    Raises
    ------
    RenderError
        A lossless file that does not decode to the samples written.
    """
    stem = Path(out_stem)
    outputs = []
    if len({audio.FORMATS[f][0] for f in formats}) != len(formats):
        raise ValueError(f"formats {list(formats)} would write two files with the same extension")
    base = np.ascontiguousarray(result.audio)
    seed = None
    for fmt in formats:
        if fmt not in audio.FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {sorted(audio.FORMATS)}")
        ext = audio.FORMATS[fmt][0]
        path = stem.with_name(f"{stem.name}.{ext}")
        adjust = 0.0
        dithered = audio.pcm_bits(fmt) == _DITHER_BITS
        lossy = not audio.is_lossless(fmt)
        report: dict[str, Any] = {}
        src, fs_out = base, _delivery_rate(fmt, result.fs)
        if fs_out != result.fs:  # the format cannot hold the master's rate: the nearest it can, said
            src = np.ascontiguousarray(backend.to_host(resample(base, result.fs, fs_out)), dtype=np.float32)
            result.notes.append(f"{fmt}: delivered at {fs_out} Hz (the format cannot hold the master's {result.fs} Hz)")
        was_over = False
        for attempt in range(_MAX_ENCODES):
            y = src if adjust == 0.0 else (src * units.db_to_amplitude(adjust)).astype(np.float32)
            if dithered:
                if seed is None:  # hashed once, and only when some format dithers
                    seed = dither.content_seed(base, result.settings.digest() + result.preset)
                y = np.asarray(dither.tpdf_dither_quantize(y, _DITHER_BITS, seed), dtype=np.float32)
            audio.encode(y, fs_out, path, fmt)
            exact = _exact_check(result, fmt, y, path) if adjust == 0.0 and fs_out == result.fs else None
            if exact is not None and result.ceiling_dbtp is not None and exact[1] > result.ceiling_dbtp:
                exact = None  # the bound is over (a master at the ceiling, then dithered): measure the file itself
            if exact is not None:
                integrated, tp = exact
                report = {k: result.output_report.get(k) for k in meter.LOUDNESS_FIGURES}
                report.update(integrated_lufs=integrated, true_peak_dbtp=tp)
            else:  # the whole file, decoded and measured
                decoded, dfs = audio.decode(path)
                tp = float(truepeak.to_db(np.max(truepeak.true_peak(decoded, dfs, oversample=VERIFY_OVERSAMPLE))))
                report = {k: v for k, v in meter.loudness_report(decoded, dfs).items() if k in meter.LOUDNESS_FIGURES}
                report["true_peak_dbtp"] = tp if math.isfinite(tp) else None
                integrated = report["integrated_lufs"] if report["integrated_lufs"] is not None else math.nan
                del decoded
            step = _next_gain_step(fmt, lossy, integrated, tp, result.target_lufs, result.ceiling_dbtp)
            if step > 0.0 and attempt >= _MAX_ENCODES - 2:  # up only with an encode left to come down again
                step = 0.0
            elif step > 0.0 and was_over:  # back up after an over: half the way, the codec's peaks move
                step *= 0.5
            was_over = was_over or step < 0.0
            if step == 0.0:
                break
            if attempt == _MAX_ENCODES - 1:  # the file on disk is what it is: say so, never report it as met
                if result.ceiling_dbtp is not None and math.isfinite(tp) and tp > result.ceiling_dbtp:
                    result.ceiling_met = False
                    result.notes.append(f"{fmt}: decoded true peak {tp:.2f} dBTP stays over the {result.ceiling_dbtp:.1f} dBTP ceiling")
                break
            adjust += step
        ok_lufs = (
            None
            if result.target_lufs is None or not math.isfinite(integrated)
            else abs(integrated - result.target_lufs) <= TARGET_TOLERANCE_LU
        )
        ok_tp = None if result.ceiling_dbtp is None else (not math.isfinite(tp) or tp <= result.ceiling_dbtp + 1e-9)
        if lossy and ok_lufs is False:
            result.notes.append(
                f"{fmt}: the decoded file measures {integrated:.2f} LUFS, {integrated - result.target_lufs:+.2f} LU from the target: "
                f"the codec moved it and the true-peak ceiling leaves no room to correct it (the ceiling wins)"
            )
        outputs.append(
            {
                "format": fmt,
                "path": str(path),
                "integrated_lufs": integrated if math.isfinite(integrated) else None,
                "true_peak_dbtp": tp if math.isfinite(tp) else None,
                "report": report,
                "target_met": ok_lufs,
                "ceiling_met": ok_tp,
                "tolerance_lu": TARGET_TOLERANCE_LU,
                "gain_adjust_db": round(adjust, 4),
                "verified": "exact" if exact is not None else "measured",
            }
        )
        if adjust:
            why = "keeps the ceiling" if adjust < 0 else "comes to the target"
            result.notes.append(f"{fmt}: gain {'lowered' if adjust < 0 else 'raised'} {abs(adjust):.2f} dB so the decoded file {why}")
    return outputs
