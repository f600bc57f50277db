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
   the target within 0.1 LU, with the true peak (16x verification) at or below
   the ceiling. Where both cannot hold (the limiter would have to reduce more
   than the preset allows), the ceiling wins and the report says so.

Writing the delivered files (dither, encoding, the read-back checks) is the
write stage's, :mod:`acetate.pipeline.chain.deliver`. Data stays on one device from decode to the final
host copy: no round trips inside the chain.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from acetate.kernels import backend, blocks, compressor, fir, image, limiter, loudness, truepeak, units
from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.pipeline.chain import levels, meter
from acetate.pipeline.chain.presets import BALANCED, Preset
from acetate.pipeline.io import audio

__all__ = [
    "TARGETS",
    "INTENSITY",
    "MasterSettings",
    "MasterResult",
    "resolve_target",
    "eq_curve",
    "master",
    "RenderError",
    "check_programme",
    "SilentProgramme",
    "resample",
]

#: Named delivery targets: (integrated LUFS, true-peak ceiling dBTP).
TARGETS: dict[str, tuple[float, float]] = {
    "streaming": (-14.0, -1.0),
    "apple": (-16.0, -1.0),
    "ebu-r128": (-23.0, -1.0),
    "atsc-a85": (-24.0, -2.0),
    "cd": (-9.0, -0.3),
}

#: The stages a per-stage amount (:attr:`MasterSettings.amounts`) can scale.
AMOUNT_STAGES = ("eq", "dynamics", "width", "limiter")


def parse_amounts(text: str | None) -> tuple[tuple[str, float], ...]:
    """``"eq=0.5,dynamics=0.3,width=0,limiter=1"`` -> ``(("dynamics", 0.3), ("eq", 0.5), ...)``.

    Raises ``ValueError`` naming a malformed item; stages and ranges are checked by
    :class:`MasterSettings`.

    Examples
    --------
    >>> parse_amounts("eq=0.5, width=0")
    (('eq', 0.5), ('width', 0.0))
    """
    out = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out.append((name.strip().lower(), float(value)))
        except ValueError:
            raise ValueError(f"amount {item.strip()!r} is not STAGE=NUMBER (stages: {', '.join(AMOUNT_STAGES)})") from None
    return tuple(out)


#: How much of the preset each intensity applies (EQ amount, ratio - 1, width - 1).
INTENSITY: dict[str, float] = {"low": 0.35, "medium": 0.65, "high": 1.0}

#: Loudness tolerance of a master (LU) and the solver's aim inside it.
TARGET_TOLERANCE_LU = 0.1
_SOLVE_TOLERANCE_LU = 0.02
#: Ceiling verification: the project's meter at 16x (under-reads <= 0.04 dB at
#: 0.45 fs; its interpolator errs high rather than low), so the ceiling also holds
#: under any compliant 4x or 8x meter. The limiter computes its gain from what this
#: same 16x interpolator (and libebur128's) reads, evaluated only around candidate
#: peaks (:mod:`acetate.kernels.limiter`); where this check still finds an over, the
#: limiter runs again with its ceiling lowered by the excess.
VERIFY_OVERSAMPLE = 16
_MAX_CEILING_PASSES = 4
#: The limiter aims this far under the ceiling (and the 16x check holds it there):
#: interpolating meters with pass-band ripple (libebur128 and ffmpeg's ebur128 read
#: up to ~0.01-0.02 dB high on dense masters) must still read under the ceiling.
CEILING_MARGIN_DB = 0.05


class RenderError(ValueError):
    """A track the renderer cannot master as asked (the message says why)."""


