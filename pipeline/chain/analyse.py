"""Fingerprint: the kernels' measurements of one track assembled into a named feature row.

:func:`fingerprint` returns a ``dict[str, float]`` whose keys are exactly
:data:`FEATURE_NAMES` (defined, with units, in :mod:`acetate.schemas.features`)
in that order; :func:`feature_vector` turns it into a fixed-order float64
vector.  Everything runs on the input's backend (NumPy, CuPy or another array-API
namespace); the figures come back to the host in one read (after a first one that
checks the input is finite), and only a track silent for a second or more at either end
is probed further.

Features (units in ``FEATURE_UNITS``)
-------------------------------------
* ``duration_s``, ``sample_rate`` (Hz), ``channels``.
* Loudness from the project meter (:func:`acetate.kernels.loudness.measure`,
  :func:`acetate.kernels.truepeak.true_peak` at 4x, ``sample_peak``):
  ``integrated_lufs``, ``momentary_max_lufs``, ``short_term_max_lufs``,
  ``loudness_range_lu``, ``true_peak_dbtp`` and ``sample_peak_dbfs`` (maximum
  over channels).  ``plr_db`` = true peak dBTP minus integrated LUFS.
  ``crest_factor_db`` = sample peak dBFS minus RMS dBFS (RMS over all
  channels and samples).  Undefined values (silence, too short: the meter's
  ``-inf``) are reported as NaN.
* Spectrum, from one STFT (Hann, ~85 ms frames -- 4096 samples at 48 kHz --
  50 % overlap) of the channel-mean power ``(|L|^2 + |R|^2) / 2``, bins below
  20 Hz left out: ``spectral_centroid_hz``, ``spectral_rolloff_hz`` (85 % of
  the power below), ``spectral_flatness`` (geometric / arithmetic mean over
  20 Hz .. 20 kHz, 0..1), ``spectral_tilt_db_per_oct`` (least-squares slope of
  1/3-octave band *energy* in dB against log2 frequency over 50 Hz .. 16 kHz:
  pink noise reads 0, white noise +3.01).
* ``ltas_mid_<fc>hz_db`` / ``ltas_side_<fc>hz_db``: long-term power of mid
  ``(L+R)/2`` and side ``(L-R)/2`` in each ISO 1/3-octave band 20 Hz .. 20 kHz,
  in dB relative to the overall mean-square level (mean power of L and R =
  total mid + side power), floored at ``LEVEL_FLOOR_DB`` (-120 dB); NaN for
  bands whose centre is at or above Nyquist and for digital silence.
* ``dynamics_<fc>hz_db``: per octave band (31.5 Hz .. 16 kHz), P95 - P10 of the
  short-time (per STFT frame) band level over frames whose total level is at
  least -70 dBFS (band levels floored at -150 dB); NaN with < 2 such frames.
* ``correlation_overall`` / ``correlation_<fc>hz``: L/R correlation from the
  cross-spectrum, overall (20 Hz .. Nyquist) and per octave band, -1..1.
* ``width_overall_db`` / ``width_<fc>hz_db``: side/mid energy ratio in dB,
  clipped to +-120 dB (identical channels: -120; L = -R: +120).
* ``dc_offset_left`` / ``dc_offset_right``: mean sample value per channel,
  linear full scale, signed.
* ``clip_run_count``: runs of >= 3 consecutive samples with
  ``|x| >= 0.999`` full scale, counted per channel and summed;
  ``clip_run_samples``: samples in those runs.
* ``leading_silence_s`` / ``trailing_silence_s``: time before the first and
  after the last sample whose magnitude (any channel) exceeds -60 dBFS; the
  whole duration when no sample does.

Mono input is analysed as dual mono (L = R): correlation 1, width -120 dB,
side LTAS at the floor, ``dc_offset_right`` = ``dc_offset_left``.  With more
than two channels the spectral and stereo features use the first two (front
L/R in WAV order); loudness, peaks, DC, clipping and silence use what each
defines (the meter weighs all channels).
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from acetate.kernels import backend, spectrum, stereo, truepeak
from acetate.schemas.features import FEATURE_NAMES, FEATURE_UNITS, OCTAVE_LABELS, THIRD_OCTAVE_LABELS

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_UNITS",
    "LOUDNESS_KEYS",
    "LEVEL_FLOOR_DB",
    "SILENCE_DBFS",
    "CLIP_LEVEL",
    "CLIP_MIN_RUN",
    "fingerprint",
    "feature_vector",
    "analyze_file",
    "clip_runs",
    "silence_bounds",
]

#: Keys taken from the loudness meter (or from the ``loudness`` argument of :func:`fingerprint`).
LOUDNESS_KEYS: tuple[str, ...] = (
    "integrated_lufs",
    "momentary_max_lufs",
    "short_term_max_lufs",
    "loudness_range_lu",
    "true_peak_dbtp",
    "sample_peak_dbfs",
)
#: Floor of relative band levels (dB) and clip of width (+-dB).
LEVEL_FLOOR_DB = -120.0
#: Silence threshold for leading/trailing silence, dBFS (sample magnitude).
SILENCE_DBFS = -60.0
#: Clipping: magnitude threshold (full scale) and shortest run (samples).
CLIP_LEVEL = 0.999
CLIP_MIN_RUN = 3
#: Frames below this total level (dBFS mean square) are left out of band dynamics.
DYNAMICS_GATE_DB = -70.0
#: Lowest frequency (Hz) of the spectral descriptors and the overall stereo figures.
SPECTRAL_FMIN_HZ = 20.0


def clip_runs(x: Any, level: float = CLIP_LEVEL, min_run: int = CLIP_MIN_RUN) -> tuple[int, int]:
    """Count runs of at least ``min_run`` consecutive samples with ``|x| >= level`` (full scale).

    Parameters
    ----------
    x : array, shape (C, n)
        Audio, full scale 1.0.
    level : float
        Magnitude threshold, linear full scale (default 0.999).
    min_run : int
        Shortest run that counts, samples (default 3).

    Returns
    -------
    runs, samples : int
        Number of qualifying runs (summed over channels; a run never spans
        two channels) and the samples they hold.
    """
    if not (0.0 < level) or not math.isfinite(level):
        raise ValueError(f"level must be a positive finite full-scale value, got {level!r}")
    if int(min_run) != min_run or min_run < 1:
        raise ValueError(f"min_run must be a positive whole number of samples, got {min_run!r}")
    xp = backend.namespace(x)
    hot = xp.astype((x >= level) | (x <= -level), xp.int8)  # no float copy of |x|
    pad = xp.zeros((hot.shape[0], 1), dtype=xp.int8)
    edges = xp.diff(xp.reshape(xp.concat([pad, hot, pad], axis=1), (-1,)))
    starts = xp.nonzero(edges == 1)[0]
    ends = xp.nonzero(edges == -1)[0]
    lengths = ends - starts
    long = lengths >= min_run
    runs, samples = backend.read_together(xp.sum(xp.astype(long, xp.int64)), xp.sum(xp.where(long, lengths, 0)))  # one read
    return int(runs), int(samples)


def _loud_probe(seg: Any, t: float) -> tuple[Any, Any]:
    """Whether any sample of ``seg`` (C, m) exceeds ``t`` in magnitude in any channel, and the
    first such position (0-d device arrays: nothing read back; no copy of ``|x|``)."""
    xp = backend.namespace(seg)
    loud = (xp.max(seg, axis=0) > t) | (xp.min(seg, axis=0) < -t)
    return xp.any(loud), xp.argmax(xp.astype(loud, xp.int8))


def _silence_pending(x: Any, fs: float, threshold_dbfs: float = SILENCE_DBFS) -> backend.Pending:
    """:func:`silence_bounds` as a :class:`~acetate.kernels.backend.Pending`: the probes of the
    first and the last stretch wait for the caller's read; only a track silent through a whole
    stretch at either end is probed further (a read per stretch)."""
    n = int(x.shape[1])
    t = 10.0 ** (threshold_dbfs / 20.0)
    step = max(1, int(fs))

    def first_loud(seg: Any) -> int | None:
        hit, k = backend.read_together(*_loud_probe(seg, t))
        return int(k) if bool(hit) else None

    # Scan from each end a stretch at a time: music starts within the first stretch, so a
    # track is read a second or two deep, not through (a silent one is read once). The first
    # stretch from each end is probed at once; the last loud sample of [n - step, n) is the
    # one the backward scan finds first, wherever the first loud sample lies.
    back = max(0, n - step)
    probes = (*_loud_probe(x[:, : min(n, step)], t), *_loud_probe(x[:, back:n][:, ::-1], t))

    def finish(host: list[np.ndarray]) -> tuple[float, float]:
        first = int(host[1]) if bool(host[0]) else None
        for a in range(step, n, step) if first is None else ():  # stretches of a second, not samples
            k = first_loud(x[:, a : min(n, a + step)])
            if k is not None:
                first = a + k
                break
        if first is None:
            return n / fs, n / fs
        last = first
        if bool(host[2]):
            last = n - 1 - int(host[3])
        else:
            for b in range(back, first, -step):  # from the end back to the first loud sample
                a = max(first, b - step)
                k = first_loud(x[:, a:b][:, ::-1])
                if k is not None:
                    last = b - 1 - k
                    break
        return first / fs, (n - 1 - last) / fs

    return backend.Pending(probes, finish)


def silence_bounds(x: Any, fs: float, threshold_dbfs: float = SILENCE_DBFS) -> tuple[float, float]:
    """Leading and trailing silence, seconds.

    Silence is every sample whose magnitude is at or below ``threshold_dbfs``
    in all channels.  Returns ``(leading_s, trailing_s)``; both equal the
    duration when the whole signal is silent.
    """
    return backend.read_pending(_silence_pending(x, fs, threshold_dbfs))[0]


def _finite_or_nan(v: Any) -> float:
    v = float(v)
    return v if math.isfinite(v) else math.nan


def _db20(v: float) -> float:
    return 20.0 * math.log10(v) if v > 0 else math.nan


def _loudness_pending(x: Any, fs: int, given: Mapping[str, float] | None) -> backend.Pending:
    """The :data:`LOUDNESS_KEYS` figures not ``given``, measured on the device: a
    :class:`~acetate.kernels.backend.Pending` of the meter's values and the two peaks."""
    given = dict(given or {})
    unknown = [k for k in given if k not in LOUDNESS_KEYS]
    if unknown:
        raise ValueError(f"loudness has unknown key {unknown[0]!r}; expected some of {list(LOUDNESS_KEYS)}")
    out = {k: _finite_or_nan(given[k]) for k in given}
    xp = backend.namespace(x)
    sp = truepeak.sample_peak(x) if "sample_peak_dbfs" not in out or "true_peak_dbtp" not in out else None
    own = {}
    if "sample_peak_dbfs" not in out:
        own["sample_peak_dbfs"] = xp.max(sp)
    stats = None
    if any(k not in out for k in LOUDNESS_KEYS[:4]):
        from acetate.kernels import loudness as meter  # lazy: sibling kernel

        stats = meter.measure_pending(x, fs)
    if "true_peak_dbtp" not in out:
        own["true_peak_dbtp"] = xp.max(truepeak.true_peak(x, fs, oversample=4, sample_peaks=sp))  # sp: that very x's

    def finish(host: list[np.ndarray]) -> dict[str, float]:
        for k, v in zip(own, host):
            out[k] = _db20(float(v))
        if stats is not None:
            st = stats.finish(host[len(own) :])
            for k in LOUDNESS_KEYS[:4]:
                out.setdefault(k, _finite_or_nan(getattr(st, k)))
        return out

    return backend.Pending((*own.values(), *(stats.values if stats is not None else ())), finish)


