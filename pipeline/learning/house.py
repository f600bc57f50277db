"""A label's house sound: a bank of target presets from a folder of its released masters.

``acetate house FOLDER --out house.bank`` fingerprints every master in the folder and writes
an ordinary bank (``--bank house.bank`` then masters toward it everywhere):

* the **house curve**: the median, band by band, of the masters' long-term spectra (mid and
  side, each re. its own level), with the spread (interquartile range per band) recorded in
  the bank's metadata; loudness target and ceiling are the masters' medians (a job's
  ``--target`` and ``--ceiling`` still win);
* where the folder is **varied** -- k-means on the selection features splits it into 2 or 3
  groups with a silhouette of at least :data:`MIN_SILHOUETTE` -- one preset per group, each
  with its own median curve; selection then picks the group a new mix is most like.

Below 40 Hz and above 16 kHz each curve keeps the balanced preset's shape (as for a
reference), so no master's rumble or hiss is copied.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.pipeline.chain import presets
from acetate.pipeline.chain.analyse import band_levels
from acetate.pipeline.chain.reference import MAX_REFERENCE_DB, bounded_curve

__all__ = ["MIN_SILHOUETTE", "house_bank", "house_from_folder"]

#: The silhouette a split of the folder must reach to give it more than one house preset.
MIN_SILHOUETTE = 0.25


def _median(rows: np.ndarray) -> np.ndarray:
    ok = np.isfinite(rows) & (rows > -100.0)
    out = np.full(rows.shape[1], np.nan)
    for j in range(rows.shape[1]):
        if ok[:, j].any():
            out[j] = float(np.median(rows[ok[:, j], j]))
    return out


def _iqr(rows: np.ndarray) -> list[float | None]:
    out: list[float | None] = []
    for col in rows.T:
        v = col[np.isfinite(col) & (col > -100.0)]
        out.append(round(float(np.subtract(*np.percentile(v, [75, 25]))), 3) if v.size >= 2 else None)
    return out


def _preset(name: str, fps: Sequence[dict[str, float]], max_db: float) -> tuple[presets.Preset, dict[str, Any]]:
    mid_rows = np.array([band_levels(fp, "mid") for fp in fps])
    side_rows = np.array([band_levels(fp, "side") for fp in fps])
    base = presets.BALANCED
    mid = bounded_curve(_median(mid_rows), np.asarray(base.target_mid_db))
    side = bounded_curve(_median(side_rows), np.asarray(base.target_side_db))
    lufs = [fp["integrated_lufs"] for fp in fps if math.isfinite(fp.get("integrated_lufs", math.nan))]
    tp = [fp["true_peak_dbtp"] for fp in fps if math.isfinite(fp.get("true_peak_dbtp", math.nan))]
    p = presets.Preset(
        name=name,
        description=f"House curve of {len(fps)} released masters (median per band).",
        target_mid_db=tuple(float(a) for a in np.round(mid, 3)),
        target_side_db=tuple(float(a) for a in np.round(side, 3)),
        eq_max_db=float(max_db),
        target_lufs=round(float(np.clip(np.median(lufs) if lufs else -14.0, -30.0, -5.0)), 2),
        ceiling_dbtp=round(float(np.clip(np.median(tp) if tp else -1.0, -6.0, -0.1)), 2),
        source=(
            f"median long-term spectrum (mid, side) of {len(fps)} masters, bounded to +-{max_db:g} dB, the balanced shape "
            "below 40 Hz and above 16 kHz; loudness and ceiling: the masters' medians"
        ),
    )
    return p, {"name": name, "n_masters": len(fps), "spread_mid_db": _iqr(mid_rows), "spread_side_db": _iqr(side_rows)}


def house_bank(
    fingerprints: Sequence[dict[str, float]], *, name: str = "house", k: int | None = None, seed: int = 0, max_db: float = MAX_REFERENCE_DB
) -> presets.Bank:
    """The house bank of these masters' fingerprints (see the module docstring).

    ``k`` forces the number of house presets; by default 1, or 2-3 where the folder splits
    with a silhouette of at least :data:`MIN_SILHOUETTE` (needs 6 masters or more).
    """
    from sklearn.cluster import KMeans
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import silhouette_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fps = [fp for fp in fingerprints if math.isfinite(fp.get("integrated_lufs", math.nan))]
    if not fps:
        raise ValueError("no measurable masters (all silent or unreadable): no house curve")
    if k is not None and not (1 <= k <= len(fps)):
        raise ValueError(f"k must be within 1..{len(fps)} (the number of masters), got {k}")
    vecs = np.array([presets.selection_vector(fp) for fp in fps])
    vecs = np.where(np.all(np.isnan(vecs), axis=0), 0.0, vecs)
    z = make_pipeline(SimpleImputer(), StandardScaler()).fit_transform(vecs) * np.asarray(presets.SELECTION_WEIGHTS)
    labels = np.zeros(len(fps), dtype=int)
    criterion = (
        "one house curve (fewer than 6 masters)" if len(fps) < 6 else f"one house curve (no split reached silhouette {MIN_SILHOUETTE})"
    )
    scores: dict[str, float] = {}
    if k is not None and k > 1:
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
        criterion = "given"
    elif k is None and len(fps) >= 6:
        best = None
        for kk in (2, 3):
            if kk >= len(fps):
                break
            lab = KMeans(kk, n_init=10, random_state=seed).fit_predict(z)
            if len(set(lab)) < 2:
                continue
            sc = float(silhouette_score(z, lab))
            scores[str(kk)] = round(sc, 4)
            if sc >= MIN_SILHOUETTE and (best is None or sc > best[0]):
                best = (sc, lab)
        if best is not None:
            labels = best[1]
            criterion = f"the folder is varied: best silhouette {best[0]:.2f} >= {MIN_SILHOUETTE} over K = 2, 3"
    order = sorted(set(labels.tolist()), key=lambda c: (-int(np.sum(labels == c)), int(np.argmax(labels == c))))
    ps, protos, members, groups = [], [], [], []
    for i, c in enumerate(order):
        idx = np.flatnonzero(labels == c)
        p, info = _preset(name if i == 0 else f"{name}_{i + 1:02d}", [fps[j] for j in idx], max_db)
        ps.append(p)
        rows = np.array([presets.selection_vector(fps[j]) for j in idx])
        protos.append(np.nanmedian(np.where(np.isfinite(rows), rows, np.nan), axis=0) if len(idx) else rows[0])
        members.append(rows)
        groups.append(info)
    meta = {
        "name": name,
        "kind": "house",
        "description": f"House sound of {len(fps)} released masters ({len(ps)} curve(s)): acetate house.",
        "band_centres_hz": list(BAND_CENTRES_HZ),
        # min_confidence 0: the house sound is what the label asked for, however far a mix is from its
        # masters (the confidence is still reported); nothing falls back to the gentle default
        "selection": {
            "features": list(presets.SELECTION_FEATURES),
            "weights": list(presets.SELECTION_WEIGHTS),
            "method": "nearest_prototype",
            "min_confidence": 0.0,
        },
        "house": {"n_masters": len(fps), "criterion": criterion, "silhouette": scores, "groups": groups},
    }
    return presets.Bank(ps, np.array(protos), members, meta)


def house_from_folder(
    inputs: Sequence[str], *, name: str = "house", k: int | None = None, progress: Callable[[str], None] | None = None
) -> tuple[presets.Bank, list[dict[str, str]]]:
    """Fingerprint every audio file under ``inputs`` (files that fail are listed, not fatal) and build :func:`house_bank`."""
    from acetate.pipeline import stages
    from acetate.pipeline.io import audio

    fps, skipped = [], []
    paths = audio.list_audio(list(inputs))
    for i, path in enumerate(paths):
        try:
            stages.check_input(path)
            prog = stages.decode(path)
            fps.append(stages.analyse(prog.audio, prog.fs, "cpu").fingerprint)
            if progress:
                progress(f"[{i + 1}/{len(paths)}] {os.path.basename(path)}: {fps[-1]['integrated_lufs']:.1f} LUFS")
        except Exception as exc:  # one bad master must not stop the house curve: it is listed
            skipped.append({"path": path, "error": f"{type(exc).__name__}: {exc}"})
    return house_bank(fps, name=name, k=k), skipped