class SilentProgramme(RenderError):
    """No 400 ms block above the -70 LUFS absolute gate: loudness undefined, nothing to master."""


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
    max_limiting_db : float or None
        The most gain reduction the limiter may apply to reach the target (None: the
        preset's ``max_limiting_db``). Beyond it the chain's own compression is pushed
        first (:func:`master`), and only then is the target reported missed.
    amounts : tuple of (stage, amount)
        Per-stage amounts in [0, 1] that replace the intensity for that stage
        (:data:`AMOUNT_STAGES`; :func:`parse_amounts` reads ``"eq=0.5,dynamics=0.3"``):
        0 bypasses it, 1 is the preset's full setting. ``eq`` scales the EQ curve,
        ``dynamics`` each ratio's distance from 1, ``width`` each width's distance from 1,
        ``limiter`` the limiter's budget (0: no limiting; the loudness gain is trimmed
        so the ceiling still holds).
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
    max_limiting_db: float | None = None
    amounts: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY:
            raise ValueError(f"intensity must be one of {sorted(INTENSITY)}, got {self.intensity!r}")
        # The hard limits (what can be rendered at all); what is *safe* is the callers' policy
        # (acetate.pipeline.chain.levels.check_levels: the CLI and job files refuse louder without a flag).
        lo_c, hi_c = levels.HARD_CEILING_DBTP
        lo_t, hi_t = levels.HARD_TARGET_LUFS
        if self.ceiling_dbtp is not None and not (lo_c <= self.ceiling_dbtp <= hi_c):
            raise ValueError(f"ceiling_dbtp must be within {lo_c:g}..{hi_c:g} dBTP, got {self.ceiling_dbtp!r}")
        if self.target_lufs is not None and not math.isnan(self.target_lufs) and not (lo_t <= self.target_lufs <= hi_t):
            raise ValueError(f"target_lufs must be within {lo_t:g}..{hi_t:g} LUFS, got {self.target_lufs!r}")
        if self.output_rate is not None and not (audio.MIN_RATE <= self.output_rate <= audio.MAX_RATE):
            raise ValueError(f"output_rate must be within {audio.MIN_RATE}..{audio.MAX_RATE} Hz, got {self.output_rate!r}")
        if self.device not in ("cpu", "gpu", "auto"):
            raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {self.device!r}")
        if self.max_limiting_db is not None and not (0.0 <= self.max_limiting_db <= 60.0):
            raise ValueError(f"max_limiting_db must be within 0..60 dB, got {self.max_limiting_db!r}")
        amounts = tuple((str(k), float(v)) for k, v in (self.amounts.items() if isinstance(self.amounts, Mapping) else self.amounts))
        for k, v in amounts:
            if k not in AMOUNT_STAGES:
                raise ValueError(f"amounts: unknown stage {k!r}; choose from {', '.join(AMOUNT_STAGES)}")
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"amounts: {k} must be within 0..1, got {v!r}")
        if len({k for k, _ in amounts}) != len(amounts):
            raise ValueError(f"amounts: a stage named twice in {amounts!r}")
        object.__setattr__(self, "amounts", tuple(sorted(amounts)))

    def stage_amounts(self) -> dict[str, float]:
        """The amount of each of :data:`AMOUNT_STAGES`: :attr:`amounts` where given, else the
        intensity's (:data:`INTENSITY`) for eq, dynamics and width and 1 for the limiter."""
        base = INTENSITY[self.intensity]
        return {"eq": base, "dynamics": base, "width": base, "limiter": 1.0, **dict(self.amounts)}

    @classmethod
    def unity(cls, **kw: Any) -> "MasterSettings":
        """Every stage off: the chain returns its input (for checks and A/B)."""
        return cls(eq=False, dynamics=False, width=False, highpass=False, loudness=False, limit=False, **kw)

    def digest(self) -> str:
        """A stable hash of the settings (for seeds and resume keys); a field added later is
        left out while it has its default, so the hash of older settings does not change."""
        d = asdict(self)
        if d["max_limiting_db"] is None:
            del d["max_limiting_db"]
        if not d["amounts"]:
            del d["amounts"]
        return hashlib.blake2b(json.dumps(d, sort_keys=True).encode(), digest_size=8).hexdigest()


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
    #: Gating-block loudness of the master (LUFS above -70, float32): for album pooling.
    output_blocks: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    #: The master on the device it was rendered on (``audio`` itself on the CPU), so a
    #: verification pass need not copy it back; drop it when done.
    device_audio: Any = None


# --- parameter derivation ---------------------------------------------------------


def eq_curve(preset: Preset, fingerprint: Mapping[str, float], fs: float, amount: float) -> np.ndarray:
    """EQ gain (dB) per 1/3-octave band for this track.

    A ``"target"`` preset: the preset's target minus the track's mid spectrum. A
    ``"relative"`` (learned) preset: its correction curve itself, the move the
    label's engineers made, applied to the track as it is.

    Bands the track does not reach (below -70 dB re. its level, or outside
    30 Hz .. min(16 kHz, 0.45 fs)) get no gain: Acetate never boosts what is not
    there. The curve is offset so its energy-weighted mean is 0 dB (level
    is the loudness stage's job; weights: the target's band energy, or the
    track's own under a relative correction), smoothed over ~2/3 octave (a target's difference;
    a learned curve was smoothed when it was learned), clamped to
    ``preset.eq_max_db`` and scaled by ``amount``.
    """
    centres = np.asarray(BAND_CENTRES_HZ)
    track = np.array([fingerprint.get(f"ltas_mid_{_label(fc)}hz_db", np.nan) for fc in BAND_CENTRES_HZ], dtype=np.float64)
    valid = np.isfinite(track) & (track > -70.0) & (centres >= 30.0) & (centres <= min(16000.0, 0.45 * fs))
    if valid.sum() < 3:
        return np.zeros(centres.size)
    if preset.eq_mode == "relative":
        diff = np.where(valid, np.asarray(preset.correction_mid_db, dtype=np.float64), 0.0)
        w = np.where(valid, units.db_to_power(np.where(valid, track + diff, 0.0)), 0.0)
    else:
        target = np.asarray(preset.target_mid_db)
        diff = np.where(valid, target - track, 0.0)
        w = np.where(valid, units.db_to_power(target), 0.0)
    diff = np.where(valid, diff - np.sum(w * diff) / np.sum(w), 0.0)
    kernel = np.array([0.25, 0.5, 0.25])
    for _ in range(
        0 if preset.eq_mode == "relative" else 2
    ):  # smoothing across bands, only among valid bands (a learned curve is smooth already)
        num = np.convolve(diff * valid, kernel, mode="same")
        den = np.convolve(valid.astype(float), kernel, mode="same")
        diff = np.where(valid, num / np.maximum(den, 1e-9), 0.0)
    return np.clip(diff, -preset.eq_max_db, preset.eq_max_db) * amount


@functools.cache
def _label(fc: float) -> str:
    from acetate.kernels.spectrum import band_labels

    return band_labels(3)[BAND_CENTRES_HZ.index(fc)]


