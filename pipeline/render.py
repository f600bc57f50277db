"""Render a master: preset + fingerprint -> chain parameters -> kernels -> verified master.

The chain (each stage a kernel in :mod:`acetate.kernels`, NumPy or CuPy):

1. optional sample-rate conversion to the delivery rate (so every later stage,
   the limiter and the verification run at the rate that is delivered);
2. DC removal and a linear-phase subsonic high-pass;
3. tonal EQ toward the preset's target spectrum: the smoothed, clamped
   difference between the target and the track's long-term spectrum, scaled by
   the intensity, as a long linear-phase (or minimum-phase) FIR;
4. multiband dynamics: complementary linear-phase crossovers, a soft-knee
   compressor per band whose threshold follows the band's own active level;
5. stereo image: width per band, low band kept mono-compatible, correlation
   not driven below the input's;
6. loudness targeting and true-peak limiting: the gain before the limiter is
   solved (secant iterations of limiter + meter) so that the master lands on
   the target within 0.1 LU, with the true peak (8x verification) at or below
   the ceiling. Where both cannot hold (the limiter would have to reduce more
   than the preset allows), the ceiling wins and the report says so.

Output conditioning (dither, encoding, lossy re-checks) is in
:func:`write_outputs`. Data stays on one device from decode to the final
host copy: no round trips inside the chain.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from acetate.kernels import backend, dither, dynamics, fir, image, loudness, truepeak
from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.pipeline import audio, meter
from acetate.pipeline.presets import BALANCED, Preset

__all__ = [
    "TARGETS",
    "INTENSITY",
    "MasterSettings",
    "MasterResult",
    "resolve_target",
    "eq_curve",
    "master",
    "write_outputs",
    "RenderError",
]

#: Named delivery targets: (integrated LUFS, true-peak ceiling dBTP).
TARGETS: dict[str, tuple[float, float]] = {
    "streaming": (-14.0, -1.0),
    "apple": (-16.0, -1.0),
    "ebu-r128": (-23.0, -1.0),
    "atsc-a85": (-24.0, -2.0),
    "cd": (-9.0, -0.3),
}

#: How much of the preset each intensity applies (EQ amount, ratio - 1, width - 1).
INTENSITY: dict[str, float] = {"low": 0.35, "medium": 0.65, "high": 1.0}

#: Loudness tolerance of a master (LU) and the solver's aim inside it.
TARGET_TOLERANCE_LU = 0.1
_SOLVE_TOLERANCE_LU = 0.02
#: Ceiling verification: the project's meter at 16x (under-reads <= 0.04 dB at
#: 0.45 fs; its interpolator errs high rather than low), so the ceiling also holds
#: under any compliant 4x or 8x meter. The limiter itself works on its own
#: band-limited FFT interpolation; where this check still finds an over, the
#: limiter runs again with its ceiling lowered by the excess.
VERIFY_OVERSAMPLE = 16
_MAX_CEILING_PASSES = 4
#: The limiter aims this far under the ceiling (and the 16x check holds it there):
#: interpolating meters with pass-band ripple (libebur128 and ffmpeg's ebur128 read
#: up to ~0.01-0.02 dB high on dense masters) must still read under the ceiling.
CEILING_MARGIN_DB = 0.05


class RenderError(ValueError):
    """A track the renderer cannot master as asked (the message says why)."""


@dataclass(frozen=True)
class MasterSettings:
    """What a master must be.

    Attributes
    ----------
    target_lufs : float or None
        Integrated loudness target; ``None`` keeps the preset's own.
        ``math.nan`` (or ``loudness=False``) means no loudness targeting.
    ceiling_dbtp : float or None
        True-peak ceiling; ``None`` keeps the preset's.
    intensity : {"low", "medium", "high"}
    eq, dynamics, width, highpass, loudness, limit : bool
        Stage switches (all off and a 0 dB gain give back the input).
    gain_db : float
        Extra gain before the loudness stage (album mode's offset: with
        ``loudness=False`` it is the only gain applied).
    output_rate : int or None
        Delivery sample rate (None: the source's).
    device : {"cpu", "gpu", "auto"}
    highpass_hz : float
    eq_taps_s : float
        EQ FIR length in seconds (~85 ms: 4097 taps at 48 kHz).
    """

    target_lufs: float | None = None
    ceiling_dbtp: float | None = None
    intensity: str = "medium"
    eq: bool = True
    dynamics: bool = True
    width: bool = True
    highpass: bool = True
    loudness: bool = True
    limit: bool = True
    gain_db: float = 0.0
    output_rate: int | None = None
    device: str = "cpu"
    highpass_hz: float = 20.0
    eq_taps_s: float = 0.085

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY:
            raise ValueError(f"intensity must be one of {sorted(INTENSITY)}, got {self.intensity!r}")
        if self.ceiling_dbtp is not None and not (-30.0 <= self.ceiling_dbtp <= 0.0):
            raise ValueError(f"ceiling_dbtp must be within -30..0 dBTP, got {self.ceiling_dbtp!r}")
        if self.target_lufs is not None and not math.isnan(self.target_lufs) and not (-60.0 <= self.target_lufs <= 0.0):
            raise ValueError(f"target_lufs must be within -60..0 LUFS, got {self.target_lufs!r}")
        if self.output_rate is not None and not (audio.MIN_RATE <= self.output_rate <= audio.MAX_RATE):
            raise ValueError(f"output_rate must be within {audio.MIN_RATE}..{audio.MAX_RATE} Hz, got {self.output_rate!r}")
        if self.device not in ("cpu", "gpu", "auto"):
            raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {self.device!r}")

    @classmethod
    def unity(cls, **kw: Any) -> "MasterSettings":
        """Every stage off: the chain returns its input (for checks and A/B)."""
        return cls(eq=False, dynamics=False, width=False, highpass=False, loudness=False, limit=False, **kw)

    def digest(self) -> str:
        """A stable hash of the settings (for seeds and resume keys)."""
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=8).hexdigest()


def resolve_target(target: str | float | None, ceiling: float | None = None) -> tuple[float | None, float | None]:
    """``"streaming"`` -> (-14, -1); ``"-16"`` -> (-16, ceiling); None -> (None, ceiling)."""
    if target is None:
        return None, ceiling
    if isinstance(target, str) and target in TARGETS:
        lufs, tp = TARGETS[target]
        return lufs, tp if ceiling is None else ceiling
    try:
        return float(target), ceiling
    except ValueError:
        raise ValueError(f"unknown target {target!r}: use a number (LUFS) or one of {sorted(TARGETS)}") from None


@dataclass
class MasterResult:
    """A rendered master and what was done to it."""

    audio: np.ndarray
    fs: int
    input_report: dict[str, Any]
    output_report: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    preset: str = ""
    settings: MasterSettings = field(default_factory=MasterSettings)
    target_lufs: float | None = None
    ceiling_dbtp: float | None = None
    target_met: bool | None = None
    ceiling_met: bool | None = None


# --- parameter derivation ---------------------------------------------------------


def eq_curve(preset: Preset, fingerprint: Mapping[str, float], fs: float, amount: float) -> np.ndarray:
    """EQ gain (dB) per 1/3-octave band: target minus the track's mid spectrum.

    Bands the track does not reach (below -70 dB re. its level, or outside
    30 Hz .. min(16 kHz, 0.45 fs)) get no gain: Acetate never boosts what is not
    there. The difference is offset so its energy-weighted mean is 0 dB (level
    is the loudness stage's job), smoothed over ~2/3 octave, clamped to
    ``preset.eq_max_db`` and scaled by ``amount``.
    """
    from acetate.pipeline.analyse import FEATURE_NAMES  # noqa: F401  (names checked below)

    centres = np.asarray(BAND_CENTRES_HZ)
    track = np.array([fingerprint.get(f"ltas_mid_{_label(fc)}hz_db", np.nan) for fc in BAND_CENTRES_HZ], dtype=np.float64)
    target = np.asarray(preset.target_mid_db)
    valid = np.isfinite(track) & (track > -70.0) & (centres >= 30.0) & (centres <= min(16000.0, 0.45 * fs))
    if valid.sum() < 3:
        return np.zeros(centres.size)
    diff = np.where(valid, target - track, 0.0)
    w = np.where(valid, 10.0 ** (target / 10.0), 0.0)
    diff = np.where(valid, diff - np.sum(w * diff) / np.sum(w), 0.0)
    kernel = np.array([0.25, 0.5, 0.25])
    for _ in range(2):  # smoothing across bands, only among valid bands
        num = np.convolve(diff * valid, kernel, mode="same")
        den = np.convolve(valid.astype(float), kernel, mode="same")
        diff = np.where(valid, num / np.maximum(den, 1e-9), 0.0)
    return np.clip(diff, -preset.eq_max_db, preset.eq_max_db) * amount


def _label(fc: float) -> str:
    from acetate.kernels.spectrum import band_labels

    return band_labels(3)[BAND_CENTRES_HZ.index(fc)]


def _active_level_db(x: Any, fs: float) -> float:
    """Energy mean (dBFS) of the 100 ms blocks of ``x`` within 20 dB of its mean and above -70 dBFS."""
    xp = backend.namespace(x)
    hop = max(1, int(round(0.1 * fs)))
    nb = x.shape[-1] // hop
    if nb == 0:
        return -math.inf
    p = xp.mean(xp.reshape(xp.astype(x[..., : nb * hop], xp.float64) ** 2, (x.shape[0], nb, hop)), axis=(0, 2))
    with np.errstate(divide="ignore"):
        lvl = 10.0 * xp.log10(p)
    keep = lvl > -70.0
    if not bool(backend.to_host(xp.any(keep))):
        return -math.inf
    mean = xp.sum(xp.where(keep, p, 0.0)) / xp.sum(keep)
    keep = keep & (lvl > 10.0 * xp.log10(mean) - 20.0)
    return backend.to_float(10.0 * xp.log10(xp.sum(xp.where(keep, p, 0.0)) / xp.sum(keep)))


# --- the chain --------------------------------------------------------------------


def _prepare(x: np.ndarray, fs: int, settings: MasterSettings, xp: Any) -> tuple[Any, int, list[str]]:
    notes: list[str] = []
    if x.ndim != 2 or x.shape[0] < 1:
        raise RenderError(f"audio must be shaped (channels, samples), got {x.shape}")
    if x.shape[0] > 2:
        raise RenderError(f"{x.shape[0]}-channel input: only mono and stereo masters are supported yet (no silent downmix)")
    if x.shape[1] < int(0.4 * fs):
        raise RenderError(f"{x.shape[1] / fs:.3f} s of audio: shorter than one 400 ms loudness block")
    xd = backend.to_device(x, xp, dtype="float32")
    if x.shape[0] == 1:
        xd = xp.concat([xd, xd], axis=0)
        notes.append("mono input: delivered as dual-mono stereo (identical channels)")
    out_fs = int(settings.output_rate or fs)
    if out_fs != fs:
        g = math.gcd(out_fs, fs)
        xd = xp.astype(backend.signal(xp).resample_poly(xd, out_fs // g, fs // g, axis=-1), xp.float32)
        notes.append(f"resampled {fs} Hz -> {out_fs} Hz before mastering")
    return xd, out_fs, notes


def _dynamics_and_width(y: Any, fs: int, preset: Preset, amount: float, settings: MasterSettings, params: dict) -> Any:
    xp = backend.namespace(y)
    edges = preset.crossovers_hz
    if settings.dynamics:
        bands = fir.crossover_bands(y, fs, edges)
        out = xp.zeros_like(y)
        applied = []
        for b in range(bands.shape[0]):  # 3-5 bands: a loop over stages, not samples
            band = bands[b]
            level = _active_level_db(band, fs)
            if not math.isfinite(level):
                out = out + band
                applied.append({"band": b, "threshold_db": None, "ratio": 1.0, "max_reduction_db": 0.0})
                continue
            ratio = 1.0 + (preset.ratio[b] - 1.0) * amount
            threshold = level + preset.threshold_rel_db[b]
            yb, gdb = dynamics.compress(
                band, fs, threshold, ratio, preset.knee_db[b], preset.attack_s[b], preset.release_s[b], link=True
            )
            out = out + yb
            applied.append(
                {"band": b, "threshold_db": round(threshold, 3), "ratio": round(ratio, 3), "max_reduction_db": round(-backend.to_float(xp.min(gdb)), 3)}
            )
        params["dynamics"] = {"crossovers_hz": list(edges), "bands": applied}
        y = out
    if settings.width and y.shape[0] == 2:
        widths = [1.0 + (w - 1.0) * amount for w in preset.width]
        widths[0] = min(widths[0], 1.0)  # low band: never wider than the source
        y = image.stereo_width(y, fs, widths, edges)
        params["width"] = {"requested": [round(w, 4) for w in widths]}
    return y


def _apply_gain(y: Any, gain_db: float) -> Any:
    xp = backend.namespace(y)
    return xp.astype(y * (10.0 ** (gain_db / 20.0)), xp.float32)


def _verified_peak_db(z: Any, fs: int) -> float:
    xp = backend.namespace(z)
    return backend.to_float(truepeak.to_db(xp.max(truepeak.true_peak(z, fs, oversample=VERIFY_OVERSAMPLE))))


def _limit(y: Any, fs: int, gain_db: float, ceiling: float, preset: Preset | None = None) -> Any:
    """Gain, then the true-peak limiter, re-run lower until the 16x meter reads <= ceiling - margin."""
    preset = preset or BALANCED
    x = _apply_gain(y, gain_db)
    ceiling = ceiling - CEILING_MARGIN_DB
    aim = ceiling
    for _ in range(_MAX_CEILING_PASSES):
        z, _ = dynamics.true_peak_limit(
            x, fs, aim, lookahead_s=preset.limiter_lookahead_s, release_s=preset.limiter_release_s, verify_oversample=8
        )
        over = _verified_peak_db(z, fs) - ceiling
        if not over > 0:
            return z
        aim -= over + 0.005
    scale = 10.0 ** (-(over + 0.005) / 20.0)  # last resort: a static trim, never an over
    return backend.namespace(z).astype(z * scale, z.dtype)


def _solve_loudness(y: Any, fs: int, target: float, ceiling: float, preset: Preset, limit: bool, params: dict, notes: list[str]) -> Any:
    """Gain before the limiter such that I(limit(g * y)) = target; the ceiling always holds."""
    xp = backend.namespace(y)
    i0 = loudness.integrated_loudness(y, fs)
    if not math.isfinite(i0):
        raise RenderError("silent programme (no 400 ms block above -70 LUFS): nothing to master")
    g = target - i0
    if not limit:
        params["loudness"] = {"gain_db": round(g, 4), "iterations": 0}
        return _apply_gain(y, g)
    tp0 = backend.to_float(truepeak.to_db(xp.max(truepeak.true_peak(y, fs, oversample=4))))
    g_max = ceiling + preset.max_limiting_db - tp0  # beyond this the limiter would exceed its allowance
    capped = g > g_max
    g = min(g, g_max)
    history: list[tuple[float, float]] = []
    z = _limit(y, fs, g, ceiling, preset)
    for it in range(8):
        iz = loudness.integrated_loudness(z, fs)
        history.append((g, iz))
        err = target - iz
        if abs(err) <= _SOLVE_TOLERANCE_LU or (capped and err > 0) or g >= g_max and err > 0:
            break
        if len(history) >= 2 and history[-1][0] != history[-2][0]:
            (g1, i1), (g2, i2) = history[-2], history[-1]
            slope = min(1.0, max(0.05, (i2 - i1) / (g2 - g1)))
        else:
            slope = 1.0
        g = min(g + err / slope, g_max)
        z = _limit(y, fs, g, ceiling, preset)
    iz = history[-1][1]
    if target - iz > TARGET_TOLERANCE_LU:
        notes.append(
            f"target {target:.1f} LUFS not reached ({iz:.2f} LUFS): it would take more than "
            f"{preset.max_limiting_db:.0f} dB of limiting under the {ceiling:.1f} dBTP ceiling; the ceiling held"
        )
    params["loudness"] = {"gain_db": round(g, 4), "iterations": len(history), "input_lufs": round(i0, 3)}
    return z


def master(
    x: np.ndarray,
    fs: int,
    settings: MasterSettings = MasterSettings(),
    *,
    preset: Preset = BALANCED,
    fingerprint: Mapping[str, float] | None = None,
) -> MasterResult:
    """Master ``x`` (host float32, (channels, samples)) at ``fs`` hertz.

    Parameters
    ----------
    x : ndarray
        Mono or stereo programme.
    fs : int
        Sample rate in hertz.
    settings : MasterSettings
    preset : Preset
        The style (from a bank's selection, or forced).
    fingerprint : mapping, optional
        The track's fingerprint (:func:`acetate.pipeline.analyse.fingerprint`)
        at the *delivery* rate; computed here when missing.

    Returns
    -------
    MasterResult

    Raises
    ------
    RenderError
        Unsupported channel count, shorter than 400 ms, silent.
    """
    xp = backend.array_module(settings.device)
    xd, out_fs, notes = _prepare(np.asarray(x), int(fs), settings, xp)
    target, ceiling = settings.target_lufs, settings.ceiling_dbtp
    target = preset.target_lufs if target is None else target
    ceiling = preset.ceiling_dbtp if ceiling is None else ceiling
    if not settings.loudness or (target is not None and math.isnan(target)):
        target = None
    amount = INTENSITY[settings.intensity]
    params: dict[str, Any] = {"preset": preset.name, "intensity": settings.intensity, "amount": amount}

    input_report = meter.loudness_report(xd, out_fs)
    if settings.eq and fingerprint is None:
        from acetate.pipeline.analyse import fingerprint as _fingerprint

        fingerprint = _fingerprint(xd, out_fs)

    y = xd
    if settings.highpass:
        y = fir.highpass_dc(y, out_fs, settings.highpass_hz)
        params["highpass_hz"] = settings.highpass_hz
    if settings.eq:
        gains = eq_curve(preset, fingerprint, out_fs, amount)
        if np.any(np.abs(gains) > 1e-3):
            n_taps = int(round(settings.eq_taps_s * out_fs)) | 1
            h = fir.design_from_gain(BAND_CENTRES_HZ, gains, out_fs, n_taps, preset.eq_phase, xp=xp)
            y = xp.astype(fir.fft_filter(y, h), xp.float32)
        params["eq"] = {"bands_hz": list(BAND_CENTRES_HZ), "gain_db": [round(float(g), 3) for g in gains], "phase": preset.eq_phase}
    y = _dynamics_and_width(y, out_fs, preset, amount, settings, params)
    if settings.gain_db:
        y = _apply_gain(y, settings.gain_db)
        params["gain_offset_db"] = settings.gain_db
    if target is not None:
        y = _solve_loudness(y, out_fs, target, ceiling, preset, settings.limit, params, notes)
    elif settings.limit:
        y = _limit(y, out_fs, 0.0, ceiling, preset)
    y = xp.clip(y, -1.0, 1.0)  # formats are fixed point; the ceiling (<= 0 dBTP) keeps this a no-op

    output_report = meter.loudness_report(y, out_fs)
    out_tp = _verified_peak_db(y, out_fs)
    output_report["true_peak_dbtp_16x"] = out_tp if math.isfinite(out_tp) else None
    target_met = None if target is None else (
        output_report["integrated_lufs"] is not None and abs(output_report["integrated_lufs"] - target) <= TARGET_TOLERANCE_LU
    )
    ceiling_met = None if not settings.limit else (not math.isfinite(out_tp) or out_tp <= ceiling + 1e-9)
    return MasterResult(
        audio=backend.to_host(y).astype(np.float32, copy=False),
        fs=out_fs,
        input_report=input_report,
        output_report=output_report,
        params=params,
        notes=notes,
        preset=preset.name,
        settings=settings,
        target_lufs=target,
        ceiling_dbtp=ceiling if settings.limit else None,
        target_met=target_met,
        ceiling_met=ceiling_met,
    )


# --- output conditioning ----------------------------------------------------------


def _bits(fmt: str) -> int | None:
    return {"wav16": 16, "flac16": 16}.get(fmt)


def write_outputs(result: MasterResult, out_stem: str | os.PathLike, formats: Sequence[str] = ("wav24",)) -> list[dict[str, Any]]:
    """Write ``result`` in each delivery format as ``<out_stem>.<ext>``, verified.

    16-bit formats get TPDF dither seeded from the content and settings (so the
    bytes are reproducible). Each written file is decoded and its true peak
    checked at 16x against the ceiling; a lossy encode (MP3) that overshoots is
    re-encoded with the gain lowered by the overshoot plus 0.1 dB (at most 4
    tries), and the report says so.

    Returns
    -------
    list of dict
        Per format: ``format``, ``path``, ``integrated_lufs``, ``true_peak_dbtp``
        (16x, decoded file), ``gain_adjust_db``.
    """
    stem = Path(out_stem)
    outputs = []
    if len({audio.FORMATS[f][0] for f in formats}) != len(formats):
        raise ValueError(f"formats {list(formats)} would write two files with the same extension")
    base = np.ascontiguousarray(result.audio)
    seed = dither.content_seed(base, result.settings.digest() + result.preset)
    for fmt in formats:
        if fmt not in audio.FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {sorted(audio.FORMATS)}")
        ext = audio.FORMATS[fmt][0]
        path = stem.with_name(f"{stem.name}.{ext}")
        adjust = 0.0
        for attempt in range(4):
            y = base if adjust == 0.0 else (base * 10.0 ** (adjust / 20.0)).astype(np.float32)
            if _bits(fmt):
                y = np.asarray(dither.tpdf_dither_quantize(y, _bits(fmt), seed), dtype=np.float32)
            audio.encode(y, result.fs, path, fmt)
            decoded, dfs = audio.decode(path)
            tp = float(truepeak.to_db(np.max(truepeak.true_peak(decoded, dfs, oversample=VERIFY_OVERSAMPLE))))
            if result.ceiling_dbtp is None or tp <= result.ceiling_dbtp or not math.isfinite(tp):
                break
            adjust -= (tp - result.ceiling_dbtp) + (0.1 if fmt == "mp3" else 0.001)
        integrated = loudness.integrated_loudness(decoded, dfs)
        outputs.append(
            {
                "format": fmt,
                "path": str(path),
                "integrated_lufs": integrated if math.isfinite(integrated) else None,
                "true_peak_dbtp": tp if math.isfinite(tp) else None,
                "gain_adjust_db": round(adjust, 4),
            }
        )
        if adjust:
            result.notes.append(f"{fmt}: gain lowered {-adjust:.2f} dB so the decoded file keeps the ceiling")
    return outputs
