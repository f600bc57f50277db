"""Mastering presets: data, not code.

A :class:`Preset` says what a style sounds like (a target long-term spectrum of
mid and side on the fingerprint's 1/3-octave grid) and how to get there
(dynamics per band, width per band, loudness target, limiter character). The
renderer (:mod:`acetate.pipeline.chain.render`) turns a preset plus a track's
fingerprint into chain parameters.

Presets serialise to plain JSON-able dicts (:meth:`Preset.to_dict`,
:meth:`Preset.from_dict`); nothing is ever pickled.
"""

from __future__ import annotations

import functools
import json as _json
import math
import os as _os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path as _Path
from typing import Any, Mapping, Sequence

import numpy as np

from acetate.kernels import fir
from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.schemas import bank as _bank_schema
from acetate.schemas.features import THIRD_OCTAVE_LABELS as _LABELS3

__all__ = [
    "Preset",
    "BAND_CENTRES_HZ",
    "target_curve",
    "BALANCED",
    "Bank",
    "Selection",
    "SELECTION_DEFAULTS",
    "GENTLE",
    "blend_presets",
    "speech_likeness",
    "SELECTION_FEATURES",
    "SELECTION_WEIGHTS",
    "selection_vector",
    "load_bank",
    "save_bank",
    "DEFAULT_BANK_PATH",
]

#: Crossover edges (Hz) of the multiband dynamics and width stages: 4 bands.
DEFAULT_CROSSOVERS_HZ = (120.0, 1000.0, 6000.0)
#: How a preset's EQ is defined (:attr:`Preset.eq_mode`) and what it is for (:attr:`Preset.content`).
EQ_MODES = ("target", "relative")
CONTENTS = ("music", "speech")


def target_curve(
    tilt_db_per_oct: float = -3.0,
    pivot_hz: float = 150.0,
    low_cut_hz: float = 40.0,
    bass_db: float = 0.0,
    air_db: float = 0.0,
    centres_hz: Sequence[float] = BAND_CENTRES_HZ,
    presence_db: float = 0.0,
) -> tuple[float, ...]:
    """A parametric long-term spectrum (band energy, dB re. the total) on the 1/3-octave grid.

    Flat energy per band between ``low_cut_hz`` and ``pivot_hz``, then a tilt of
    ``tilt_db_per_oct`` above the pivot (commercial masters measure about -4 to
    -5 dB/oct of 1/3-octave band energy above 150-200 Hz); 12 dB/oct roll-off
    below ``low_cut_hz``; ``bass_db`` lifts the bands below 120 Hz and ``air_db``
    those above 8 kHz; ``presence_db`` is a bell (about 1.6 octaves wide) at
    2.5 kHz, where the voice's intelligibility lives. Normalised so that the
    band powers sum to 0 dB.

    Examples
    --------
    >>> c = target_curve()
    >>> len(c), round(10 * math.log10(sum(10 ** (v / 10) for v in c)), 6)
    (31, 0.0)
    """
    f = np.asarray(centres_hz, dtype=np.float64)
    level = np.where(f > pivot_hz, tilt_db_per_oct * np.log2(f / pivot_hz), 0.0)
    level += np.where(f < low_cut_hz, 12.0 * np.log2(f / low_cut_hz), 0.0)
    level += bass_db * np.clip(np.log2(240.0 / f), 0.0, 1.0)
    level += air_db * np.clip(np.log2(f / 8000.0) + 1.0, 0.0, 1.0)
    level += presence_db * np.exp(-0.5 * (np.log2(f / 2500.0) / 0.7) ** 2)
    level -= 10.0 * np.log10(np.sum(10.0 ** (level / 10.0)))
    return tuple(float(v) for v in level)