def _crossover_energies(
    fingerprint: Mapping[str, float], eq_gains_db: np.ndarray, edges_hz: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean-square power of mid and side (dB re. the overall level -> linear) per crossover band.

    Summed from the fingerprint's 1/3-octave long-term spectra (bands whose centre
    falls in the crossover band), both with the EQ curve applied (the FIR filters L and R).
    """
    centres = np.asarray(BAND_CENTRES_HZ)
    labels = [_label(fc) for fc in BAND_CENTRES_HZ]
    mid = np.array([fingerprint.get(f"ltas_mid_{lb}hz_db", np.nan) for lb in labels], dtype=np.float64) + eq_gains_db
    side = (
        np.array([fingerprint.get(f"ltas_side_{lb}hz_db", np.nan) for lb in labels], dtype=np.float64) + eq_gains_db
    )  # the FIR filters L and R: side too
    band = np.searchsorted(np.asarray(edges_hz), centres)  # crossover band of each 1/3-octave band
    pm = np.where(np.isfinite(mid), units.db_to_power(np.nan_to_num(mid, nan=-300.0)), 0.0)
    ps = np.where(np.isfinite(side), units.db_to_power(np.nan_to_num(side, nan=-300.0)), 0.0)
    n = len(edges_hz) + 1
    return np.bincount(band, pm, minlength=n), np.bincount(band, ps, minlength=n)


def _overall_level_db(fingerprint: Mapping[str, float]) -> float:
    """Mean-square level (dBFS) of the track: sample peak minus crest factor."""
    return float(fingerprint.get("sample_peak_dbfs", np.nan)) - float(fingerprint.get("crest_factor_db", np.nan))


def widths_for_correlation(mid_energy: np.ndarray, side_energy: np.ndarray, widths: Sequence[float]) -> np.ndarray:
    """Per-band side gains, with widening scaled back so overall correlation stays >= the input's.

    With bands uncorrelated with each other and mid/side energies ``M_b, S_b``,
    the L/R correlation after side gains ``w_b`` is
    ``sum(M_b - w_b^2 S_b) / sum(M_b + w_b^2 S_b)``. Narrowing (``w < 1``, the
    low band by default) is always applied; widening is scaled by the largest
    ``alpha`` in [0, 1] (``w -> 1 + alpha (w - 1)``) that keeps the correlation
    at or above the input's. So a master never ends up less mono-compatible
    than its mix: a preset widens the top only as far as it tightens the bottom.
    """
    w = np.asarray(widths, dtype=np.float64)
    m, sd = np.asarray(mid_energy, dtype=np.float64), np.asarray(side_energy, dtype=np.float64)
    if m.sum() + sd.sum() <= 0:
        return np.minimum(w, 1.0)

    def rho(ww: np.ndarray) -> float:
        return float(np.sum(m - ww**2 * sd) / max(np.sum(m + ww**2 * sd), 1e-300))

    rho_in = rho(np.ones_like(w))
    narrow = np.minimum(w, 1.0)
    widen = np.maximum(w, 1.0) - 1.0
    if rho(narrow + widen) >= rho_in:
        return narrow + widen
    lo, hi = 0.0, 1.0
    for _ in range(40):  # bisection on one scalar
        mid_a = 0.5 * (lo + hi)
        lo, hi = (mid_a, hi) if rho(narrow + mid_a * widen) >= rho_in else (lo, mid_a)
    return narrow + lo * widen


# --- the chain --------------------------------------------------------------------


def check_programme(x: Any, fs: int) -> None:
    """Raise :class:`RenderError` for audio Acetate cannot master: not shaped (channels, samples),
    more than two channels (no silent downmix), or shorter than one 400 ms loudness block.

    The one such check: the analyse stage and :func:`master` both call it.
    """
    if x.ndim != 2 or x.shape[0] < 1:
        raise RenderError(f"audio must be shaped (channels, samples), got {x.shape}")
    if x.shape[0] > 2:
        raise RenderError(f"{x.shape[0]}-channel input: only mono and stereo masters are supported yet (no silent downmix)")
    if x.shape[1] < round(0.4 * fs):
        raise RenderError(f"{x.shape[1] / fs:.3f} s of audio: shorter than one 400 ms loudness block")


def _prepare(x: np.ndarray, fs: int, settings: MasterSettings, xp: Any) -> tuple[Any, int, list[str]]:
    notes: list[str] = []
    check_programme(x, fs)
    xd = backend.to_device(x, xp, dtype=xp.float32)
    if x.shape[0] == 1:
        xd = xp.concat([xd, xd], axis=0)
        notes.append("mono input: delivered as dual-mono stereo (identical channels)")
    out_fs = int(settings.output_rate or fs)
    if out_fs != fs:
        xd = resample(xd, fs, out_fs)
        notes.append(f"resampled {fs} Hz -> {out_fs} Hz before mastering")
    return xd, out_fs, notes


def resample(x: Any, fs: int, rate: int) -> Any:
    """``x`` (channels, samples; NumPy or CuPy) from ``fs`` to ``rate`` hertz, float32.

    Polyphase resampling (``resample_poly``, Kaiser-windowed FIR) by the reduced
    ratio ``rate / fs``; done once, at the start of the chain, so every later stage,
    the limiter and the verification run at the delivered rate.
    """
    if rate == fs:
        return x
    xp = backend.namespace(x)
    g = math.gcd(int(rate), int(fs))
    return xp.astype(backend.signal(xp).resample_poly(x, int(rate) // g, int(fs) // g, axis=-1), xp.float32)


#: The most the loudness stage may lower the compressors' thresholds to reach a target (dB),
#: and how many further chain passes it may make when the predicted push falls short.
MAX_COMPRESSION_PUSH_DB = 12.0
_MAX_PUSH_PASSES = 2


def compression_push(fingerprint: Mapping[str, float], target: float, ceiling: float, max_limiting_db: float) -> float:
    """How far (dB) to lower the compressors' thresholds so the limiter need not exceed its budget.

    Predicted from the fingerprint before any pass over the audio: bringing the track
    to ``target`` lifts its true peak to ``true_peak_dbtp + target - integrated_lufs``;
    what that leaves above the ceiling beyond ``max_limiting_db`` is the density the
    chain's own compression must add first. 0 when the budget suffices (the usual case),
    at most :data:`MAX_COMPRESSION_PUSH_DB`.

    Examples
    --------
    >>> compression_push({"true_peak_dbtp": -1.0, "integrated_lufs": -30.0}, -14.0, -1.0, 10.0)
    6.05
    >>> compression_push({"true_peak_dbtp": -6.0, "integrated_lufs": -20.0}, -14.0, -1.0, 10.0)
    0.0
    """
    tp, lufs = fingerprint.get("true_peak_dbtp"), fingerprint.get("integrated_lufs")
    if tp is None or lufs is None or not (math.isfinite(tp) and math.isfinite(lufs)):
        return 0.0
    excess = (tp + target - lufs) - (ceiling - CEILING_MARGIN_DB) - max_limiting_db
    return round(min(max(excess, 0.0), MAX_COMPRESSION_PUSH_DB), 3)


def _chain_plan(
    fingerprint: Mapping[str, float],
    eq_gains: np.ndarray,
    preset: Preset,
    amount: float,
    settings: MasterSettings,
    channels: int,
    fs: int,
    push_db: float = 0.0,
    width_amount: float | None = None,
) -> dict[str, Any]:
    """Global parameters of the local stages, from the fingerprint (no pass over the audio).

    The bands are the preset's as the rate ``fs`` allows (:meth:`Preset.at_rate`:
    an edge at or above 0.4 fs -- 6 kHz at 8, 11.025 and 12 kHz -- is dropped and
    the band above it merged into the one below, which keeps its parameters);
    ``crossovers_hz`` holds the edges used and ``crossovers_dropped`` (only where
    one was dropped) says which and why. Compressor thresholds follow each band's
    own long-term level (after EQ) plus the preset's offset; widths are fixed for
    the whole track. ``push_db`` > 0 (the loudness stage needs more density than the
    limiter may give, :func:`compression_push`) lowers every threshold by that much and
    takes each ratio to the preset's full setting (its range's top).
    """
    preset, xo = preset.at_rate(fs)
    edges = preset.crossovers_hz
    mid_e, side_e = _crossover_energies(fingerprint, eq_gains, edges)
    level = _overall_level_db(fingerprint)
    plan: dict[str, Any] = {"crossovers_hz": list(edges)}
    if xo.dropped:
        plan["crossovers_dropped"] = [{"hz": e, "reason": why} for e, why in xo.dropped]
    if settings.dynamics:
        bands = []
        for b in range(len(edges) + 1):  # 4 bands: parameters, not samples
            power = mid_e[b] + side_e[b]
            band_db = (
                level + units.power_to_db(float(power)) if power > 0 and math.isfinite(level) else None
            )  # float: math.log10, as before
            bands.append(
                {
                    "band": b,
                    "threshold_db": None if band_db is None else round(band_db + preset.threshold_rel_db[b] - push_db, 3),
                    "ratio": round(1.0 + (preset.ratio[b] - 1.0) * (1.0 if push_db > 0 else amount), 4),
                    "knee_db": preset.knee_db[b],
                    "attack_s": preset.attack_s[b],
                    "release_s": preset.release_s[b],
                }
            )
        plan["dynamics"] = bands
        if push_db > 0:
            plan["compression_push_db"] = round(push_db, 3)
    if settings.width and channels == 2:
        requested = [1.0 + (w - 1.0) * (amount if width_amount is None else width_amount) for w in preset.width]
        requested[0] = min(requested[0], 1.0)  # low band: never wider than the source
        plan["width"] = [round(float(w), 5) for w in widths_for_correlation(mid_e, side_e, requested)]
        plan["width_requested"] = [round(w, 5) for w in requested]
    return plan


#: Control hops per stretch of the band sum on a CPU (about 1.3 s of audio at 48 kHz).
_SUM_STRETCH_HOPS = 4096


def _local_chain(y: Any, fs: int, plan: Mapping[str, Any], h: Any) -> Any:
    """(HP + EQ) -> crossover -> per band compressor and width -> sum, on one block.

    All local operations. ``h`` is :func:`_chain_filters`' result: one filter
    per band, shape (K, m) (the crossover's band filters with the HP and EQ
    folded in): one overlap-save pass splits the block into equalised bands,
    which serve both dynamics and width; or the HP + EQ filter alone, shape
    (m,), when no band processing is planned.
    """
    xp = backend.namespace(y)
    if h.ndim == 1:
        return xp.astype(fir.fft_filter(y, h), xp.float32)
    widths = plan.get("width")
    bands = fir.fft_filter_bank(y, h)  # (K, C, n)
    k, c, n = bands.shape
    hop = CONTROL_HOP(fs)
    g_hops = xp.ones((k, -(-n // hop)), dtype=bands.dtype)  # linear gain per band and hop (1: no compression)
    for b in range(k):  # 3-5 bands: a loop over stages, not samples
        p = plan["dynamics"][b] if "dynamics" in plan else None
        if p is not None and p["threshold_db"] is not None and p["ratio"] > 1.0:
            # the detector sees the band as split (before its width is set)
            g_hops[b, :] = compressor.compressor_gain(
                bands[b, ...],
                fs,
                p["threshold_db"],
                p["ratio"],
                p["knee_db"],
                p["attack_s"],
                p["release_s"],
                window_s=DETECTOR_WINDOW_S,
                release_ref_db=RELEASE_REF_DB,
                control_hop=hop,
                at_hops=True,
            )
        if widths and widths[b] != 1.0:
            bands[b, ...] = image.scale_side(bands[b, ...], widths[b])  # static and linear: commutes with the linked gain
    # Sum over bands of gain x band, a stretch at a time: the per-sample gains of a stretch
    # stay in cache and no gain array of the block's length is made (one pass on a GPU).
    out = xp.empty((c, n), dtype=xp.float32)
    step = n if backend.is_gpu(xp) else _SUM_STRETCH_HOPS * hop
    for s0 in range(0, n, step):  # a loop over stretches (a second of audio or more), not samples
        s1 = min(n, s0 + step)
        g = compressor.interpolate_hops(g_hops, hop, n, s0, s1)  # (K, s1 - s0)
        seg = bands[:, :, s0:s1]
        out[:, s0:s1] = backend.einsum(xp, "kcn,kn->cn", seg, g)
    return out


def _chain_filters(h: Any, fs: int, plan: Mapping[str, Any], xp: Any) -> Any:
    """The local chain's filters: ``h`` (HP + EQ, odd length, or None) when no band
    processing is planned, else the crossover band filters convolved with ``h``,
    shape (K, m): band k of the equalised signal in one filter each."""
    widths = plan.get("width")
    if "dynamics" not in plan and not (widths and any(w != 1.0 for w in widths)):
        return h
    bank = fir.crossover_filters(fs, plan["crossovers_hz"], xp=xp)
    if h is not None:
        bank = backend.signal(xp).fftconvolve(h[None, :], bank, mode="full", axes=-1)
    return bank


def CONTROL_HOP(fs: float) -> int:
    """Compressor control-rate hop: ~0.33 ms (16 samples at 48 kHz). Gains differ from a
    per-sample detector by < 0.01 dB on average and < 0.2 dB at worst, at 1/7 of the
    cost (tests/test_dynamics.py)."""
    return max(1, int(fs // 3000))


#: Block processing of the local stages: 60 s blocks, each read with the context
#: :func:`_chain_halo` proves enough (the stages' support), so blocks give the
#: whole-track result while memory stays bounded for hour-long programmes.
BLOCK_S = 60.0

#: The band compressors' detector window and release reference (kernels.compressor's defaults, named
#: here because the halo of a block depends on them).
DETECTOR_WINDOW_S = 0.01
RELEASE_REF_DB = 10.0


def _chain_halo(filters: Any, plan: Mapping[str, Any], fs: int, peak: float) -> int:
    """Context (samples, a whole number of control hops) a block of the local chain needs on
    each side for the whole-track result: the support of every stage, bounded from the
    plan and the track's sample peak ``peak`` (linear, after DC removal).

    * the filters: ``(m - 1) / 2`` samples each way (linear phase, delay compensated);
    * a band compressor: hop energies and the interpolation back (a hop each way), the
      detector window (centred), the look-ahead attack (a running minimum ahead, an
      average behind: ``attack_s`` each way) and the linear-in-dB release, which
      reaches back ``R * release_s / RELEASE_REF_DB`` seconds at most, ``R`` the deepest
      reduction possible: the static curve at the loudest detector level the band can
      show, its sample-peak bound ``sum|h_b| * peak``.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.zeros((1, 2001)); h[0, 1000] = 1.0          # a delay-compensated identity
    >>> plan = {"dynamics": [{"threshold_db": -30.0, "ratio": 4.0, "knee_db": 0.0, "attack_s": 0.01, "release_s": 0.2}]}
    >>> _chain_halo(h, plan, 48000, 1.0) / 48000   # 22.5 dB of release at 50 dB/s: 0.45 s, + attack, FIR, detector
    0.487
    """
    hop = CONTROL_HOP(fs)
    m = int(filters.shape[-1])
    support = (m - 1) // 2 + 1
    bands = plan.get("dynamics") or []
    if bands:  # band dynamics: ``filters`` is the bank, one row per band
        xp = backend.namespace(filters)
        l1 = backend.to_host(xp.sum(xp.abs(filters), axis=-1))
        extra = 0.0
        for b, p in enumerate(bands):
            if p is None or p["threshold_db"] is None or not p["ratio"] > 1.0:
                continue
            level = units.amplitude_to_db(float(l1[b]) * peak, floor=1e-15)
            deepest = -float(compressor.compressor_gain_db(np.array([level]), p["threshold_db"], p["ratio"], p["knee_db"])[0])
            extra = max(extra, p["attack_s"] + deepest * p["release_s"] / RELEASE_REF_DB)
        support += int(math.ceil(extra * fs)) + hop * (int(round(DETECTOR_WINDOW_S * fs / hop)) // 2 + 3)
    return -(-support // hop) * hop


def _fingerprint_dc(fingerprint: Mapping[str, float] | None, shape: tuple, fs: int, *, resampled: bool) -> list[float] | None:
    """The programme's per-channel mean as its fingerprint measured it (float64: the same sum
    over the same samples as a fresh ``sum / n``); None where the fingerprint may describe
    other samples (resampled here, another rate or length) or lacks it."""
    if fingerprint is None or resampled or shape[0] not in (1, 2):
        return None
    duration = fingerprint.get("duration_s")
    if (
        fingerprint.get("sample_rate") != fs
        or not isinstance(duration, float)
        or not math.isfinite(duration)
        or round(duration * fs) != shape[-1]
    ):
        return None
    means = [fingerprint.get("dc_offset_left"), fingerprint.get("dc_offset_right")][: shape[0]]
    if not all(isinstance(v, float) and math.isfinite(v) for v in means):
        return None
    return means


def _apply_gain(y: Any, gain_db: float) -> Any:
    xp = backend.namespace(y)
    return xp.astype(y * units.db_to_amplitude(gain_db), xp.float32)


class _Peaks(NamedTuple):
    """A master's peaks, from one search (:func:`_verified_peak_db`)."""

    db16: float  #: true peak at 16x, dBTP (the ceiling's check)
    tp4: Any  #: per-channel true peaks at 4x, linear (BS.1770's reading, for the report)
    sample: Any  #: per-channel sample peaks, linear (the report's, and the search's floor)
    tp4_db: float = math.nan  #: the largest of ``tp4``, dBTP (read with ``db16``)
    sample_db: float = math.nan  #: the largest of ``sample``, dBFS (read with ``db16``)


