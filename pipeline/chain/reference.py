"""Reference mastering: a target preset taken from weighted reference tracks.

``acetate master MIX --reference REF.wav:2 --reference OTHER.flac`` masters toward the
references' sound instead of a bank's: :func:`reference_preset` builds an ordinary
``eq_mode="target"`` preset whose target spectrum (mid and side) is the weighted mean of the
references' long-term spectra (dB per 1/3-octave band, each re. its own level), so the
renderer's EQ takes each track the smoothed, clamped difference toward it.

Bounded on purpose:

* no band is boosted or cut more than ``max_db`` (default 6 dB: the preset's ``eq_max_db``);
* below 40 Hz and above 16 kHz the target keeps the base preset's *shape*, joined to the
  references' level at 40 Hz and 16 kHz, so a reference's sub-bass rumble or hiss is not
  copied blindly;
* the loudness target and the true-peak ceiling of the job (``--target``, ``--ceiling``)
  always win; the references' own loudness is only the preset's default target;
* dynamics, width and limiter character are the base preset's (balanced).

Each reference is measured once per process and cached by the blake2b hash of its bytes
(:func:`measure_reference`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from acetate.kernels.spectrum import BAND_CENTRES_HZ
from acetate.pipeline.chain import analyse
from acetate.pipeline.chain.presets import BALANCED, Preset

__all__ = ["parse_reference", "measure_reference", "reference_preset", "MAX_REFERENCE_DB"]

#: Default bound of the reference EQ (dB either way).
MAX_REFERENCE_DB = 6.0
#: Bands outside this range keep the base preset's shape (the references' extremes are not copied).
_LOW_HZ, _HIGH_HZ = 40.0, 16000.0

_CACHE: dict[str, dict[str, float]] = {}


def parse_reference(text: str) -> tuple[str, float]:
    """``"ref.wav:2"`` -> ``("ref.wav", 2.0)``; ``"ref.wav"`` -> weight 1. A path that itself
    holds a colon keeps it when what follows the last one is not a number.

    Examples
    --------
    >>> parse_reference("a.wav:0.5"), parse_reference("b.flac")
    (('a.wav', 0.5), ('b.flac', 1.0))
    """
    path, sep, w = text.rpartition(":")
    if sep:
        try:
            weight = float(w)
        except ValueError:
            return text, 1.0
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"reference weight must be a positive number, got {w!r} in {text!r}")
        return path, weight
    return text, 1.0


def _digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def measure_reference(path: str | os.PathLike) -> dict[str, float]:
    """The fingerprint of a reference file, measured once per process (cached by content hash)."""
    from acetate.pipeline import stages

    path = os.fspath(path)
    stages.check_input(path)
    key = _digest(path)
    if key not in _CACHE:
        prog = stages.decode(path)
        _CACHE[key] = stages.analyse(prog.audio, prog.fs, "cpu").fingerprint
    return _CACHE[key]


def bounded_curve(target: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``target`` with its unknown bands and its extremes (< 40 Hz, > 16 kHz) following ``base``'s shape."""
    c = np.asarray(BAND_CENTRES_HZ)
    inner = np.isfinite(target) & (c >= _LOW_HZ) & (c <= _HIGH_HZ)
    if not inner.any():
        return base.copy()
    lo, hi = int(np.argmax(inner)), int(len(c) - 1 - np.argmax(inner[::-1]))
    out = np.where(inner, target, np.nan)
    idx = np.arange(len(c))
    out = np.where(idx < lo, target[lo] + base - base[lo], out)
    out = np.where(idx > hi, target[hi] + base - base[hi], out)
    holes = ~np.isfinite(out)  # a band inside the range the references lack: interpolate
    if holes.any():
        ok = ~holes
        out[holes] = np.interp(idx[holes], idx[ok], out[ok])
    return out