@dataclass(frozen=True)
class Preset:
    """One mastering style.

    Attributes
    ----------
    name, description : str
    target_mid_db, target_side_db : tuple of float
        Target long-term band energy of mid and side (dB re. the overall
        level, as the fingerprint's ``ltas_mid_*`` / ``ltas_side_*``) on the
        31-band 1/3-octave grid :data:`BAND_CENTRES_HZ`.
    eq_max_db : float
        Clamp of the equaliser's gain curve (+-dB) before intensity scaling.
    eq_phase : {"linear", "minimum"}
    crossovers_hz : tuple of float
        Edges of the dynamics/width bands (``len + 1`` bands).
    threshold_rel_db : tuple of float
        Per band, compressor threshold relative to the band's own active RMS level (dB).
    ratio, knee_db, attack_s, release_s : tuple of float
        Per band compressor settings (ratio at intensity "high"; lower intensities
        scale ``ratio - 1`` down).
    width : tuple of float
        Per band side gain (1 = unchanged; the lowest band is kept <= 1 for mono
        compatibility).
    target_lufs, ceiling_dbtp : float
        Default loudness target and true-peak ceiling (a job's target wins).
    limiter_lookahead_s, limiter_release_s : float
        Limiter character.
    max_limiting_db : float
        Most gain reduction the limiter may apply to reach the target; beyond it the
        target is missed (and reported) rather than the master squashed.
    source : str
        Where the target curve comes from.
    eq_mode : {"target", "relative"}
        How the equaliser uses the preset. ``"target"`` (the built-in styles): EQ
        toward ``target_mid_db``, the difference to the track's own spectrum.
        ``"relative"`` (a learned preset): apply ``correction_mid_db``, the move the
        label's engineers made (master minus mix, each re. its own level), to the
        track as it is, so what is particular to each song survives.
    correction_mid_db : tuple of float
        The relative EQ curve (dB per 1/3-octave band, 0 where unknown): 31 values
        with ``eq_mode="relative"``, empty otherwise.
    content : {"music", "speech"}
        What the preset is meant for. A ``"speech"`` preset is never selected for
        a track that :func:`speech_likeness` calls music (unless forced by name).
    """

    name: str
    description: str = ""
    target_mid_db: tuple[float, ...] = field(default_factory=target_curve)
    target_side_db: tuple[float, ...] = field(default_factory=lambda: tuple(v - 12.0 for v in target_curve()))
    eq_max_db: float = 6.0
    eq_phase: str = "linear"
    crossovers_hz: tuple[float, ...] = DEFAULT_CROSSOVERS_HZ
    threshold_rel_db: tuple[float, ...] = (4.0, 4.0, 4.0, 4.0)
    ratio: tuple[float, ...] = (2.0, 1.8, 1.8, 1.6)
    knee_db: tuple[float, ...] = (6.0, 6.0, 6.0, 6.0)
    attack_s: tuple[float, ...] = (0.03, 0.015, 0.008, 0.004)
    release_s: tuple[float, ...] = (0.25, 0.15, 0.1, 0.08)
    width: tuple[float, ...] = (1.0, 1.0, 1.05, 1.1)
    target_lufs: float = -14.0
    ceiling_dbtp: float = -1.0
    limiter_lookahead_s: float = 0.0015
    limiter_release_s: float = 0.08
    max_limiting_db: float = 10.0
    source: str = "parametric curve: flat to 150 Hz, -3.0 dB/oct above, 12 dB/oct below 40 Hz (see the default bank's balanced preset)"
    eq_mode: str = "target"
    correction_mid_db: tuple[float, ...] = ()
    content: str = "music"

    def __post_init__(self) -> None:
        nb = len(BAND_CENTRES_HZ)
        if self.eq_mode not in EQ_MODES:
            raise ValueError(f"preset {self.name!r}: eq_mode must be one of {EQ_MODES}, got {self.eq_mode!r}")
        if self.content not in CONTENTS:
            raise ValueError(f"preset {self.name!r}: content must be one of {CONTENTS}, got {self.content!r}")
        corr = tuple(float(a) for a in self.correction_mid_db)
        if self.eq_mode == "relative" and len(corr) != nb:
            raise ValueError(f"preset {self.name!r}: a relative preset needs correction_mid_db of {nb} bands, got {len(corr)}")
        if self.eq_mode == "target" and corr:
            raise ValueError(f"preset {self.name!r}: correction_mid_db is only for eq_mode='relative'")
        if not all(math.isfinite(a) for a in corr):
            raise ValueError(f"preset {self.name!r}: correction_mid_db must be finite (0 where unknown)")
        object.__setattr__(self, "correction_mid_db", corr)
        for name in ("target_mid_db", "target_side_db"):
            v = getattr(self, name)
            if len(v) != nb:
                raise ValueError(f"preset {self.name!r}: {name} needs {nb} bands, got {len(v)}")
            object.__setattr__(self, name, tuple(float(a) for a in v))
        n = len(self.crossovers_hz) + 1
        for name in ("threshold_rel_db", "ratio", "knee_db", "attack_s", "release_s", "width"):
            v = getattr(self, name)
            if len(v) != n:
                raise ValueError(f"preset {self.name!r}: {name} needs {n} values (one per band), got {len(v)}")
            object.__setattr__(self, name, tuple(float(a) for a in v))
        if any(r < 1.0 for r in self.ratio):
            raise ValueError(f"preset {self.name!r}: ratios must be >= 1, got {self.ratio}")
        if self.eq_phase not in ("linear", "minimum"):
            raise ValueError(f"preset {self.name!r}: eq_phase must be 'linear' or 'minimum', got {self.eq_phase!r}")
        if not math.isfinite(self.ceiling_dbtp) or self.ceiling_dbtp > 0:
            raise ValueError(f"preset {self.name!r}: ceiling_dbtp must be <= 0 dBTP, got {self.ceiling_dbtp}")
        object.__setattr__(self, "crossovers_hz", tuple(float(a) for a in self.crossovers_hz))

    #: The per-band fields (one value per crossover band).
    BAND_FIELDS = ("threshold_rel_db", "ratio", "knee_db", "attack_s", "release_s", "width")

    def at_rate(self, fs: float) -> tuple["Preset", fir.CrossoverPlan]:
        """This preset as its bands can run at ``fs`` hertz, and the crossover plan behind it.

        Crossover edges the band filters cannot realise at ``fs``
        (:func:`acetate.kernels.fir.crossover_plan`: at or above 0.4 fs, or
        within a transition width of the edge below) are dropped; the band
        above a dropped edge merges into the band below, which keeps its own
        dynamics and width (the lower band is the one the merged band's
        energy mostly comes from in music's falling spectra, and the more
        conservative width). The preset itself is returned unchanged where
        every edge is kept.

        Examples
        --------
        >>> p, plan = BALANCED.at_rate(8000)
        >>> p.crossovers_hz, p.width, [e for e, _ in plan.dropped]
        ((120.0, 1000.0), (1.0, 1.0, 1.05), [6000.0])
        >>> BALANCED.at_rate(44100)[0] is BALANCED
        True
        """
        plan = fir.crossover_plan(fs, self.crossovers_hz)
        if not plan.dropped:
            return self, plan
        merged = {name: tuple(getattr(self, name)[b] for b in plan.sources) for name in self.BAND_FIELDS}
        return replace(self, crossovers_hz=plan.edges_hz, **merged), plan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preset":
        """Build from :meth:`to_dict` output; unknown keys are an error naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown preset field(s): {', '.join(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


#: The built-in balanced preset (used when no bank is given).
BALANCED = Preset(name="balanced", description="Even tonal balance, gentle glue, streaming loudness.")

#: What a track gets when its selection is not confident (:attr:`Selection.confidence` below the
#: bank's ``min_confidence``): the balanced curve with the EQ clamped to +-2 dB, light glue and
#: no widening -- a master that is safe to release while a person looks at the track.
GENTLE = Preset(
    name="gentle_default",
    description="Low-confidence fallback: balanced tonal target with at most 2 dB of EQ, light glue, no widening.",
    eq_max_db=2.0,
    ratio=(1.3, 1.3, 1.3, 1.2),
    width=(1.0, 1.0, 1.0, 1.0),
    source="The balanced preset made gentle (EQ clamp 2 dB, ratios 1.2-1.3, widths 1): used below the confidence threshold.",
)


def blend_presets(presets: Sequence[Preset], weights: Sequence[float]) -> Preset:
    """The weighted mean of ``presets`` (weights normalised): what a soft selection renders.

    Curves (targets and relative corrections, in dB), per-band dynamics and widths
    and the scalar settings are averaged with the weights; the phase, the bands'
    crossovers, the content and the EQ mode are the first (heaviest) preset's.
    Presets of another EQ mode or other crossovers than the first are left out
    (their weight goes to the others). One preset (or one weight) gives that preset back.

    Examples
    --------
    >>> a = replace(BALANCED, name="a", eq_mode="relative", correction_mid_db=(2.0,) * 31)
    >>> b = replace(BALANCED, name="b", eq_mode="relative", correction_mid_db=(-1.0,) * 31)
    >>> m = blend_presets([a, b], [1.0, 1.0])
    >>> m.name, m.correction_mid_db[0]
    ('blend(a:0.5,b:0.5)', 0.5)
    """
    if len(presets) != len(weights) or not presets:
        raise ValueError(f"blend_presets needs one weight per preset, got {len(presets)} presets and {len(weights)} weights")
    first = presets[0]
    keep = [
        (p, float(w))
        for p, w in zip(presets, weights)
        if p.eq_mode == first.eq_mode and p.crossovers_hz == first.crossovers_hz and float(w) > 0
    ]
    if not keep or not all(math.isfinite(w) for _, w in keep):
        raise ValueError(f"blend_presets needs finite positive weights, got {list(weights)}")
    total = sum(w for _, w in keep)
    keep = [(p, w / total) for p, w in keep]
    if len(keep) == 1:
        return keep[0][0]

    def mean(name: str) -> Any:
        vals = [np.asarray(getattr(p, name), dtype=np.float64) for p, _ in keep]
        out = sum(w * v for (_, w), v in zip(keep, vals))
        return tuple(float(a) for a in np.round(out, 6)) if np.ndim(out) else float(round(float(out), 6))

    numeric = [
        "target_mid_db", "target_side_db", "eq_max_db", "threshold_rel_db", "ratio", "knee_db", "attack_s", "release_s",
        "width", "target_lufs", "ceiling_dbtp", "limiter_lookahead_s", "limiter_release_s", "max_limiting_db",
    ]  # fmt: skip
    if first.eq_mode == "relative":
        numeric.append("correction_mid_db")
    label = ",".join(f"{p.name}:{w:.2g}" for p, w in keep)
    return replace(
        first,
        name=f"blend({label})",
        description=f"Weighted blend of {', '.join(p.name for p, _ in keep)}.",
        source=f"blend of bank presets ({label})",
        **{k: mean(k) for k in numeric},
    )


def _ramp(v: float, zero: float, one: float) -> float:
    """0 at ``zero``, 1 at ``one``, linear between, clamped (either direction); NaN stays NaN."""
    if not math.isfinite(v):
        return math.nan
    return float(min(1.0, max(0.0, (v - zero) / (one - zero))))


def speech_likeness(fp: Mapping[str, float]) -> float:
    """How much a fingerprint looks like speech, 0..1 (music below 0.5): the smallest of three cues.

    * **narrow**: speech is recorded (near) mono -- overall side/mid ratio from -10 dB (0) to -25 dB (1);
    * **no low end**: the voice has no energy below ~80 Hz -- the 20..63 Hz mid bands'
      total, re. the overall level, from -15 dB (0) to -30 dB (1);
    * **syllabic**: speech switches on and off several times a second -- the mean
      short-time level spread (P95 - P10) of the 500 Hz, 1 kHz and 2 kHz octaves from 12 dB (0) to 20 dB (1).

    All three must hold for speech, so a stereo, a bass-carrying or a sustained
    (music-like) track reads as music. NaN when a cue cannot be measured (a mapping
    without those features, a track too short for two frames): then nothing is kept
    off. A simple measure by design: its only use is to keep a speech preset off music.

    Examples
    --------
    >>> music = {"width_overall_db": -12.0, "dynamics_500hz_db": 14.0, "dynamics_1000hz_db": 14.0, "dynamics_2000hz_db": 14.0}
    >>> music |= {f"ltas_mid_{b}hz_db": -12.0 for b in ("20", "25", "31.5", "40", "50", "63")}
    >>> speech_likeness(music)
    0.0
    """
    low_bands = [fp.get(f"ltas_mid_{b}hz_db", math.nan) for b in ("20", "25", "31.5", "40", "50", "63")]
    low = [v for v in low_bands if v is not None and math.isfinite(v)]
    low_db = 10.0 * math.log10(sum(10.0 ** (v / 10.0) for v in low)) if low else math.nan
    dyn = [fp.get(f"dynamics_{b}hz_db", math.nan) for b in ("500", "1000", "2000")]
    dyn = [v for v in dyn if v is not None and math.isfinite(v)]
    width = fp.get("width_overall_db", math.nan)
    cues = (
        _ramp(math.nan if width is None else float(width), -10.0, -25.0),
        _ramp(low_db, -15.0, -30.0),
        _ramp(float(np.mean(dyn)) if dyn else math.nan, 12.0, 20.0),
    )
    return math.nan if any(math.isnan(c) for c in cues) else round(min(cues), 4)


# =====================================================================================
# Banks: presets + the data selection needs (no pickle; estimators built at load time)
# =====================================================================================


#: Shipped default bank (JSON, human-readable; regenerate with :func:`acetate.pipeline.chain.default_bank.build_default_bank`).
DEFAULT_BANK_PATH = _Path(__file__).resolve().parent.parent / "data" / "default_bank.json"

#: 1/3-octave bands used for selection: 31.5 Hz .. 16 kHz (the music's range; the
#: 20/25 Hz and 20 kHz bands are mostly rumble, resampling edges or absent).
SELECTION_BANDS: tuple[str, ...] = _LABELS3[2:30]

#: Selection features: what a track *needs* from mastering, i.e. its tonal balance
#: (mid long-term spectrum re. its own level, and its tilt), its density (crest
#: factor), its macro-dynamics (loudness range) and its width. Absolute loudness
#: is left out on purpose: the loudness stage fixes it whatever the style.
SELECTION_FEATURES: tuple[str, ...] = tuple(f"ltas_mid_{b}hz_db" for b in SELECTION_BANDS) + (
    "spectral_tilt_db_per_oct",
    "crest_factor_db",
    "loudness_range_lu",
    "width_overall_db",
)

#: Weight of each selection feature after standardisation: the 28 spectrum bands
#: share a total squared weight of 3 (so the spectrum counts like three scalar
#: features, not 28), the four scalars weigh 1 each.
SELECTION_WEIGHTS: tuple[float, ...] = tuple([math.sqrt(3.0 / len(SELECTION_BANDS))] * len(SELECTION_BANDS) + [1.0] * 4)

#: Clips applied before scaling (a mono file's width of -120 dB, a silent band at the
#: -120 dB floor or a clipped-to-death crest must not dominate a distance).
SELECTION_CLIP: dict[str, tuple[float, float]] = {
    "ltas": (-80.0, 10.0),
    "spectral_tilt_db_per_oct": (-15.0, 10.0),
    "crest_factor_db": (0.0, 40.0),
    "loudness_range_lu": (0.0, 30.0),
    "width_overall_db": (-40.0, 10.0),
}

SELECTION_METHODS = ("nearest_prototype", "knn")

#: A 1/3-octave band whose upper edge lies above this fraction of the track's sample rate
#: is a missing selection feature, like a band above Nyquist (NaN in the fingerprint): its
#: top is the anti-alias roll-off of whatever made the file (a resampler's pass band ends
#: near 0.45 fs; the EQ stops there too), so it would read a low-rate track as dark. At
#: 44.1 kHz and above every selection band (31.5 Hz .. 16 kHz) is whole and kept; at
#: 11.025 and 12 kHz the 5 kHz band, at 22.05 kHz the 10 kHz band, is left out.
SELECTION_MAX_FRACTION = 0.45


@functools.cache
def _band_upper_hz() -> dict[str, float]:
    """Exact upper edge (hertz) of each 1/3-octave band, by its feature label."""
    from acetate.kernels.spectrum import band_edges

    return dict(zip(_LABELS3, (float(u) for u in band_edges(48000, 3).upper)))


def _band_missing(name: str, fs: float | None) -> bool:
    """Whether LTAS feature ``name`` is missing at rate ``fs`` (:data:`SELECTION_MAX_FRACTION`)."""
    if fs is None or not name.startswith("ltas_") or not name.endswith("hz_db"):
        return False
    upper = _band_upper_hz().get(name[:-5].rsplit("_", 1)[-1])
    return upper is not None and upper > SELECTION_MAX_FRACTION * fs


def selection_vector(
    fp: Mapping[str, float], features: Sequence[str] = SELECTION_FEATURES, clip: Mapping[str, Sequence[float]] | None = None
) -> np.ndarray:
    """The selection features of a fingerprint as a float64 vector (clipped; NaN kept = missing).

    Missing (NaN) are the features the fingerprint has as NaN (bands above Nyquist,
    loudness of silence) and, where it gives its ``sample_rate``, the LTAS bands
    reaching above :data:`SELECTION_MAX_FRACTION` of it. :class:`Bank` skips missing
    features in its distances (NaN-aware Euclidean, rescaled to the full count),
    the same way for every preset, so a low-rate track is compared on what it has.

    Parameters
    ----------
    fp : mapping
        A fingerprint (:func:`acetate.pipeline.chain.analyse.fingerprint`) or any
        mapping holding ``features``.
    features : sequence of str
        Feature names (a bank's ``selection.features``).
    clip : mapping, optional
        ``{"ltas": (lo, hi), name: (lo, hi)}`` (default :data:`SELECTION_CLIP`).

    Raises
    ------
    KeyError
        Naming the first feature missing from ``fp``.

    Examples
    --------
    >>> v = selection_vector({k: 0.0 for k in SELECTION_FEATURES} | {"width_overall_db": -120.0})
    >>> v.shape, float(v[-1])
    ((32,), -40.0)
    """
    clip = SELECTION_CLIP if clip is None else clip
    missing = [k for k in features if k not in fp]
    if missing:
        raise KeyError(f"fingerprint lacks selection feature {missing[0]!r}")
    fs = fp.get("sample_rate")
    fs = float(fs) if isinstance(fs, (int, float, np.integer, np.floating)) and math.isfinite(fs) and fs > 0 else None
    out = np.empty(len(features), dtype=np.float64)
    for i, k in enumerate(features):
        v = fp[k]
        v = math.nan if v is None or _band_missing(k, fs) else float(v)
        lo_hi = clip.get("ltas") if k.startswith("ltas_") else clip.get(k)
        if lo_hi is not None and math.isfinite(v):
            v = min(max(v, float(lo_hi[0])), float(lo_hi[1]))
        out[i] = v
    return out


@dataclass(frozen=True)
class Selection:
    """The outcome of :meth:`Bank.select`.

    Attributes
    ----------
    preset : Preset
        The nearest preset (the bank's own; a KNN vote's winner with ``method="knn"``).
    distance : float
        Its distance from the track (standardised, weighted feature space).
    runners_up : tuple of (str, float)
        The next presets, nearest first.
    method : str
        ``nearest_prototype`` or ``knn``.
    bank : str
        The bank's name.
    n_features : int
        Selection features the track had values for (NaN ones are skipped).
    applied : Preset or None
        What the track is rendered with: ``preset`` itself, the blend of the
        nearest presets (:func:`blend_presets`), or :data:`GENTLE` when the
        confidence is below the bank's threshold. None means ``preset``.
    confidence : float
        0..1: :meth:`Bank.select` says how it is computed.
    weights : tuple of (str, float)
        The blend: preset names and weights (sum 1), heaviest first.
    notes : tuple of str
        Why the applied preset is not simply the nearest (low confidence, a speech
        preset kept off music), for the track's report.
    speech : float
        :func:`speech_likeness` of the track (0..1; NaN where not measurable).
    drivers : tuple of (str, float)
        The (up to 3) features that most favoured the nearest preset over the runner-up:
        each one's share of the squared-distance difference, largest first.
    nearest_members : tuple of (str, float)
        The (up to 3) nearest reference rows of the bank (a learned bank's training
        mixes, a house bank's masters): their preset and distance.
    """

    preset: Preset
    distance: float
    runners_up: tuple[tuple[str, float], ...]
    method: str
    bank: str
    n_features: int
    applied: Preset | None = None
    confidence: float = 1.0
    weights: tuple[tuple[str, float], ...] = ()
    notes: tuple[str, ...] = ()
    speech: float = 0.0
    drivers: tuple[tuple[str, float], ...] = ()
    nearest_members: tuple[tuple[str, float], ...] = ()

    @property
    def rendered(self) -> Preset:
        """The preset the track is rendered with (:attr:`applied`, else :attr:`preset`)."""
        return self.applied if self.applied is not None else self.preset

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able report: ``preset`` (nearest), ``applied``, ``distance``, ``confidence``,
        ``weights`` [{name, weight}], ``runners_up`` [{name, distance}], ``method``, ``bank``,
        ``n_features``, ``speech``, ``notes``, ``drivers`` [{feature, share}], ``nearest_members`` [{preset, distance}]."""
        return {
            "preset": self.preset.name,
            "applied": self.rendered.name,
            "distance": round(self.distance, 4),
            "confidence": round(self.confidence, 4),
            "weights": [{"name": n, "weight": round(w, 4)} for n, w in self.weights],
            "runners_up": [{"name": n, "distance": round(d, 4)} for n, d in self.runners_up],
            "method": self.method,
            "bank": self.bank,
            "n_features": self.n_features,
            "speech": self.speech if math.isfinite(self.speech) else None,
            "notes": list(self.notes),
            "drivers": [{"feature": n, "share": round(v, 4)} for n, v in self.drivers],
            "nearest_members": [{"preset": n, "distance": round(d, 4)} for n, d in self.nearest_members],
        }


#: Selection defaults a bank's ``selection`` metadata may override: blend over the ``blend_k``
#: nearest presets with weights ``exp(-(d - d_min) / temperature)``; below ``min_confidence``
#: the track gets :data:`GENTLE`.
SELECTION_DEFAULTS: dict[str, float] = {"blend_k": 1, "temperature": 0.5, "min_confidence": 0.15}


_LEARNED_KEYS = tuple(_bank_schema.LEARNED_COLUMNS)


def _weigh(z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Multiply standardised features by their selection weights (a FunctionTransformer step)."""
    return np.asarray(z, dtype=np.float64) * weights


class Bank:
    """A set of presets and the data to choose among them.

    The selection pipeline (``StandardScaler`` fitted on the bank's member
    rows, then the per-feature weights) is built and fitted here, from the
    bank's own data: nothing is unpickled. Selection is nearest prototype by
    NaN-aware Euclidean distance in that space (features the track lacks,
    e.g. bands above its Nyquist, are skipped and the distance rescaled), or,
    with ``method="knn"``, a vote of the ``k`` nearest member rows.

    Parameters
    ----------
    presets : sequence of Preset
    prototypes : array, shape (P, F)
        Per preset, the selection features of the typical mix it suits.
    members : sequence of arrays, each (n_p, F)
        Reference rows labelled with each preset (fit the scaler; KNN votes).
    meta : mapping
        Bank metadata (``name``, ``description``, ``kind``, ``selection`` with
        ``features``, ``weights``, ``clip``, ``method`` [, ``k``], ...).
    learned : sequence of mapping, optional
        Per preset, the learned-transform columns (see :mod:`acetate.schemas.bank`).

    Examples
    --------
    >>> bank = load_bank()
    >>> "balanced" in bank.names
    True
    """

    def __init__(
        self,
        presets: Sequence[Preset],
        prototypes: Any,
        members: Sequence[Any],
        meta: Mapping[str, Any],
        learned: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.presets: tuple[Preset, ...] = tuple(presets)
        if not self.presets:
            raise ValueError("a bank needs at least one preset")
        names = [p.name for p in self.presets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate preset names in bank: {names}")
        self.meta: dict[str, Any] = _json.loads(_json.dumps(dict(meta)))  # deep copy, JSON-able check
        sel = self.meta.setdefault("selection", {})
        self.features: tuple[str, ...] = tuple(sel.get("features") or SELECTION_FEATURES)
        sel["features"] = list(self.features)
        nf = len(self.features)
        w = sel.get("weights")
        self.weights = np.asarray(w if w is not None else ([1.0] * nf), dtype=np.float64)
        if self.weights.shape != (nf,) or not np.all(np.isfinite(self.weights)) or np.any(self.weights < 0):
            raise ValueError(f"selection.weights must be {nf} finite non-negative numbers, got {w!r}")
        sel["weights"] = [float(a) for a in self.weights]
        self.clip = {k: tuple(v) for k, v in (sel.get("clip") or SELECTION_CLIP).items()}
        sel["clip"] = {k: list(v) for k, v in self.clip.items()}
        self.method = str(sel.get("method", "nearest_prototype"))
        if self.method not in SELECTION_METHODS:
            raise ValueError(f"selection.method must be one of {SELECTION_METHODS}, got {self.method!r}")
        sel["method"] = self.method
        self.k = int(sel.get("k", 5))
        self.prototypes = np.asarray(prototypes, dtype=np.float64).reshape(len(self.presets), -1)
        if self.prototypes.shape[1] != nf:
            raise ValueError(f"prototypes have {self.prototypes.shape[1]} features, selection has {nf}")
        self.members = [np.asarray(m, dtype=np.float64).reshape(-1, nf) for m in members]
        if len(self.members) != len(self.presets):
            raise ValueError(f"members: {len(self.members)} groups for {len(self.presets)} presets")
        self.learned = [dict(d) for d in learned] if learned is not None else [{} for _ in self.presets]
        if len(self.learned) != len(self.presets):
            raise ValueError(f"learned: {len(self.learned)} entries for {len(self.presets)} presets")
        self._pipeline = None
        self._radius: float | None = None

    # -- basic access -------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.meta.get("name", "bank"))

    @property
    def description(self) -> str:
        return str(self.meta.get("description", ""))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.presets)

    def __len__(self) -> int:
        return len(self.presets)

    def __iter__(self):
        return iter(self.presets)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def get(self, name: str, default: Preset | None = None) -> Preset | None:
        """The preset called ``name``, or ``default``."""
        for p in self.presets:
            if p.name == name:
                return p
        return default

    def __getitem__(self, name: str) -> Preset:
        for p in self.presets:
            if p.name == name:
                return p
        raise KeyError(f"no preset {name!r} in bank {self.name!r}; choose from {', '.join(self.names)}")

    def __repr__(self) -> str:
        return f"Bank({self.name!r}, presets={list(self.names)})"

    # -- selection ------------------------------------------------------------------
    def _fitted(self):
        if self._pipeline is None:
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import FunctionTransformer, StandardScaler

            rows = np.concatenate([m for m in self.members if m.size] + [self.prototypes], axis=0)
            pipe = Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("weight", FunctionTransformer(_weigh, kw_args={"weights": self.weights}, check_inverse=False)),
                ]
            )
            with np.errstate(invalid="ignore"):
                pipe.fit(rows)
            scaler = pipe.named_steps["scale"]
            # a feature constant over the bank's rows carries no information
            scaler.scale_ = np.where(np.isfinite(scaler.scale_) & (scaler.scale_ > 1e-9), scaler.scale_, 1.0)
            self._pipeline = pipe
            self._proto_z = pipe.transform(self.prototypes)
            self._member_z = [pipe.transform(m) if m.size else m for m in self.members]
        return self._pipeline

    def transform(self, vectors: Any) -> np.ndarray:
        """Selection vectors (N, F) -> the standardised, weighted space the distances live in."""
        return self._fitted().transform(np.atleast_2d(np.asarray(vectors, dtype=np.float64)))

    def distances(self, fp: Mapping[str, float]) -> np.ndarray:
        """Distance from a fingerprint to each preset's prototype (NaN-aware Euclidean), in bank order."""
        return self._place(fp)[2]

    def _place(self, fp: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fingerprint's selection vector, its point in the selection space and its distance to each
        prototype: computed once per selection, shared by the vote and the explanation."""
        from sklearn.metrics.pairwise import nan_euclidean_distances

        v = selection_vector(fp, self.features, self.clip)
        z = self.transform(v)
        if not np.any(np.isfinite(z)):
            raise ValueError("the fingerprint has none of the selection features (silent or unmeasurable track)")
        return v, z[0], nan_euclidean_distances(z, self._proto_z)[0]

    def _member_distances(self, z: np.ndarray) -> list[tuple[float, int]]:
        """(distance, preset index) of every member row from the point ``z``, nearest first."""
        from sklearn.metrics.pairwise import nan_euclidean_distances

        rows = [(float(dd), p) for p, m in enumerate(self._member_z) if m.size for dd in nan_euclidean_distances(z[None, :], m)[0]]
        return sorted(rows)

    def radius(self) -> float:
        """The bank's typical distance of a mix from its own preset: the 90th percentile of the
        member rows' distances to their preset's prototype (the scale of :meth:`select`'s confidence)."""
        if getattr(self, "_radius", None) is None:
            from sklearn.metrics.pairwise import nan_euclidean_distances

            self._fitted()
            d = [nan_euclidean_distances(m, self._proto_z[i : i + 1])[:, 0] for i, m in enumerate(self._member_z) if m.size]
            flat = np.concatenate(d) if d else np.empty(0)
            flat = flat[np.isfinite(flat)]
            if flat.size >= 2:
                r = float(np.quantile(flat, 0.9))
            elif len(self.presets) > 1:
                pd = nan_euclidean_distances(self._proto_z, self._proto_z)
                r = float(np.median(pd[np.triu_indices(len(self.presets), 1)])) / 2.0
            else:
                r = 1.0
            self._radius = r if math.isfinite(r) and r > 0 else 1.0
        return float(self._radius)

    def select(
        self,
        fp: Mapping[str, float],
        *,
        n_runners_up: int = 3,
        blend_k: int | None = None,
        temperature: float | None = None,
        min_confidence: float | None = None,
    ) -> Selection:
        """Choose the preset for a track from its fingerprint (deterministic).

        The nearest preset (or the KNN vote's) is :attr:`Selection.preset`. What
        the track is rendered with, :attr:`Selection.applied`, is the blend of the
        ``blend_k`` nearest presets with weights ``exp(-(d_i - d_min) / temperature)``
        (equidistant presets weigh the same; a preset ``temperature`` farther weighs
        1/e), or :data:`GENTLE` when the confidence is below ``min_confidence``.
        The defaults come from the bank's ``selection`` metadata, else
        :data:`SELECTION_DEFAULTS`.

        Confidence (0..1) is ``proximity * (0.5 + 0.5 * margin)``: ``proximity =
        min(1, r / d_min)`` with ``r`` the bank's :meth:`radius` (1 while the track
        is as near its preset as the bank's own mixes are; falls as it moves away from
        every preset), ``margin = 1 - d_min / d_runner_up`` (0 when the runner-up is
        as near, 1 in a one-preset bank).

        A ``content="speech"`` preset is left out for a track whose
        :func:`speech_likeness` is below 0.5 (music), with a note.

        Parameters
        ----------
        fp : mapping
            The track's fingerprint.
        n_runners_up : int
            How many next-best presets to report.
        blend_k, temperature, min_confidence : optional
            Override the bank's selection settings.

        Returns
        -------
        Selection

        Raises
        ------
        KeyError
            If the fingerprint lacks a selection feature.
        ValueError
            If it has no finite selection feature at all, or a setting is out of range (named).
        """
        sel_meta = self.meta.get("selection", {})
        k_blend = int(blend_k if blend_k is not None else sel_meta.get("blend_k", SELECTION_DEFAULTS["blend_k"]))
        temp = float(temperature if temperature is not None else sel_meta.get("temperature", SELECTION_DEFAULTS["temperature"]))
        floor = float(
            min_confidence if min_confidence is not None else sel_meta.get("min_confidence", SELECTION_DEFAULTS["min_confidence"])
        )
        if k_blend < 1:
            raise ValueError(f"blend_k must be >= 1, got {k_blend}")
        if not (math.isfinite(temp) and temp > 0):
            raise ValueError(f"temperature must be a positive number, got {temp}")
        if not (0.0 <= floor <= 1.0):
            raise ValueError(f"min_confidence must be within [0, 1], got {floor}")
        v, z, d = self._place(fp)
        members = self._member_distances(z)
        speech = speech_likeness(fp)
        notes: list[str] = []
        allowed = [i for i in range(len(d)) if not (self.presets[i].content == "speech" and speech < 0.5)]
        if not allowed:
            allowed = list(range(len(d)))
        elif len(allowed) < len(d):
            kept_off = [self.presets[i].name for i in range(len(d)) if i not in allowed]
            if min(range(len(d)), key=lambda i: (d[i], i)) not in allowed:
                notes.append(
                    f"speech preset {', '.join(kept_off)} not used: the track measures as music (speech likeness {speech:.2f} < 0.5)"
                )
        order = sorted(allowed, key=lambda i: (d[i], i))  # ties: bank order
        best = order[0]
        if self.method == "knn":
            best = self._knn_vote(members, d, allowed)
            order = [best] + [i for i in order if i != best]
        d_best = float(d[best])
        proximity = min(1.0, self.radius() / d_best) if d_best > 0 else 1.0
        margin = 1.0 if len(order) < 2 else (1.0 - d_best / float(d[order[1]]) if d[order[1]] > 0 else 0.0)
        confidence = round(proximity * (0.5 + 0.5 * max(0.0, margin)), 4)
        near = order[:k_blend]
        raw = [math.exp(-(float(d[i]) - d_best) / temp) for i in near]
        weights = tuple((self.presets[i].name, w / sum(raw)) for i, w in zip(near, raw))
        applied = blend_presets([self.presets[i] for i in near], [w for _, w in weights]) if len(near) > 1 else self.presets[best]
        if confidence < floor:
            notes.append(
                f"selection confidence {confidence:.2f} < {floor:.2f} (nearest {self.presets[best].name} at distance {d_best:.2f}): "
                f"mastered with the gentle default chain"
            )
            applied = GENTLE
        drivers = self._drivers(z, best, order[1] if len(order) > 1 else None)
        return Selection(
            preset=self.presets[best],
            distance=d_best,
            runners_up=tuple((self.presets[i].name, float(d[i])) for i in order[1 : 1 + n_runners_up]),
            method=self.method,
            bank=self.name,
            n_features=int(np.isfinite(v).sum()),
            applied=applied,
            confidence=confidence,
            weights=weights,
            notes=tuple(notes),
            speech=speech,
            drivers=drivers,
            nearest_members=tuple((self.presets[p].name, dd) for dd, p in members[:3]),
        )

    def _drivers(self, z: np.ndarray, best: int, runner_up: int | None) -> tuple[tuple[str, float], ...]:
        """:attr:`Selection.drivers` of the point ``z``: each feature's share of why ``best`` beat ``runner_up``."""
        if runner_up is None:
            return ()
        gain = np.nan_to_num((z - self._proto_z[runner_up]) ** 2 - (z - self._proto_z[best]) ** 2, nan=0.0)
        total = float(np.sum(np.maximum(gain, 0.0)))
        if total <= 0:
            return ()
        top = [i for i in np.argsort(-gain, kind="stable")[:3] if gain[i] > 0]
        return tuple((self.features[i], float(gain[i] / total)) for i in top)

    def _knn_vote(self, members: Sequence[tuple[float, int]], proto_d: np.ndarray, allowed: Sequence[int]) -> int:
        """The preset the ``k`` nearest allowed member rows vote for (weights 1 / distance)."""
        rows = [(dd, p) for dd, p in members if p in allowed]
        if not rows:
            return min(allowed, key=lambda i: (proto_d[i], i))
        votes: dict[int, float] = {}
        for dd, p in rows[: self.k]:
            votes[p] = votes.get(p, 0.0) + 1.0 / (dd + 1e-6)
        return max(votes, key=lambda p: (votes[p], -proto_d[p], -p))

    # -- serialisation ----------------------------------------------------------------
    def to_rows(self) -> list[dict[str, Any]]:
        """Bank rows for :func:`acetate.schemas.bank.bank_table` (one per preset)."""
        rows = []
        for p, proto, m, le in zip(self.presets, self.prototypes, self.members, self.learned):
            r = p.to_dict()
            r["prototype"] = [float(a) for a in proto]
            r["members"] = [[float(a) for a in row] for row in m]
            for k in _LEARNED_KEYS:
                v = le.get(k)
                r[k] = list(v) if isinstance(v, (tuple, np.ndarray)) else v
            rows.append(r)
        return rows

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> "Bank":
        """Inverse of :meth:`to_rows` (rows already validated by the schema)."""
        pfields = {f.name for f in fields(Preset)}
        presets, protos, members, learned = [], [], [], []
        for r in rows:
            presets.append(Preset.from_dict({k: v for k, v in r.items() if k in pfields and v is not None}))
            protos.append(r["prototype"])
            members.append(
                np.asarray(r["members"] or np.empty((0, len(r["prototype"]))), dtype=np.float64).reshape(-1, len(r["prototype"]))
            )
            learned.append({k: r.get(k) for k in _LEARNED_KEYS if r.get(k) is not None})
        return cls(presets, np.asarray(protos, dtype=np.float64), members, meta, learned)

    def info(self) -> list[dict[str, Any]]:
        """One summary dict per preset (for listings)."""
        out = []
        for p, m, le in zip(self.presets, self.members, self.learned):
            out.append(
                {
                    "name": p.name,
                    "description": p.description,
                    "target_lufs": p.target_lufs,
                    "ceiling_dbtp": p.ceiling_dbtp,
                    "ratio": list(p.ratio),
                    "width": list(p.width),
                    "members": int(m.shape[0]),
                    "eq_mode": p.eq_mode,
                    "content": p.content,
                    "n_pairs": le.get("n_pairs"),
                    "source": p.source,
                }
            )
        return out


def save_bank(bank: Bank, path: str | _os.PathLike) -> str:
    """Write ``bank`` to ``path``: JSON if the name ends in ``.json``, else Parquet (atomic).

    Examples
    --------
    >>> import tempfile, os
    >>> p = save_bank(load_bank(), os.path.join(tempfile.mkdtemp(), "bank.parquet"))
    >>> load_bank(p).names == load_bank().names
    True
    """
    return _bank_schema.write_bank_file(_bank_schema.bank_table(bank.to_rows(), bank.meta), path)


_DEFAULT_CACHE: dict[str, Bank] = {}


def load_bank(path: str | _os.PathLike | None = None) -> Bank:
    """Load a bank (Parquet or JSON); ``None`` or ``"default"`` gives the shipped default bank.

    Loading reads numbers and strings only; the selection pipeline is fitted
    from the bank's own rows here.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a bank, an unreadable schema version, or invalid contents (named).
    """
    if path is None or (isinstance(path, str) and path == "default"):
        if "default" not in _DEFAULT_CACHE:
            rows, meta = _bank_schema.read_bank_file(DEFAULT_BANK_PATH)  # package data
            _DEFAULT_CACHE["default"] = Bank.from_rows(rows, meta)
        return _DEFAULT_CACHE["default"]
    rows, meta = _bank_schema.read_bank_file(path)
    return Bank.from_rows(rows, meta)