def _verified_peak_db(z: Any, fs: int) -> _Peaks:
    """The master's true peak at 16x (dBTP) and, from the same search, its per-channel
    4x true peaks and sample peaks."""
    xp = backend.namespace(z)
    sp = truepeak.sample_peak(z)
    tp4, tp16 = truepeak.true_peak_pair(z, fs, oversample=VERIFY_OVERSAMPLE, sample_peaks=sp)
    db16, db4, db_sp = backend.read_together(*(truepeak.to_db(xp.max(v)) for v in (tp16, tp4, sp)))  # one read
    return _Peaks(float(db16), tp4, sp, float(db4), float(db_sp))


class _Limited(NamedTuple):
    """One pass of gain + limiter: the signal, its verified true peaks (None unless
    asked), the deepest gain reduction (dB) and sample ranges covering every sample
    the limiter changed (host (k, 2) ``[start, end)``, whole knot intervals:
    :meth:`~acetate.kernels.limiter.KnotGain.runs`; None when the whole signal was trimmed)."""

    z: Any
    peaks: _Peaks | None
    reduction: float
    changed: np.ndarray | None


def _limit(y: Any, fs: int, gain_db: float, ceiling: float, preset: Preset | None = None, *, verify: bool = True) -> _Limited:
    """Gain, then the true-peak limiter (which holds its own 16x meter at ``ceiling - margin``).

    With ``verify`` the result is measured again, independently, at 16x, and the
    limiter re-run lower in the (rare) case that reading is over; the loudness
    solve verifies only its final pass.
    """
    preset = preset or BALANCED
    ceiling = ceiling - CEILING_MARGIN_DB
    aim = ceiling
    for _ in range(_MAX_CEILING_PASSES):
        z, gain = limiter.true_peak_limit(  # the gain folded in: no gained copy of the track
            y,
            fs,
            aim,
            lookahead_s=preset.limiter_lookahead_s,
            release_s=preset.limiter_release_s,
            verify_oversample=VERIFY_OVERSAMPLE,
            input_gain_db=gain_db,
            knots=True,  # its knots (n / 8), not a per-sample copy
        )
        lowest, runs = gain.summary()  # the deepest gain and the changed ranges: one read
        reduction = -units.amplitude_to_db(lowest, floor=1e-12)
        if not verify:
            return _Limited(z, None, reduction, runs)
        peaks = _verified_peak_db(z, fs)
        over = peaks.db16 - ceiling
        if not over > 0:
            return _Limited(z, peaks, reduction, runs)
        aim -= over + 0.005
    scale = units.db_to_amplitude(-(over + 0.005))  # last resort: a static trim, never an over
    z = backend.namespace(z).astype(z * scale, z.dtype)
    return _Limited(z, _verified_peak_db(z, fs), reduction, None)


