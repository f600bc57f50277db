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

3. **Cluster** the transforms into K presets: k-means (scikit-learn, seeded)
   on standardised transform features (the EQ curve 31.5 Hz..16 kHz with a
   total weight of 3, crest, LRA, width changes and master loudness). K is
   given, or chosen as the K in 2..``k_max`` with the best silhouette score
   (the documented criterion; a single preset when fewer than 4 pairs).
4. **Classify**: a learned bank selects by nearest prototype, the prototype
   of a preset being the mean selection vector of its mixes (the same code
   path as ``acetate master --preset auto``). Held-out accuracy is measured on
   a split by group (:class:`sklearn.model_selection.GroupShuffleSplit`: no
   album/artist in both): clusters and prototypes are fitted on the training
   split only and the test pairs' true labels are their transforms' nearest
   training cluster.
5. **Write** the bank fitted on all pairs, in the default bank's format, with
   the training report in its metadata (sizes, K and the criterion, accuracy
   and chance, per-preset counts, skipped pairs).

A learned preset's target spectrum is the cluster's mean mix spectrum plus
its mean EQ difference, so that the renderer's EQ (target minus the track's
spectrum) recreates the transform on a similar mix; its loudness target is
the cluster's median master loudness; ratios follow the shrinkage of the
per-band dynamic spread; widths follow the width change.
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

    def features(self) -> np.ndarray:
        """Clustering features: EQ (selection bands), crest, LRA, width changes, master loudness."""
        return np.concatenate(
            [
                self.eq_mid_db[_SEL_IDX],
                [self.crest_change_db, self.lra_change_lu, self.width_change_db, self.master_fp["integrated_lufs"]],
            ]
        )


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


def _bands(fp: Mapping[str, float], kind: str) -> np.ndarray:
    return np.array([fp[f"ltas_{kind}_{b}hz_db"] for b in THIRD_OCTAVE_LABELS], dtype=np.float64)


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
        eq_mid_db=_eq(_bands(fa, "mid"), _bands(fb, "mid"), fs),
        eq_side_db=_eq(_bands(fa, "side"), _bands(fb, "side"), fs),
        loudness_change_db=_finite(fb["integrated_lufs"] - fa["integrated_lufs"]),
        crest_change_db=_finite(fb["crest_factor_db"] - fa["crest_factor_db"]),
        lra_change_lu=_finite(fb["loudness_range_lu"] - fa["loudness_range_lu"]),
        width_change_db=_finite(w_overall),
        dynamics_change_db=_octaves(fb, "dynamics_{}hz_db") - _octaves(fa, "dynamics_{}hz_db"),
        width_band_change_db=wb,
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

