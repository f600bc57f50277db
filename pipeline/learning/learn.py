"""Learning a preset bank from (mix, master) pairs.

``acetate learn --pairs MANIFEST --out BANK`` runs, per pair:

1. **Align** (:func:`align`): mastering trims heads and adds fades, so the
   master's offset in the mix is estimated by cross-correlation of the mono
   sums (FFT, first ``window_s`` seconds, offsets up to ``max_offset_s``); the
   overlapping span is kept.
2. **Estimate the transform** (:func:`estimate_transform`): fingerprint both
   (:func:`acetate.pipeline.chain.analyse.fingerprint`) and take differences --
   the EQ curve of mid and side (master minus mix long-term spectrum, both
   re. their own overall level, smoothed over 1/3-octave neighbours; bands
   below -70 dB re. the level or out of range are NaN), the loudness change,
   crest factor and loudness range changes, per-octave dynamic spread
   changes and per-octave width changes.

Then over all pairs (:func:`learn_bank`):

3. **Cluster** the *moves* into K presets: k-means (scikit-learn, seeded) on
   features that describe what the engineer did and nothing else -- the EQ
   curve (its mean removed) on the selection bands with a total weight of 3,
   the crest-factor, loudness-range and width changes -- all invariant to
   the input's level and to the song.
4. **Choose K and the selection model** by transfer error
   (:func:`choose_model`): for K = 1..``k_max`` and each model of
   :data:`MODELS` (nearest prototype or k-nearest-neighbour vote, with or
   without a blend of the 3 nearest presets), a group K-fold split (no
   group on both sides) fits the bank on the training folds and measures
   how far the EQ it would apply to each held-out mix is from that mix's
   true move (:func:`curve_error`); the lowest error wins.
5. **Report** on a held-out group split (nothing fitted on it): accuracy
   beside chance, the transfer error of the learned bank vs no EQ vs the
   default bank, and (:func:`learn_from_manifest`) the band-spectrum
   distance to the true masters of masters rendered with either bank vs
   the raw mixes (:func:`rendered_errors`); warnings when the learned bank
   does no better than chance or than the default bank.
6. **Write** the bank fitted on all pairs, in the default bank's format, with
   the report in its metadata.

A learned preset is *relative* (``eq_mode="relative"``): it carries the
cluster's mean correction curve, and the renderer applies that move to
each track as it is (scaled by the intensity: ``high`` applies it in full),
instead of dragging every track to one absolute spectrum. Its loudness
target is the cluster's median master loudness; ratios follow the shrinkage
of the per-band dynamic spread; widths follow the width change; its
``content`` is ``speech`` when most of its mixes measure as speech.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from acetate.kernels.spectrum import BAND_CENTRES_HZ, OCTAVE_CENTRES_HZ
from acetate.pipeline.chain import analyse
from acetate.pipeline.chain.presets import (
    DEFAULT_CROSSOVERS_HZ,
    SELECTION_BANDS,
    SELECTION_CLIP,
    SELECTION_FEATURES,
    SELECTION_WEIGHTS,
    Bank,
    Preset,
    selection_vector,
)
from acetate.pipeline.io import audio
from acetate.schemas.features import OCTAVE_LABELS, THIRD_OCTAVE_LABELS

__all__ = [
    "Pair",
    "PairTransform",
    "read_manifest",
    "align",
    "estimate_transform",
    "analyse_pair",
    "cluster_transforms",
    "learn_bank",
    "learn_from_manifest",
]

#: Bands below this level (dB re. the track's overall level) carry no usable EQ estimate.
EQ_FLOOR_DB = -70.0
#: Weakest normalised cross-correlation peak accepted as an alignment.
MIN_ALIGN_CORR = 0.2
_SMOOTH = np.array([0.25, 0.5, 0.25])
_SEL_IDX = np.array([THIRD_OCTAVE_LABELS.index(b) for b in SELECTION_BANDS])
#: Bands of the error figures (the selection's range, 31.5 Hz .. 16 kHz).
_ERR_BANDS = np.array([31.5 <= c <= 16000.0 for c in BAND_CENTRES_HZ])


@dataclass(frozen=True)
class Pair:
    """One manifest row: paths (resolved) and a group (album/artist; the mix path when absent)."""

    mix_path: str
    master_path: str
    group: str


@dataclass
class PairTransform:
    """What mastering did to one mix (see the module docstring).

    Attributes
    ----------
    pair : Pair
    offset_s : float
        Where the master starts in the mix (positive: the master lost the mix's head).
    align_corr : float
        Normalised cross-correlation at the chosen offset (0..1).
    mix_fp, master_fp : dict
        Fingerprints of the aligned spans.
    eq_mid_db, eq_side_db : ndarray, shape (31,)
        Master minus mix long-term band level, smoothed; NaN where unusable.
    loudness_change_db, crest_change_db, lra_change_lu, width_change_db : float
    dynamics_change_db, width_band_change_db : ndarray, shape (10,)
        Per octave band: change of dynamic spread (P95-P10) and of width.
    """

    pair: Pair
    offset_s: float
    align_corr: float
    mix_fp: dict[str, float]
    master_fp: dict[str, float]
    eq_mid_db: np.ndarray
    eq_side_db: np.ndarray
    loudness_change_db: float
    crest_change_db: float
    lra_change_lu: float
    width_change_db: float
    dynamics_change_db: np.ndarray = field(default_factory=lambda: np.full(len(OCTAVE_LABELS), np.nan))
    width_band_change_db: np.ndarray = field(default_factory=lambda: np.full(len(OCTAVE_LABELS), np.nan))
    #: The mix's samples ``[start, end)`` the fingerprints describe (the aligned overlap).
    span: tuple[int, int] = (0, 0)

    def features(self) -> np.ndarray:
        """Clustering features: the engineer's *move*, invariant to the input's level and to the song --
        the EQ curve (selection bands, its mean removed: level is the loudness stage's), and the
        crest-factor, loudness-range and width changes. No absolute level or loudness."""
        eq = self.eq_mid_db[_SEL_IDX]
        eq = eq - np.nanmean(eq) if np.isfinite(eq).any() else eq
        return np.concatenate([eq, [self.crest_change_db, self.lra_change_lu, self.width_change_db]])


# --- manifest -------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> list[Pair]:
    """Read a pairs manifest: CSV or Parquet with ``mix_path, master_path[, group]``.

    Relative paths are taken relative to the manifest's folder. Without a
    ``group`` column (or with an empty group) each pair is its own group.

    Raises
    ------
    ValueError
        Missing column (named), empty manifest, or an empty path (row named).
    FileNotFoundError
        No manifest.
    """
    from acetate.pipeline.catalogue.jobs import read_table_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such manifest: {path}")
    cols, numbered = read_table_file(path, ("mix_path", "master_path", "group"), "pairs manifest")
    rows = [r for _, r in numbered]
    if not rows:
        raise ValueError(f"{path}: the manifest has no pairs")
    for col in ("mix_path", "master_path"):
        if col not in cols:
            raise ValueError(f"{path}: manifest lacks column {col!r} (has {sorted(cols)})")
    base = path.parent
    out = []
    for i, r in enumerate(rows):
        mix, mas = (str(r.get("mix_path") or "").strip(), str(r.get("master_path") or "").strip())
        if not mix or not mas:
            raise ValueError(f"{path}: row {i + 1} has an empty mix_path or master_path")
        mix_p = mix if os.path.isabs(mix) else str(base / mix)
        mas_p = mas if os.path.isabs(mas) else str(base / mas)
        group = str(r.get("group") or "").strip() or mix_p
        out.append(Pair(mix_p, mas_p, group))
    return out


# --- alignment and transform estimation ----------------------------------------------------


def align(mix: np.ndarray, master: np.ndarray, fs: int, *, max_offset_s: float = 10.0, window_s: float = 30.0) -> tuple[int, float]:
    """Offset of ``master`` within ``mix`` by cross-correlation of the mono sums.

    Parameters
    ----------
    mix, master : ndarray, shape (C, n)
        Same sample rate.
    fs : int
    max_offset_s : float
        Largest offset searched either way, seconds.
    window_s : float
        Seconds of the master's start correlated (longer is slower, not better).

    Returns
    -------
    lag : int
        Samples: ``master[:, t]`` corresponds to ``mix[:, t + lag]``.
    corr : float
        Normalised correlation at ``lag`` (1 = identical up to gain).

    Examples
    --------
    >>> rng = np.random.default_rng(0); x = rng.standard_normal((1, 8000))
    >>> align(x, x[:, 300:], 8000)[0]
    300
    """
    from scipy.signal import correlate

    if max_offset_s < 0 or window_s <= 0:
        raise ValueError(f"max_offset_s must be >= 0 and window_s > 0, got {max_offset_s}, {window_s}")
    a = np.asarray(mix, dtype=np.float64).mean(axis=0)
    b = np.asarray(master, dtype=np.float64).mean(axis=0)
    max_lag = int(round(max_offset_s * fs))
    w = min(b.size, int(round(window_s * fs)))
    b = b[:w]
    a = a[: w + max_lag]
    c = correlate(a, b, mode="full", method="fft")  # index i <-> lag i - (w - 1)
    lags = np.arange(c.size) - (w - 1)
    ok = np.abs(lags) <= max_lag
    i = int(np.argmax(np.where(ok, c, -np.inf)))
    lag = int(lags[i])
    # normalised correlation at that lag
    if lag >= 0:
        aa, bb = a[lag : lag + w], b[: max(0, min(w, a.size - lag))]
    else:
        aa, bb = a[: w + lag], b[-lag:w]
    n = min(aa.size, bb.size)
    aa, bb = aa[:n], bb[:n]
    den = math.sqrt(float(np.dot(aa, aa)) * float(np.dot(bb, bb)))
    return lag, (float(np.dot(aa, bb)) / den if den > 0 else 0.0)


def _smooth(v: np.ndarray) -> np.ndarray:
    ok = np.isfinite(v)
    num = np.convolve(np.where(ok, v, 0.0), _SMOOTH, mode="same")
    den = np.convolve(ok.astype(float), _SMOOTH, mode="same")
    return np.where(ok, num / np.maximum(den, 1e-9), np.nan)


def _octaves(fp: Mapping[str, float], key: str) -> np.ndarray:
    return np.array([fp[key.format(b)] for b in OCTAVE_LABELS], dtype=np.float64)


def _eq(mix_db: np.ndarray, master_db: np.ndarray, fs: int) -> np.ndarray:
    centres = np.asarray(BAND_CENTRES_HZ)
    ok = np.isfinite(mix_db) & np.isfinite(master_db) & (mix_db > EQ_FLOOR_DB) & (master_db > EQ_FLOOR_DB)
    ok &= (centres >= 25.0) & (centres <= 0.45 * fs)
    return _smooth(np.where(ok, master_db - mix_db, np.nan))


def _finite(v: Any) -> float:
    v = float(v)
    return v if math.isfinite(v) else math.nan


def estimate_transform(
    mix: np.ndarray,
    master: np.ndarray,
    fs: int,
    *,
    pair: Pair | None = None,
    max_offset_s: float = 10.0,
    edge_s: float = 0.5,
) -> PairTransform:
    """Align a mix and its master (same rate) and measure what mastering changed.

    ``edge_s`` seconds are dropped from each end of the overlap (fades) when
    the overlap is long enough (> 8 x ``edge_s``).

    Raises
    ------
    ValueError
        If the best alignment correlates below :data:`MIN_ALIGN_CORR` (not the
        same recording) or the overlap is shorter than one second.
    """
    pair = pair or Pair("<mix>", "<master>", "<mix>")
    lag, corr = align(mix, master, fs, max_offset_s=max_offset_s)
    if corr < MIN_ALIGN_CORR:
        raise ValueError(f"{pair.master_path}: does not align with {pair.mix_path} (best correlation {corr:.2f} < {MIN_ALIGN_CORR})")
    if lag >= 0:
        a, b = mix[:, lag:], master
    else:
        a, b = mix, master[:, -lag:]
    n = min(a.shape[1], b.shape[1])
    edge = int(round(edge_s * fs))
    lo, hi = (edge, n - edge) if n > 8 * edge else (0, n)
    if hi - lo < fs:
        raise ValueError(f"{pair.master_path}: aligned overlap with the mix is {(hi - lo) / fs:.2f} s (< 1 s)")
    a = np.ascontiguousarray(a[:, lo:hi], dtype=np.float32)
    b = np.ascontiguousarray(b[:, lo:hi], dtype=np.float32)
    fa, fb = analyse.fingerprint(a, fs), analyse.fingerprint(b, fs)
    w_mix = _octaves(fa, "width_{}hz_db")
    w_mas = _octaves(fb, "width_{}hz_db")
    wb = np.where((w_mix > -60) & (w_mas > -60), w_mas - w_mix, 0.0)  # (near) mono stays mono: no change
    w_overall = fb["width_overall_db"] - fa["width_overall_db"] if min(fa["width_overall_db"], fb["width_overall_db"]) > -60 else 0.0
    return PairTransform(
        pair=pair,
        offset_s=lag / fs,
        align_corr=corr,
        mix_fp=fa,
        master_fp=fb,
        eq_mid_db=_eq(analyse.band_levels(fa, "mid"), analyse.band_levels(fb, "mid"), fs),
        eq_side_db=_eq(analyse.band_levels(fa, "side"), analyse.band_levels(fb, "side"), fs),
        loudness_change_db=_finite(fb["integrated_lufs"] - fa["integrated_lufs"]),
        crest_change_db=_finite(fb["crest_factor_db"] - fa["crest_factor_db"]),
        lra_change_lu=_finite(fb["loudness_range_lu"] - fa["loudness_range_lu"]),
        width_change_db=_finite(w_overall),
        dynamics_change_db=_octaves(fb, "dynamics_{}hz_db") - _octaves(fa, "dynamics_{}hz_db"),
        width_band_change_db=wb,
        span=(max(lag, 0) + lo, max(lag, 0) + hi),
    )


def analyse_pair(pair: Pair, *, max_offset_s: float = 10.0) -> PairTransform:
    """Decode one pair (the master resampled to the mix's rate if they differ) and estimate its transform."""
    mix, fs = audio.decode(pair.mix_path)
    mas, fs_m = audio.decode(pair.master_path)
    if fs_m != fs:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(fs, fs_m)
        mas = resample_poly(mas, fs // g, fs_m // g, axis=1).astype(np.float32)
    if mix.shape[0] == 1 and mas.shape[0] == 2:
        mix = np.concatenate([mix, mix])
    if mas.shape[0] == 1 and mix.shape[0] == 2:
        mas = np.concatenate([mas, mas])
    return estimate_transform(mix[:2], mas[:2], fs, pair=pair, max_offset_s=max_offset_s)


# --- clustering -----------------------------------------------------------------------------

_CLUSTER_WEIGHTS = np.array([math.sqrt(3.0 / len(SELECTION_BANDS))] * len(SELECTION_BANDS) + [1.0, 1.0, 1.0])


def _cluster_space(feats: np.ndarray):
    """Scaler fitted on ``feats`` (NaN -> column mean), returning transformed rows and a transform function."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = np.where(np.all(np.isnan(feats), axis=0), 0.0, feats)  # a column never measured
    pipe = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler())
    z = pipe.fit_transform(feats) * _CLUSTER_WEIGHTS
    return z, lambda f: pipe.transform(np.where(np.all(np.isnan(feats), axis=0), 0.0, f)) * _CLUSTER_WEIGHTS


def cluster_transforms(
    transforms: Sequence[PairTransform], k: int, *, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any], Callable[[Sequence[PairTransform]], np.ndarray]]:
    """Cluster transforms into ``k`` groups of like moves: k-means (seeded) on :meth:`PairTransform.features`.

    Returns
    -------
    labels : ndarray of int, shape (n,)
        Cluster per transform, numbered by decreasing cluster size (ties: first member).
    info : dict
        ``k``.
    predict : callable
        Maps more transforms to the nearest of these clusters (held-out labels).
    """
    from sklearn.cluster import KMeans

    n = len(transforms)
    if n == 0:
        raise ValueError("no transforms to cluster")
    if not (1 <= k <= n):
        raise ValueError(f"k must be within 1..{n} (the number of pairs), got {k}")
    feats = np.array([t.features() for t in transforms])
    z, to_space = _cluster_space(feats)
    km = KMeans(k, n_init=10, random_state=seed).fit(z)
    raw = km.labels_
    order = sorted(range(k), key=lambda c: (-int(np.sum(raw == c)), int(np.argmax(raw == c))))
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)

    def predict(more: Sequence[PairTransform]) -> np.ndarray:
        return remap[km.predict(to_space(np.array([t.features() for t in more])))]

    return remap[raw], {"k": int(k)}, predict


# --- presets from clusters ------------------------------------------------------------------


def _nanmedian(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


def _fill_bands(v: np.ndarray) -> np.ndarray:
    """Fill NaN bands: hold-extrapolate from the nearest valid band with -3 dB/oct above, -12 dB/oct below."""
    ok = np.isfinite(v)
    if not ok.any():
        return np.full(v.shape, -60.0)
    lo, hi = int(np.argmax(ok)), int(len(v) - 1 - np.argmax(ok[::-1]))
    x = np.interp(np.arange(len(v)), np.flatnonzero(ok), v[ok])
    idx = np.arange(len(v))
    x = np.where(idx > hi, v[hi] - 1.0 * (idx - hi), x)  # 3 bands = 1 octave -> -3 dB/oct
    x = np.where(idx < lo, v[lo] - 4.0 * (lo - idx), x)
    return np.maximum(x, -110.0)


def _band_map() -> list[np.ndarray]:
    """Octave bands falling in each dynamics band (crossovers :data:`DEFAULT_CROSSOVERS_HZ`)."""
    edges = (0.0,) + tuple(DEFAULT_CROSSOVERS_HZ) + (1e9,)
    oc = np.asarray(OCTAVE_CENTRES_HZ)
    return [np.flatnonzero((oc >= edges[i]) & (oc < edges[i + 1])) for i in range(len(edges) - 1)]


def _preset_from(name: str, members: Sequence[PairTransform], manifest: str) -> tuple[Preset, dict[str, Any]]:
    mix_mid = np.nanmean([analyse.band_levels(t.mix_fp, "mid") for t in members], axis=0) if members else None
    mix_side = np.nanmean([analyse.band_levels(t.mix_fp, "side") for t in members], axis=0)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            eq_mid = np.nanmean([t.eq_mid_db for t in members], axis=0)
            eq_side = np.nanmean([t.eq_side_db for t in members], axis=0)
            dyn = np.nanmean([t.dynamics_change_db for t in members], axis=0)
            dyn_mix = np.nanmean([_octaves(t.mix_fp, "dynamics_{}hz_db") for t in members], axis=0)
            wch = np.nanmean([t.width_band_change_db for t in members], axis=0)
    mid_floor = np.where(mix_mid > EQ_FLOOR_DB, mix_mid, np.nan)
    side_floor = np.where(mix_side > EQ_FLOOR_DB, mix_side, np.nan)
    target_mid = _fill_bands(mid_floor + eq_mid)
    target_side = _fill_bands(np.where(np.isfinite(eq_side), side_floor + eq_side, side_floor))
    ratios, widths = [], []
    for i, octs in enumerate(_band_map()):
        d_mix = np.nanmean(dyn_mix[octs]) if octs.size else math.nan
        d_mas = d_mix + (np.nanmean(dyn[octs]) if octs.size else math.nan)
        r = d_mix / d_mas if (math.isfinite(d_mix) and math.isfinite(d_mas) and d_mas > 0) else 1.0
        ratios.append(round(float(np.clip(r, 1.0, 4.0)), 2))
        wc = np.nanmean(wch[octs]) if octs.size and np.isfinite(wch[octs]).any() else 0.0
        w = float(np.clip(10.0 ** (wc / 20.0), 0.5, 1.5))
        widths.append(round(min(w, 1.0) if i == 0 else w, 3))
    corr = np.where(np.isfinite(eq_mid), eq_mid, np.nan)
    if np.isfinite(corr).any():
        corr = corr - np.nanmean(corr[_ERR_BANDS]) if np.isfinite(corr[_ERR_BANDS]).any() else corr - np.nanmean(corr)
    correction = np.clip(np.nan_to_num(corr, nan=0.0), -24.0, 24.0)
    from acetate.pipeline.chain.presets import speech_likeness

    speech = [speech_likeness(t.mix_fp) for t in members]
    content = "speech" if np.mean([v >= 0.5 for v in speech if math.isfinite(v)] or [False]) > 0.5 else "music"
    lufs = _nanmedian([t.master_fp["integrated_lufs"] for t in members])
    tp = _nanmedian([t.master_fp["true_peak_dbtp"] for t in members])
    finite_eq = eq_mid[np.isfinite(eq_mid)]
    eq_max = float(np.clip(float(np.max(np.abs(correction))) + 1.0, 3.0, 24.0))
    desc_eq = ""
    if finite_eq.size:
        c = np.asarray(BAND_CENTRES_HZ)
        low = np.nanmean(np.where(c < 150, eq_mid, np.nan)) if np.isfinite(eq_mid[c < 150]).any() else 0.0
        high = np.nanmean(np.where(c > 5000, eq_mid, np.nan)) if np.isfinite(eq_mid[c > 5000]).any() else 0.0
        desc_eq = f"low {low:+.1f} dB, high {high:+.1f} dB, "
    preset = Preset(
        name=name,
        description=f"Learned from {len(members)} pairs: {desc_eq}master {lufs:.1f} LUFS, crest {_nanmedian([t.crest_change_db for t in members]):+.1f} dB.",
        target_mid_db=tuple(np.round(target_mid, 3)),
        target_side_db=tuple(np.round(target_side, 3)),
        eq_max_db=round(eq_max, 2),
        ratio=tuple(ratios),
        width=tuple(widths),
        target_lufs=round(float(np.clip(lufs if math.isfinite(lufs) else -14.0, -40.0, -3.0)), 2),
        ceiling_dbtp=round(float(np.clip(tp if math.isfinite(tp) else -1.0, -6.0, -0.1)), 2),
        source=(
            f"Learned from {len(members)} mix/master pairs of {manifest}: EQ = the mean smoothed (master - mix) "
            "difference of the long-term spectra, applied to each track as a relative correction (target_mid_db, "
            "the cluster's mean mix spectrum plus it, is for reference only); loudness = median master loudness; "
            "ceiling = median master true peak."
        ),
        eq_mode="relative",
        correction_mid_db=tuple(np.round(correction, 3)),
        content=content,
    )
    learned = {
        "eq_mid_db": [float(v) for v in eq_mid],
        "eq_side_db": [float(v) for v in eq_side],
        "n_pairs": len(members),
        "loudness_change_db": _nanmedian([t.loudness_change_db for t in members]),
        "crest_change_db": _nanmedian([t.crest_change_db for t in members]),
        "lra_change_lu": _nanmedian([t.lra_change_lu for t in members]),
        "width_change_db": _nanmedian([t.width_change_db for t in members]),
    }
    learned = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in learned.items()}
    return preset, learned


def _build(transforms: Sequence[PairTransform], labels: np.ndarray, k: int, meta: Mapping[str, Any], manifest: str) -> Bank:
    presets, protos, members, learned = [], [], [], []
    for c in range(k):
        mem = [t for t, lab in zip(transforms, labels) if lab == c]
        if not mem:
            continue
        p, le = _preset_from(f"learned_{c + 1:02d}", mem, manifest)
        rows = np.array([selection_vector(t.mix_fp) for t in mem])
        with np.errstate(invalid="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                proto = np.nanmean(rows, axis=0)
        presets.append(p)
        protos.append(proto)
        members.append(rows)
        learned.append(le)
    meta = dict(meta)
    if meta.get("selection", {}).get("weights") is None:
        w = _discriminative_weights(members) if len(presets) > 1 else np.asarray(SELECTION_WEIGHTS)
        meta["selection"] = {**meta["selection"], "weights": [round(float(a), 6) for a in w]}
    return Bank(presets, np.array(protos), members, meta, learned)


def _discriminative_weights(members: Sequence[np.ndarray]) -> np.ndarray:
    """Selection weights that tell the presets' mixes apart: per feature, the square root of its
    share of the one-way ANOVA F statistic (between presets / within) over the training mixes
    (:func:`sklearn.feature_selection.f_classif`), scaled to a total squared weight of 4 (the
    default bank's: its 28 bands share 3, its four scalars 1 each). A feature that does not vary
    with the move weighs ~0: the song's own character does not drive the choice."""
    from sklearn.feature_selection import f_classif

    x = np.concatenate(members)
    y = np.concatenate([np.full(len(m), i) for i, m in enumerate(members)])
    col_mean = np.array([np.nanmean(c) if np.isfinite(c).any() else 0.0 for c in x.T])
    x = np.where(np.isfinite(x), x, col_mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f, _ = f_classif(x, y)
    f = np.where(np.isfinite(f) & (f > 0), f, 0.0)
    if f.sum() <= 0:
        return np.asarray(SELECTION_WEIGHTS, dtype=np.float64)
    return np.sqrt(4.0 * f / f.sum())


def _meta(name: str, extra: Mapping[str, Any], model: Mapping[str, Any] | None = None) -> dict[str, Any]:
    model = dict(model or {})
    sel: dict[str, Any] = {"method": model.get("method", "nearest_prototype")}
    for key in ("blend_k", "temperature", "min_confidence"):
        if key in model:
            sel[key] = model[key]
    return {
        "name": name,
        "description": "A bank learned from mix/master pairs (acetate learn).",
        "kind": "learned",
        "band_centres_hz": list(BAND_CENTRES_HZ),
        "selection": {
            "features": list(SELECTION_FEATURES),
            "weights": None,  # set from the training mixes (_discriminative_weights); the default bank's with one preset
            "clip": {kk: list(v) for kk, v in SELECTION_CLIP.items()},
            **sel,
        },
        "prototypes": "Per preset: the mean selection vector of its training mixes (cluster centroid).",
        "members": "The training mixes' selection vectors, labelled by cluster (the scaler is fitted on them).",
        **extra,
    }


def _json_clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _json_clean(a) for k, a in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_clean(a) for a in v]
    return v


#: The selection models tried (``method``, ``blend_k``) for each K; K = 1 is one preset for all.
MODELS: tuple[tuple[str, int], ...] = (("nearest_prototype", 1), ("nearest_prototype", 3), ("knn", 1), ("knn", 3))
#: Temperature of a learned bank's blend (distance units of its selection space).
LEARNED_TEMPERATURE = 1.0


def curve_error(predicted: np.ndarray, true: np.ndarray) -> float:
    """Transfer error of an EQ move (dB): mean absolute difference between a predicted and a true
    correction curve over the bands 31.5 Hz .. 16 kHz where the true one is known, after removing
    their mean difference (level is the loudness stage's). NaN with fewer than 3 such bands.

    Examples
    --------
    >>> true = np.zeros(31); true[20:] = 6.0
    >>> round(curve_error(np.zeros(31), true), 3), curve_error(true + 2.0, true)
    (2.755, 0.0)
    """
    pred, true = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    ok = np.isfinite(true) & np.isfinite(pred) & _ERR_BANDS
    if ok.sum() < 3:
        return math.nan
    d = pred[ok] - true[ok]
    return float(np.mean(np.abs(d - d.mean())))


def spectrum_error(a_fp: Mapping[str, float], b_fp: Mapping[str, float]) -> float:
    """Band-spectrum error (dB) between two fingerprints: mean absolute difference of the mid
    long-term spectra (each re. its own overall level, so loudness-matched) over 31.5 Hz .. 16 kHz,
    bands above -70 dB in both."""
    a, b = analyse.band_levels(a_fp, "mid"), analyse.band_levels(b_fp, "mid")
    ok = np.isfinite(a) & np.isfinite(b) & (a > EQ_FLOOR_DB) & (b > EQ_FLOOR_DB) & _ERR_BANDS
    return float(np.mean(np.abs(a[ok] - b[ok]))) if ok.sum() >= 3 else math.nan


def predicted_curve(bank: Bank, t: PairTransform) -> np.ndarray:
    """The EQ curve (dB) the renderer applies to ``t``'s mix at full intensity with ``bank``'s selection."""
    from acetate.pipeline.chain import render

    preset = bank.select(t.mix_fp).rendered
    return render.eq_curve(preset, t.mix_fp, float(t.mix_fp["sample_rate"]), 1.0)


def _fit(train: Sequence[PairTransform], k: int, model: Mapping[str, Any], seed: int, name: str, manifest: str, extra=None):
    labels, info, predict = cluster_transforms(train, k, seed=seed)
    bank = _build(train, labels, info["k"], _meta(name, extra or {}, model), manifest)
    return bank, labels, predict


def choose_model(
    transforms: Sequence[PairTransform],
    *,
    k: int | None = None,
    k_max: int = 8,
    n_splits: int = 4,
    seed: int = 0,
    blend_k: int | None = None,
    temperature: float = LEARNED_TEMPERATURE,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """K and the selection model with the lowest transfer error (:func:`curve_error`) under a
    group K-fold split (no group in a fold's training and test sides both).

    Tried: K in 1..``k_max`` (or the given ``k``) x :data:`MODELS` (those with the given
    ``blend_k`` only, when one is given; blends at ``temperature``). Ties go to fewer presets,
    then the simpler model. Returns the best ``{"k", "method", "blend_k", "temperature",
    "error_db"}`` and the table of every candidate's error.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.array([t.pair.group for t in transforms])
    n_groups = len(set(groups))
    ks = [k] if k is not None else list(range(1, max(1, k_max) + 1))
    models = [m for m in MODELS if blend_k is None or m[1] == blend_k] or [("nearest_prototype", int(blend_k or 1))]
    table: list[dict[str, Any]] = []
    fallback = {"method": models[0][0], "blend_k": models[0][1], "temperature": temperature, "error_db": None}
    if n_groups < 2:
        return {"k": min(ks[0] if k is not None else 1, len(transforms)), **fallback}, table
    folds = list(GroupKFold(n_splits=min(n_splits, n_groups)).split(np.zeros(len(groups)), groups=groups))
    for kk in ks:
        for method, bk in models if kk > 1 else models[:1]:
            model = {"method": method, "blend_k": bk, "temperature": temperature}
            errs = []
            for tr, te in folds:
                if kk > len(tr):
                    errs = []
                    break
                bank, _, _ = _fit([transforms[i] for i in tr], kk, model, seed, "cv", "<cv>")
                errs += [curve_error(predicted_curve(bank, transforms[i]), transforms[i].eq_mid_db) for i in te]
            errs = [e for e in errs if math.isfinite(e)]
            if errs:
                table.append({"k": kk, **model, "error_db": round(float(np.mean(errs)), 4)})
    if not table:
        return {"k": 1, **fallback}, table
    order = {m: i for i, m in enumerate(models)}
    best = min(table, key=lambda r: (r["error_db"], r["k"], order[(r["method"], r["blend_k"])]))
    return dict(best), table


def learn_bank(
    transforms: Sequence[PairTransform],
    *,
    k: int | None = None,
    k_max: int = 8,
    test_size: float = 0.25,
    seed: int = 0,
    name: str = "learned",
    manifest: str = "<pairs>",
    skipped: Sequence[Mapping[str, str]] = (),
    evaluate: Callable[[Bank, Sequence[PairTransform]], dict[str, Any]] | None = None,
    blend_k: int | None = None,
    temperature: float = LEARNED_TEMPERATURE,
) -> tuple[Bank, dict[str, Any]]:
    """Learn a bank of relative corrections from pair transforms, and say how well it transfers.

    1. **Held-out split** by group (:class:`~sklearn.model_selection.GroupShuffleSplit`, ``test_size``
       of the groups): nothing below sees the test groups.
    2. On the training groups, :func:`choose_model` picks K and the selection model by group
       K-fold transfer error; the bank fitted on the training groups with that choice is
       measured on the test groups: **accuracy** (the preset picked from the mix vs the cluster of
       the pair's true move) beside **chance** (the commonest true cluster's share), and the
       **transfer error** (:func:`curve_error`) of the learned bank's curve, of no EQ at all and
       of the default bank's curve, against the true move; ``evaluate(bank, test)`` adds more
       (``learn_from_manifest``: masters rendered and measured).
    3. The bank written is fitted on every pair, with K and the model chosen again the same way.

    Warnings (``report["warnings"]``) say when the learned bank does no better than chance
    or than the default bank (or no EQ) on the held-out groups.

    Returns
    -------
    bank : Bank
    report : dict
    """
    from sklearn.model_selection import GroupShuffleSplit

    from acetate.pipeline.chain.presets import load_bank

    if not (0.0 < test_size < 1.0):
        raise ValueError(f"test_size must be within (0, 1), got {test_size!r}")
    if len(transforms) == 0:
        raise ValueError("no usable pairs to learn from")
    if k is not None and not (1 <= k <= len(transforms)):
        raise ValueError(f"k must be within 1..{len(transforms)} (the number of pairs), got {k}")
    groups = np.array([t.pair.group for t in transforms])
    report: dict[str, Any] = {"n_pairs": len(transforms), "n_groups": int(len(set(groups))), "seed": seed, "manifest": manifest}
    warnings: list[str] = []
    if len(set(groups)) >= 2 and len(transforms) >= 4:
        tr, te = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(np.zeros(len(groups)), groups=groups))
        train, test = [transforms[i] for i in tr], [transforms[i] for i in te]
        choice, _ = choose_model(
            train,
            k=None if k is None else min(k, len(train)),
            k_max=min(k_max, len(train)),
            seed=seed,
            blend_k=blend_k,
            temperature=temperature,
        )
        bank_tr, _, predict = _fit(train, choice["k"], choice, seed, name, manifest)
        truth = predict(test)
        picked = [bank_tr.select(t.mix_fp).preset.name for t in test]
        acc = float(np.mean([f"learned_{c + 1:02d}" == b for c, b in zip(truth, picked)]))
        _, counts = np.unique(truth, return_counts=True)
        default = load_bank()
        err = {
            "learned_db": [curve_error(predicted_curve(bank_tr, t), t.eq_mid_db) for t in test],
            "none_db": [curve_error(np.zeros(len(BAND_CENTRES_HZ)), t.eq_mid_db) for t in test],
            "default_db": [curve_error(predicted_curve(default, t), t.eq_mid_db) for t in test],
        }
        transfer = {key: _finite_mean(v) for key, v in err.items()}
        per_preset: dict[str, dict[str, Any]] = {}
        for name_p, e_l, e_n in zip(picked, err["learned_db"], err["none_db"]):
            row = per_preset.setdefault(name_p, {"n": 0, "learned": [], "none": []})
            row["n"] += 1
            row["learned"].append(e_l)
            row["none"].append(e_n)
        transfer["per_preset"] = {
            n_: {"n": r["n"], "learned_db": _finite_mean(r["learned"]), "none_db": _finite_mean(r["none"])}
            for n_, r in sorted(per_preset.items())
        }
        report["split"] = {
            "method": f"GroupShuffleSplit(test_size={test_size}, random_state={seed})",
            "train_pairs": len(train),
            "test_pairs": len(test),
            "train_groups": int(len(set(groups[tr]))),
            "test_groups": int(len(set(groups[te]))),
            "k": choice["k"],
            "model": {kk: choice[kk] for kk in ("method", "blend_k", "temperature")},
        }
        report["accuracy"] = round(acc, 4)
        report["chance"] = round(float(counts.max() / counts.sum()), 4)
        report["transfer"] = transfer
        if choice["k"] > 1 and acc <= report["chance"]:
            warnings.append(f"held-out accuracy {acc:.2f} is no better than chance ({report['chance']:.2f})")
        baseline = min(transfer["none_db"], transfer["default_db"])
        if math.isfinite(transfer["learned_db"]) and transfer["learned_db"] >= baseline:
            warnings.append(
                f"held-out EQ transfer error {transfer['learned_db']:.2f} dB is no better than the default bank's "
                f"({transfer['default_db']:.2f} dB) or no EQ ({transfer['none_db']:.2f} dB)"
            )
        if evaluate is not None:
            rendered = evaluate(bank_tr, test)
            report["rendered"] = rendered
            lr, dr = rendered.get("learned_db", math.nan), rendered.get("default_db", math.nan)
            if math.isfinite(lr) and math.isfinite(dr) and lr >= min(dr, rendered.get("raw_db", math.inf)):
                warnings.append(
                    f"held-out masters with the learned bank ({lr:.2f} dB from the true masters) are no closer than the default bank's ({dr:.2f} dB) or the raw mixes'"
                )
    else:
        report.update(split=None, accuracy=None, chance=None, note="fewer than 2 groups or 4 pairs: no held-out estimate")
        warnings.append("fewer than 2 groups or 4 pairs: the bank's transfer could not be measured")

    choice, table = choose_model(transforms, k=k, k_max=min(k_max, len(transforms)), seed=seed, blend_k=blend_k, temperature=temperature)
    labels, info, _ = cluster_transforms(transforms, choice["k"], seed=seed)
    report["k"] = info["k"]
    report["model"] = {kk: choice[kk] for kk in ("method", "blend_k", "temperature")}
    report["k_criterion"] = (
        "given; model by group K-fold transfer error"
        if k is not None
        else "lowest group K-fold EQ transfer error over K = 1..k_max and the selection models"
    )
    report["cv"] = table
    report["per_preset"] = {f"learned_{c + 1:02d}": int(np.sum(labels == c)) for c in range(info["k"])}
    report["skipped"] = [dict(s) for s in skipped]
    report["align"] = {
        "median_offset_s": round(float(np.median([t.offset_s for t in transforms])), 4),
        "min_corr": round(float(min(t.align_corr for t in transforms)), 4),
    }
    report["warnings"] = warnings
    report = _json_clean(report)
    bank = _build(transforms, labels, info["k"], _meta(name, {"report": report}, choice), manifest)
    return bank, report


def _finite_mean(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return round(float(np.mean(a)), 4) if a.size else math.nan


def rendered_errors(bank: Bank, transforms: Sequence[PairTransform], *, intensity: str = "high") -> dict[str, Any]:
    """Master each pair's mix (its aligned span) with ``bank`` and with the default bank, and measure
    how far each master and the raw mix are from the true master (:func:`spectrum_error`, dB).

    ``intensity="high"`` applies a learned move in full (``"medium"`` applies 65 % of it).
    Returns ``raw_db``, ``learned_db``, ``default_db`` (means), ``ratio`` (learned / raw),
    ``default_ratio`` and ``per_preset`` (by the learned bank's nearest preset).
    """
    from acetate.pipeline.chain import render
    from acetate.pipeline.chain.presets import load_bank

    default = load_bank()
    settings = render.MasterSettings(intensity=intensity)
    raw, learned, dflt, names = [], [], [], []
    for t in transforms:
        mix, fs = audio.decode(t.pair.mix_path)
        if mix.shape[0] == 1:
            mix = np.concatenate([mix, mix])
        x = np.ascontiguousarray(mix[:2, t.span[0] : t.span[1]], dtype=np.float32)
        errs = []
        for b in (bank, default):
            sel = b.select(t.mix_fp)
            res = render.master(x, fs, settings, preset=sel.rendered, fingerprint=t.mix_fp)
            errs.append(spectrum_error(analyse.fingerprint(res.audio, fs), t.master_fp))
            if b is bank:
                names.append(sel.preset.name)
        raw.append(spectrum_error(t.mix_fp, t.master_fp))
        learned.append(errs[0])
        dflt.append(errs[1])
    out: dict[str, Any] = {
        "intensity": intensity,
        "pairs": len(transforms),
        "raw_db": _finite_mean(raw),
        "learned_db": _finite_mean(learned),
        "default_db": _finite_mean(dflt),
    }
    out["ratio"] = round(out["learned_db"] / out["raw_db"], 4) if out["raw_db"] > 0 else math.nan
    out["default_ratio"] = round(out["default_db"] / out["raw_db"], 4) if out["raw_db"] > 0 else math.nan
    per: dict[str, Any] = {}
    for n_, r, lv in zip(names, raw, learned):
        row = per.setdefault(n_, {"n": 0, "raw": [], "learned": []})
        row["n"] += 1
        row["raw"].append(r)
        row["learned"].append(lv)
    out["per_preset"] = {
        n_: {"n": r["n"], "raw_db": _finite_mean(r["raw"]), "learned_db": _finite_mean(r["learned"])} for n_, r in sorted(per.items())
    }
    return out


def learn_from_manifest(
    manifest: str | os.PathLike,
    *,
    k: int | None = None,
    k_max: int = 8,
    test_size: float = 0.25,
    seed: int = 0,
    name: str | None = None,
    max_offset_s: float = 10.0,
    progress: Callable[[str], None] | None = None,
    render_check: bool = True,
    blend_k: int | None = None,
    temperature: float = LEARNED_TEMPERATURE,
) -> tuple[Bank, dict[str, Any]]:
    """Read a manifest, analyse every pair (pairs that fail are skipped and reported), learn a bank
    (:func:`learn_bank`); with ``render_check`` the held-out mixes are also mastered with the
    learned and the default bank and measured against their true masters (:func:`rendered_errors`)."""
    pairs = read_manifest(manifest)
    transforms, skipped = [], []
    for i, p in enumerate(pairs):
        try:
            transforms.append(analyse_pair(p, max_offset_s=max_offset_s))
            if progress:
                t = transforms[-1]
                progress(
                    f"[{i + 1}/{len(pairs)}] {os.path.basename(p.mix_path)}: offset {t.offset_s:+.3f} s, corr {t.align_corr:.2f}, loudness {t.loudness_change_db:+.1f} dB"
                )
        except (audio.AudioError, ValueError) as exc:
            skipped.append({"mix_path": p.mix_path, "master_path": p.master_path, "error": str(exc)})
            if progress:
                progress(f"[{i + 1}/{len(pairs)}] skipped {p.mix_path}: {exc}")
    return learn_bank(
        transforms,
        k=k,
        k_max=k_max,
        test_size=test_size,
        seed=seed,
        name=name or Path(manifest).stem,
        manifest=os.fspath(manifest),
        skipped=skipped,
        evaluate=rendered_errors if render_check else None,
        blend_k=blend_k,
        temperature=temperature,
    )