def _solve_loudness(
    y: Any, fs: int, target: float, ceiling: float, preset: Preset, limit: bool, params: dict, notes: list[str]
) -> tuple[Any, _Peaks | None, loudness.LoudnessStats | None]:
    """Gain before the limiter such that I(limit(g * y)) = target; the ceiling always holds.

    Returns the master, its true peaks (:func:`_verified_peak_db`) and its
    loudness statistics (None for both when no limiter ran). The chain output
    is measured once, keeping its :class:`~acetate.kernels.loudness.EnergyProfile`;
    each limited pass ``z = limit(g * y)`` differs from ``g * y`` only around
    its peaks, so it is measured again there only
    (:func:`~acetate.kernels.loudness.remeasure`: the same figures as a full
    measurement, at the cost of the limited stretches). The last pass's
    statistics are the output report's.
    """
    st_y, prof = loudness.measure_profile(y, fs)
    i0 = st_y.integrated_lufs
    if not math.isfinite(i0):
        raise SilentProgramme("silent or too quiet: no 400 ms block above the -70 LUFS absolute gate, nothing to master")
    g = target - i0
    if not limit:
        params["loudness"] = {"gain_db": round(g, 4), "iterations": 0}
        return _apply_gain(y, g), None, None

    def measured(lim: _Limited, gain_db: float) -> loudness.LoudnessStats:
        if prof is None or lim.changed is None:
            return loudness.measure(lim.z, fs)
        return loudness.remeasure(prof, lim.z, gain_db, lim.changed)[0]

    # The limiter may take at most max_limiting_db off the loudest peak. Its
    # deepest reduction grows dB for dB with the gain (the peaks scale with it),
    # so a pass that needs more fixes the largest gain allowed, g_max.
    allowance = preset.max_limiting_db
    g_max = math.inf
    history: list[tuple[float, float]] = []
    for _ in range(8):
        lim = _limit(y, fs, g, ceiling, preset, verify=False)
        if lim.reduction > allowance + 1e-3:
            g_max = g - (lim.reduction - allowance)
            g = g_max
            lim = _limit(y, fs, g, ceiling, preset, verify=False)
        stats = measured(lim, g)
        iz = stats.integrated_lufs
        history.append((g, iz))
        err = target - iz
        if abs(err) <= _SOLVE_TOLERANCE_LU or (g >= g_max and err > 0):
            break
        if len(history) >= 2 and history[-1][0] != history[-2][0]:
            (g1, i1), (g2, i2) = history[-2], history[-1]
            slope = min(1.0, max(0.05, (i2 - i1) / (g2 - g1)))
        else:
            slope = 1.0
        g = min(g + err / slope, g_max)
    g = history[-1][0]  # the pass that z is (the loop may have proposed another when it ran out)
    z, reduction = lim.z, lim.reduction
    peaks = _verified_peak_db(z, fs)  # the independent 16x check, once, on the master
    iz = history[-1][1]
    if peaks.db16 > ceiling - CEILING_MARGIN_DB:  # rare: re-limit lower until it reads under
        lim = _limit(y, fs, g, ceiling, preset)
        z, peaks, reduction = lim.z, lim.peaks, lim.reduction
        stats = measured(lim, g)
        iz = stats.integrated_lufs
    if target - iz > TARGET_TOLERANCE_LU:
        notes.append(
            f"target {target:.1f} LUFS not reached ({iz:.2f} LUFS): it would take more than "
            f"{preset.max_limiting_db:g} dB of limiting under the {ceiling:.1f} dBTP ceiling; the ceiling held"
        )
    params["loudness"] = {
        "gain_db": round(g, 4),
        "iterations": len(history),
        "input_lufs": round(i0, 3),
        "limiter_reduction_db": round(reduction, 3),
    }
    return z, peaks, stats


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
    x : array (NumPy, CuPy or another array-API namespace)
        Mono or stereo programme; a device array (anything but NumPy) stays in its own
        namespace, whatever ``settings.device`` says (that places host input).
    fs : int
        Sample rate in hertz.
    settings : MasterSettings
    preset : Preset
        The style (from a bank's selection, or forced).
    fingerprint : mapping, optional
        The track's fingerprint (:func:`acetate.pipeline.chain.analyse.fingerprint`)
        at the *delivery* rate; computed here when missing.

    Returns
    -------
    MasterResult

    Raises
    ------
    RenderError
        Unsupported channel count, shorter than 400 ms, silent.
    """
    # A device array (CuPy, or any other array-API namespace) stays in its own namespace; host input
    # goes where ``settings.device`` says.
    xp = backend.namespace(x) if backend.is_device_array(x) else backend.array_module(settings.device)
    xd, out_fs, notes = _prepare(x, int(fs), settings, xp)  # host or device input: no copy if already there
    target, ceiling = settings.target_lufs, settings.ceiling_dbtp
    target = preset.target_lufs if target is None else target
    ceiling = preset.ceiling_dbtp if ceiling is None else ceiling
    if settings.max_limiting_db is not None:  # the budget made a visible choice (--max-limiting)
        preset = replace(preset, max_limiting_db=float(settings.max_limiting_db))
    if not settings.loudness or (target is not None and math.isnan(target)):
        target = None
    amount = INTENSITY[settings.intensity]
    amounts = settings.stage_amounts()
    params: dict[str, Any] = {"preset": preset.name, "intensity": settings.intensity, "amount": amount}
    if settings.amounts:
        params["amounts"] = amounts
    if amounts["limiter"] < 1.0:  # the limiter's share: its budget scaled (0: none; the gain is trimmed instead)
        preset = replace(preset, max_limiting_db=preset.max_limiting_db * amounts["limiter"])

    if fingerprint is None and (settings.eq or settings.dynamics or settings.width):
        from acetate.pipeline.chain.analyse import fingerprint as _fingerprint

        fingerprint = _fingerprint(xd, out_fs)
    # The fingerprint already holds the input's loudness: no second measurement.
    input_report = meter.loudness_report(xd, out_fs) if fingerprint is None else meter.report_from_fingerprint(fingerprint)

    gains = np.zeros(len(BAND_CENTRES_HZ))
    h_eq = None
    if settings.eq:
        gains = eq_curve(preset, fingerprint, out_fs, amounts["eq"])
        if np.any(np.abs(gains) > 1e-3):
            n_taps = int(round(settings.eq_taps_s * out_fs)) | 1
            h_eq = fir.design_from_gain(BAND_CENTRES_HZ, gains, out_fs, n_taps, preset.eq_phase, xp=xp)
        params["eq"] = {"bands_hz": list(BAND_CENTRES_HZ), "gain_db": [round(float(g), 3) for g in gains], "phase": preset.eq_phase}
    # Where the limiter's budget cannot reach the target, the chain's own compression is pushed first
    # (compression_push: predicted from the fingerprint; a second pass below if the first falls short).
    push = 0.0
    if target is not None and settings.limit and settings.dynamics and amounts["dynamics"] > 0 and fingerprint is not None:
        push = compression_push(fingerprint, target, ceiling, preset.max_limiting_db)
    plan = (
        _chain_plan(
            fingerprint, gains, preset, amounts["dynamics"], settings, xd.shape[0], out_fs, push_db=push, width_amount=amounts["width"]
        )
        if (settings.dynamics or settings.width)
        else {"crossovers_hz": []}
    )
    params.update({k: v for k, v in plan.items() if k != "crossovers_hz"})
    for d in plan.get("crossovers_dropped", ()):  # a low rate: the preset's bands merged where the rate has no room
        notes.append(
            f"{d['hz']:g} Hz crossover dropped at {out_fs} Hz ({d['reason']}): the band above it merged into the band below, which keeps its dynamics and width"
        )
    if settings.dynamics:
        params["crossovers_hz"] = plan["crossovers_hz"]
    y = xd
    h = h_eq
    dc = None
    if settings.highpass:  # the track's DC (removed block by block), then one linear-phase FIR for the high-pass and the EQ
        means = _fingerprint_dc(fingerprint, tuple(y.shape), out_fs, resampled=out_fs != int(fs))  # no second pass
        if means is None:
            dc = xp.astype(xp.sum(y, axis=-1, dtype=xp.float64, keepdims=True) / y.shape[-1], xp.float32)
        else:
            dc = xp.reshape(xp.asarray(means, dtype=xp.float32), (-1, 1))
        h_hp = fir.highpass_taps(out_fs, settings.highpass_hz, xp=xp)
        h = h_hp if h_eq is None else backend.signal(xp).fftconvolve(h_hp, h_eq)
        params["highpass_hz"] = settings.highpass_hz
    filters = _chain_filters(h, out_fs, plan, xp)  # designed once per track, not per block; None: nothing to run
    peak_in: list[float] = []  # the input's peak (the halo's bound), read once even for a second pass

    def run_chain(src: Any, plan: Mapping[str, Any]) -> Any:
        if filters is None:
            return src
        block = int(BLOCK_S * out_fs) // CONTROL_HOP(out_fs) * CONTROL_HOP(out_fs)  # blocks keep the hop grid
        halo = 0  # one block (the whole track): no context
        if src.shape[-1] > block:
            if not peak_in:
                peak = backend.to_float(xp.max(truepeak.sample_peak(src))) + (0.0 if dc is None else backend.to_float(xp.max(xp.abs(dc))))
                if not math.isfinite(peak):
                    raise RenderError("the programme has non-finite (NaN or Inf) samples")
                peak_in.append(peak)
            halo = _chain_halo(filters, plan, out_fs, peak_in[0])
        return blocks.apply_blockwise(lambda b: _local_chain(b if dc is None else b - dc, out_fs, plan, filters), src, block, halo)

    y = run_chain(y, plan)
    keep = xd if push > 0 and "dynamics" in plan else None  # only a track whose target is at risk keeps its input
    # The input is not needed past the chain: drop this frame's references, so a caller that
    # handed it over (master_file, the batch's last target: ``master(held.pop(), ...)``) gets
    # its memory back before the limiter phase, the peak. That relies on the caller's frame
    # holding no reference during the call: keep this function undecorated.
    del x, xd
    if settings.gain_db:
        y = _apply_gain(y, settings.gain_db)
        params["gain_offset_db"] = settings.gain_db
    peaks = None  # true peaks of the master (16x dB, 4x per channel), when the limiter stage measured them
    stats = None  # and its loudness, when the loudness solve measured it
    if target is not None:
        solve_notes: list[str] = []
        y, peaks, stats = _solve_loudness(y, out_fs, target, ceiling, preset, settings.limit, params, solve_notes)
        short = target - stats.integrated_lufs if stats is not None else 0.0
        for _ in range(_MAX_PUSH_PASSES if keep is not None else 0):
            if not (short > TARGET_TOLERANCE_LU and push < MAX_COMPRESSION_PUSH_DB):
                break
            # the predicted push fell short: push again by twice the shortfall (a compressor takes
            # roughly half of a threshold change off the peaks) and keep the pass if it is louder
            push2 = round(min(MAX_COMPRESSION_PUSH_DB, push + 2.0 * short + 1.0), 3)
            plan2 = _chain_plan(
                fingerprint,
                gains,
                preset,
                amounts["dynamics"],
                settings,
                keep.shape[0],
                out_fs,
                push_db=push2,
                width_amount=amounts["width"],
            )
            y2 = run_chain(keep, plan2)
            if settings.gain_db:
                y2 = _apply_gain(y2, settings.gain_db)
            params2: dict[str, Any] = {}
            notes2: list[str] = []
            y2, peaks2, stats2 = _solve_loudness(y2, out_fs, target, ceiling, preset, settings.limit, params2, notes2)
            if stats2 is None or not stats2.integrated_lufs > stats.integrated_lufs:
                break
            y, peaks, stats, solve_notes, push = y2, peaks2, stats2, notes2, push2
            params.update(params2)
            params["dynamics"] = plan2["dynamics"]
            params["compression_push_db"] = push2
            short = target - stats.integrated_lufs
            del y2
        del keep
        if push > 0:
            notes.append(
                f"compression pushed {push:.1f} dB (thresholds lowered, ratios at the preset's full setting) so the limiter stays "
                f"within its {preset.max_limiting_db:g} dB budget toward {target:.1f} LUFS"
            )
        notes.extend(solve_notes)
    elif settings.limit:
        lim = _limit(y, out_fs, 0.0, ceiling, preset)
        y, peaks = lim.z, lim.peaks
    if peaks is None or peaks.db16 > 0.0:  # formats are fixed point; a true peak <= 0 dBTP makes the clip a no-op
        y = backend.clip(y, -1.0, 1.0)
        stats = None
        peaks = _verified_peak_db(y, out_fs)
    out_tp = peaks.db16
    output_report, out_stats = meter.measure_report(
        y, out_fs, oversample=4, stats=stats, true_peak=peaks.tp4, sample_peaks=peaks.sample, peak_db=(peaks.tp4_db, peaks.sample_db)
    )
    output_report["true_peak_dbtp_16x"] = out_tp if math.isfinite(out_tp) else None
    target_met = (
        None
        if target is None
        else (output_report["integrated_lufs"] is not None and abs(output_report["integrated_lufs"] - target) <= TARGET_TOLERANCE_LU)
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
        output_blocks=meter.gating_blocks(out_stats),
        device_audio=y,
    )