_CLUSTER_WEIGHTS = np.array([math.sqrt(3.0 / len(SELECTION_BANDS))] * len(SELECTION_BANDS) + [1.0, 1.0, 1.0, 1.0])


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
    transforms: Sequence[PairTransform], k: int | None = None, *, k_max: int = 8, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any], Callable[[Sequence[PairTransform]], np.ndarray]]:
    """Cluster transforms with k-means; K given or chosen by the best silhouette score in 2..k_max.

    Returns
    -------
    labels : ndarray of int, shape (n,)
        Cluster per transform, numbered by decreasing cluster size (ties: first member).
    info : dict
        ``k``, ``criterion`` and the silhouette per K tried.
    predict : callable
        Maps more transforms to the nearest of these clusters (held-out labels).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(transforms)
    if n == 0:
        raise ValueError("no transforms to cluster")
    feats = np.array([t.features() for t in transforms])
    z, to_space = _cluster_space(feats)
    info: dict[str, Any] = {}
    if k is not None:
        if not (1 <= k <= n):
            raise ValueError(f"k must be within 1..{n} (the number of pairs), got {k}")
        info["criterion"] = "given"
    elif n < 4:
        k = 1
        info["criterion"] = "fewer than 4 pairs: one preset"
    else:
        scores = {}
        for kk in range(2, min(k_max, n - 1) + 1):
            lab = KMeans(kk, n_init=10, random_state=seed).fit_predict(z)
            if len(set(lab)) > 1:
                scores[kk] = float(silhouette_score(z, lab))
        k = max(scores, key=lambda kk: (round(scores[kk], 6), -kk)) if scores else 1
        info["criterion"] = "best silhouette score over K = 2..k_max (k-means on standardised transform features)"
        info["silhouette"] = {str(kk): round(v, 4) for kk, v in scores.items()}
    km = KMeans(k, n_init=10, random_state=seed).fit(z)
    raw = km.labels_
    order = sorted(range(k), key=lambda c: (-int(np.sum(raw == c)), int(np.argmax(raw == c))))
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    info["k"] = int(k)

    def predict(more: Sequence[PairTransform]) -> np.ndarray:
        return remap[km.predict(to_space(np.array([t.features() for t in more])))]

    return remap[raw], info, predict


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
    mix_mid = np.nanmean([_bands(t.mix_fp, "mid") for t in members], axis=0) if members else None
    mix_side = np.nanmean([_bands(t.mix_fp, "side") for t in members], axis=0)
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
    lufs = _nanmedian([t.master_fp["integrated_lufs"] for t in members])
    tp = _nanmedian([t.master_fp["true_peak_dbtp"] for t in members])
    finite_eq = eq_mid[np.isfinite(eq_mid)]
    eq_max = float(np.clip((np.max(np.abs(finite_eq)) if finite_eq.size else 0.0) + 2.0, 3.0, 12.0))
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
            f"Learned from {len(members)} mix/master pairs of {manifest}: target = cluster mean mix spectrum + mean "
            "smoothed (master - mix) difference; loudness = median master loudness; ceiling = median master true peak."
        ),
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
    return Bank(presets, np.array(protos), members, meta, learned)


def _meta(name: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": "A bank learned from mix/master pairs (acetate learn).",
        "kind": "learned",
        "band_centres_hz": list(BAND_CENTRES_HZ),
        "selection": {
            "features": list(SELECTION_FEATURES),
            "weights": list(SELECTION_WEIGHTS),
            "clip": {kk: list(v) for kk, v in SELECTION_CLIP.items()},
            "method": "nearest_prototype",
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
) -> tuple[Bank, dict[str, Any]]:
    """Cluster transforms into presets, measure held-out selection accuracy, build the bank.

    Parameters
    ----------
    transforms : sequence of PairTransform
    k : int, optional
        Number of presets; chosen by silhouette when None.
    test_size : float
        Fraction of *groups* held out for the accuracy estimate (0 < t < 1).
    seed : int
        Seeds k-means and the split (deterministic).

    Returns
    -------
    bank : Bank
        Fitted on all transforms.
    report : dict
        ``n_pairs``, ``n_groups``, ``k``, ``k_criterion``, ``split`` (train/test
        pairs and groups), ``accuracy`` (held-out), ``chance`` (majority
        class of the test labels), ``per_preset`` counts, ``skipped``.
    """
    from sklearn.model_selection import GroupShuffleSplit

    if not (0.0 < test_size < 1.0):
        raise ValueError(f"test_size must be within (0, 1), got {test_size!r}")
    if len(transforms) == 0:
        raise ValueError("no usable pairs to learn from")
    groups = np.array([t.pair.group for t in transforms])
    report: dict[str, Any] = {"n_pairs": len(transforms), "n_groups": int(len(set(groups))), "seed": seed, "manifest": manifest}

    # held-out estimate: everything fitted on the training groups only
    if len(set(groups)) >= 2 and len(transforms) >= 4:
        tr, te = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(np.zeros(len(groups)), groups=groups))
        train = [transforms[i] for i in tr]
        test = [transforms[i] for i in te]
        lab_tr, info_tr, predict = cluster_transforms(train, k if k is None or k <= len(train) else len(train), k_max=k_max, seed=seed)
        bank_tr = _build(train, lab_tr, info_tr["k"], _meta(name, {}), manifest)
        truth = predict(test)
        names = [f"learned_{c + 1:02d}" for c in truth]
        picked = [bank_tr.select(t.mix_fp).preset.name for t in test]
        acc = float(np.mean([a == b for a, b in zip(names, picked)]))
        _, counts = np.unique(truth, return_counts=True)
        report["split"] = {
            "method": f"GroupShuffleSplit(test_size={test_size}, random_state={seed})",
            "train_pairs": len(train),
            "test_pairs": len(test),
            "train_groups": int(len(set(groups[tr]))),
            "test_groups": int(len(set(groups[te]))),
            "k": info_tr["k"],
        }
        report["accuracy"] = round(acc, 4)
        report["chance"] = round(float(counts.max() / counts.sum()), 4)
    else:
        report["split"] = None
        report["accuracy"] = None
        report["chance"] = None
        report["note"] = "fewer than 2 groups or 4 pairs: no held-out estimate"

    labels, info, _ = cluster_transforms(transforms, k, k_max=k_max, seed=seed)
    report["k"] = info["k"]
    report["k_criterion"] = info["criterion"]
    if "silhouette" in info:
        report["silhouette"] = info["silhouette"]
    report["per_preset"] = {f"learned_{c + 1:02d}": int(np.sum(labels == c)) for c in range(info["k"])}
    report["skipped"] = [dict(s) for s in skipped]
    report["align"] = {
        "median_offset_s": round(float(np.median([t.offset_s for t in transforms])), 4),
        "min_corr": round(float(min(t.align_corr for t in transforms)), 4),
    }
    report = _json_clean(report)
    bank = _build(transforms, labels, info["k"], _meta(name, {"report": report}), manifest)
    return bank, report


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
) -> tuple[Bank, dict[str, Any]]:
    """Read a manifest, analyse every pair (pairs that fail are skipped and reported), learn a bank."""
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
    )