def fingerprint(x: Any, fs: int, *, loudness: Mapping[str, float] | None = None) -> dict[str, float]:
    """Measure one track's features (see the module docstring for each one).

    Parameters
    ----------
    x : array, shape (C, n) or (n,)
        Audio on NumPy or CuPy, full scale 1.0 (computed in float32 /
        float64 accumulations); must be finite.
    fs : int
        Sample rate, hertz.
    loudness : mapping, optional
        Precomputed values for any of :data:`LOUDNESS_KEYS` (e.g. from a
        verification pass); the rest are measured with the project meter.

    Returns
    -------
    dict of str to float
        Keys exactly :data:`FEATURE_NAMES`, in order.

    Raises
    ------
    ValueError
        On a bad shape, no samples, non-finite samples, a bad ``fs`` or an
        unknown ``loudness`` key.
    """
    xp = backend.namespace(x)
    if isinstance(fs, bool) or not isinstance(fs, (int, np.integer, float)) or not math.isfinite(fs) or fs <= 0 or int(fs) != fs:
        raise ValueError(f"fs must be a positive whole number of hertz, got {fs!r}")
    fs = int(fs)
    if x.ndim == 1:
        x = xp.reshape(x, (1, -1))
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"audio must have shape (channels, n) with n >= 1, got shape {tuple(x.shape)}")
    if x.dtype != xp.float32:
        x = xp.astype(x, xp.float32)
    n_ch, n = int(x.shape[0]), int(x.shape[1])
    # Per-channel mean (DC offset) doubles as the finiteness check: a NaN or
    # Inf anywhere makes its channel's float64 sum non-finite.
    dc_all = xp.sum(x, axis=1, dtype=xp.float64) / n  # the mean (NumPy's mean is this very sum and division)
    if not bool(backend.to_host(xp.all(xp.isfinite(dc_all)))):
        n_bad = int(backend.to_float(xp.sum(xp.astype(~xp.isfinite(x), xp.int64))))
        raise ValueError(f"audio has {n_bad} non-finite (NaN or Inf) samples")
    lr = xp.concat([x, x], axis=0) if n_ch == 1 else x[:2, :]

    f: dict[str, float] = {"duration_s": n / fs, "sample_rate": float(fs), "channels": float(n_ch)}
    # Every figure is computed on the device, then read back in one transfer (backend.read_pending):
    # the meter's, the peaks, the spectra and the stereo statistics, and the silence probes.
    loud = _loudness_pending(x, fs, loudness)
    # Mean square over all channels and samples: float32 squares summed in float64,
    # a chunk at a time (no full-length temporary for long programmes).
    step = 1 << 20
    ms_parts = [xp.sum(x[:, a : min(n, a + step)] * x[:, a : min(n, a + step)], dtype=xp.float64) for a in range(0, n, step)]

    # One pass of STFT batches over L/R, reduced on the fly, shared by spectrum and stereo analysis.
    p_ll, p_rr, p_lr, oct_frames, frame_total, freqs, _ = spectrum.stereo_power_stats(lr, fs, 1)
    above = freqs >= SPECTRAL_FMIN_HZ
    p_mean = xp.where(above, 0.5 * (p_ll + p_rr), 0.0)
    centres = spectrum.band_edges(fs, 3).centre
    spectral = {
        "spectral_centroid_hz": spectrum.spectral_centroid(p_mean, freqs),
        "spectral_rolloff_hz": spectrum.spectral_rolloff(p_mean, freqs, 0.85),
        "spectral_flatness": spectrum.spectral_flatness(p_mean, freqs, SPECTRAL_FMIN_HZ, 20000.0),
        "spectral_tilt_db_per_oct": spectrum.spectral_tilt(spectrum.band_power(0.5 * (p_ll + p_rr), freqs, fs, 3), centres),
    }
    # Mid / side LTAS relative to the overall level (total mid + side power = mean of L and R power).
    reference = xp.sum(0.5 * (p_ll + p_rr))
    mid = spectrum.band_power(0.25 * (p_ll + p_rr + 2.0 * p_lr), freqs, fs, 3)
    side = spectrum.band_power(xp.maximum(0.25 * (p_ll + p_rr - 2.0 * p_lr), 0.0), freqs, fs, 3)
    # Per-octave-band dynamics of the channel-mean short-time power.
    dyn = spectrum.band_dynamics(oct_frames, frame_total, gate_db=DYNAMICS_GATE_DB)
    # Stereo.
    st = stereo.stereo_stats_from_cross(p_ll, p_rr, p_lr, freqs, fs, fraction=1, fmin=SPECTRAL_FMIN_HZ)
    own = (
        *ms_parts,
        *spectral.values(),
        spectrum.level_db(mid, reference, LEVEL_FLOOR_DB),
        spectrum.level_db(side, reference, LEVEL_FLOOR_DB),
        dyn,
        st.correlation,
        stereo.width_db(st.width, -LEVEL_FLOOR_DB),
        st.correlation_overall,
        stereo.width_db(st.width_overall, -LEVEL_FLOOR_DB),
        dc_all,
    )
    loud_f, host, (leading, trailing) = backend.read_pending(
        loud, backend.Pending(own, lambda h: h), _silence_pending(x, fs)
    )  # the one read of the figures
    f.update({k: loud_f[k] for k in LOUDNESS_KEYS})
    f["plr_db"] = f["true_peak_dbtp"] - f["integrated_lufs"]
    ms_all = sum(float(v) for v in host[: len(ms_parts)]) / (n_ch * n)
    rms_db = 10.0 * math.log10(ms_all) if ms_all > 0 else math.nan
    f["crest_factor_db"] = f["sample_peak_dbfs"] - rms_db
    rest = iter(host[len(ms_parts) :])
    for k in spectral:
        f[k] = float(next(rest))
    mid_db, side_db, dyn_h, corr, width, corr_all, width_all, dc = rest
    for i, lab in enumerate(THIRD_OCTAVE_LABELS):
        f[f"ltas_mid_{lab}hz_db"] = float(mid_db[i])
    for i, lab in enumerate(THIRD_OCTAVE_LABELS):
        f[f"ltas_side_{lab}hz_db"] = float(side_db[i])
    for i, lab in enumerate(OCTAVE_LABELS):
        f[f"dynamics_{lab}hz_db"] = float(dyn_h[i])
    f["correlation_overall"] = float(corr_all)
    for i, lab in enumerate(OCTAVE_LABELS):
        f[f"correlation_{lab}hz"] = float(corr[i])
    f["width_overall_db"] = float(width_all)
    for i, lab in enumerate(OCTAVE_LABELS):
        f[f"width_{lab}hz_db"] = float(width[i])

    # Time-domain housekeeping.
    f["dc_offset_left"], f["dc_offset_right"] = float(dc[0]), float(dc[1] if n_ch > 1 else dc[0])
    # No sample reaches the clip level (the usual case for a mix): no runs, and no pass over the track.
    peak = 10.0 ** (f["sample_peak_dbfs"] / 20.0) if math.isfinite(f["sample_peak_dbfs"]) else math.inf
    runs, run_samples = clip_runs(x) if peak >= CLIP_LEVEL * (1.0 - 1e-6) else (0, 0)
    f["clip_run_count"], f["clip_run_samples"] = float(runs), float(run_samples)
    f["leading_silence_s"], f["trailing_silence_s"] = leading, trailing

    missing = [k for k in FEATURE_NAMES if k not in f]
    if missing or len(f) != len(FEATURE_NAMES):  # pragma: no cover - guards the single source of truth
        raise RuntimeError(f"fingerprint out of step with FEATURE_NAMES: missing {missing[:3]}")
    return {k: float(f[k]) for k in FEATURE_NAMES}