def reference_preset(
    references: Sequence[tuple[Mapping[str, float], float]],
    *,
    base: Preset = BALANCED,
    max_db: float = MAX_REFERENCE_DB,
    name: str | None = None,
) -> Preset:
    """A target preset from weighted reference fingerprints (see the module docstring).

    Parameters
    ----------
    references : sequence of (fingerprint, weight)
        Fingerprints (:func:`acetate.pipeline.chain.analyse.fingerprint`) and positive weights.
    base : Preset
        Dynamics, width, limiter and the extremes' shape come from it.
    max_db : float
        Largest boost or cut of any band.
    name : str, optional

    Examples
    --------
    >>> from acetate.schemas.features import THIRD_OCTAVE_LABELS
    >>> flat = {f"ltas_mid_{b}hz_db": -15.0 for b in THIRD_OCTAVE_LABELS} | {"integrated_lufs": -12.0}
    >>> tilt = {f"ltas_mid_{b}hz_db": -15.0 + i * 0.5 for i, b in enumerate(THIRD_OCTAVE_LABELS)} | {"integrated_lufs": -10.0}
    >>> p = reference_preset([(flat, 1.0), (tilt, 1.0)])
    >>> p.eq_mode, p.target_mid_db[10] == -15.0 + 10 * 0.25, p.target_lufs
    ('target', True, -11.0)
    """
    if not references:
        raise ValueError("reference_preset needs at least one reference")
    weights = np.array([float(w) for _, w in references])
    if not np.all(np.isfinite(weights) & (weights > 0)):
        raise ValueError(f"reference weights must be positive numbers, got {weights.tolist()}")
    if not (math.isfinite(max_db) and 0 < max_db <= 24):
        raise ValueError(f"max_db must be within (0, 24], got {max_db!r}")
    w = weights / weights.sum()

    def mean(kind: str) -> np.ndarray:
        rows = np.array([analyse.band_levels(fp, kind) for fp, _ in references])
        ok = np.isfinite(rows) & (rows > -100.0)
        ww = np.where(ok, w[:, None], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ww.sum(0) > 0, np.sum(np.where(ok, rows, 0.0) * ww, 0) / ww.sum(0), np.nan)

    mid = bounded_curve(mean("mid"), np.asarray(base.target_mid_db))
    side = bounded_curve(mean("side"), np.asarray(base.target_side_db))
    lufs = [float(fp.get("integrated_lufs", math.nan)) for fp, _ in references]
    ok_l = [(v, ww) for v, ww in zip(lufs, w) if math.isfinite(v)]
    target = sum(v * ww for v, ww in ok_l) / sum(ww for _, ww in ok_l) if ok_l else base.target_lufs
    label = name or "reference"
    return replace(
        base,
        name=label,
        description=f"Toward {len(references)} reference(s), weights {[round(float(a), 3) for a in w]}.",
        target_mid_db=tuple(float(a) for a in np.round(mid, 3)),
        target_side_db=tuple(float(a) for a in np.round(side, 3)),
        eq_max_db=float(max_db),
        eq_mode="target",
        correction_mid_db=(),
        content="music",
        target_lufs=round(float(np.clip(target, -30.0, -5.0)), 2),
        source=(
            "weighted mean of the references' long-term spectra (mid, side), bounded to +-"
            f"{max_db:g} dB, the base preset's shape below {_LOW_HZ:g} Hz and above {_HIGH_HZ:g} Hz; dynamics, width "
            f"and limiter of {base.name}"
        ),
    )


def reference_from_files(specs: Sequence[str], *, max_db: float = MAX_REFERENCE_DB) -> tuple[Preset, list[dict[str, Any]]]:
    """``["ref.wav:2", "other.flac"]`` -> the reference preset and a record per reference (path, weight, loudness)."""
    refs, record = [], []
    for spec in specs:
        path, weight = parse_reference(spec)
        fp = measure_reference(path)
        refs.append((fp, weight))
        record.append({"path": path, "weight": weight, "integrated_lufs": fp.get("integrated_lufs")})
    names = ",".join(f"{os.path.basename(r['path'])}:{r['weight']:g}" for r in record)
    return reference_preset(refs, max_db=max_db, name=f"reference({names})"), record