def band_levels(fp: Mapping[str, float], kind: str = "mid") -> np.ndarray:
    """The fingerprint's long-term spectrum of ``kind`` (``"mid"`` or ``"side"``) as a float64 vector on the
    31-band 1/3-octave grid (dB re. the overall level; NaN where the fingerprint has none)."""
    if kind not in ("mid", "side"):
        raise ValueError(f"kind must be 'mid' or 'side', got {kind!r}")
    return np.array([fp.get(f"ltas_{kind}_{b}hz_db", math.nan) for b in THIRD_OCTAVE_LABELS], dtype=np.float64)


def feature_vector(fp: Mapping[str, float]) -> np.ndarray:
    """A fingerprint as a float64 vector in :data:`FEATURE_NAMES` order.

    Raises
    ------
    KeyError
        Naming the first feature missing from ``fp``.
    """
    missing = [k for k in FEATURE_NAMES if k not in fp]
    if missing:
        raise KeyError(f"fingerprint lacks feature {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return np.array([float(fp[k]) if fp[k] is not None else math.nan for k in FEATURE_NAMES], dtype=np.float64)


def analyze_file(path: str | os.PathLike, *, device: str = "cpu", loudness: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Check, decode (mono as dual mono, as every entry point does) and fingerprint ``path``.

    Parameters
    ----------
    path : str or path-like
        Audio file (decoded with :func:`acetate.pipeline.stages.decode`).
    device : {"cpu", "gpu", "auto"}
        Where to compute (see :func:`acetate.kernels.backend.array_module`).
    loudness : mapping, optional
        Precomputed loudness values (see :func:`fingerprint`).

    Returns
    -------
    dict
        ``{"path": str(path), **fingerprint}`` -- a row for
        :func:`acetate.schemas.features.features_table`.
    """
    from acetate.pipeline import stages

    path = os.fspath(path)
    stages.check_input(path)
    prog = stages.decode(path, device=device)  # as every entry point decodes it: mono as dual mono
    return {"path": str(path), **fingerprint(prog.audio, prog.fs, loudness=loudness)}
