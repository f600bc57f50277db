"""Training data for teams who train their own models: render variants, measure them, write a table.

For each input track, :func:`generate` renders N variants -- the grid
presets x intensities, or ``n_random`` random draws of (preset, intensity,
loudness target) -- writes each master under ``OUT/audio/`` and writes
``OUT/training.parquet`` (:mod:`acetate.schemas.training`): per variant the
input fingerprint, the parameters applied, the output fingerprint and
loudness.

Reproducible from the seed: a track's random draws come from
``numpy.random.default_rng([seed, crc32(track file name)])``, so they do not
depend on the order or number of other inputs; rendering is deterministic.

Examples
--------
>>> variants("song", ["balanced", "warm"], ["low"], n_random=None, seed=0)
[('balanced', 'low', None), ('warm', 'low', None)]
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow.parquet as pq

from acetate.pipeline import stages
from acetate.pipeline.chain import analyse
from acetate.pipeline.chain.presets import Bank, load_bank
from acetate.pipeline.io import audio
from acetate.pipeline.io.files import atomic_write
from acetate.pipeline.mastering import output_stems
from acetate.schemas.training import training_table

__all__ = ["INTENSITIES", "RANDOM_LUFS_RANGE", "variants", "generate"]

INTENSITIES = ("low", "medium", "high")
#: Loudness targets of random draws (uniform, LUFS, rounded to 0.5).
RANDOM_LUFS_RANGE = (-18.0, -9.0)
AUDIO_FORMATS = ("flac24", "wav24", "wav32f")


def variants(
    track_name: str,
    presets: Sequence[str],
    intensities: Sequence[str] = INTENSITIES,
    *,
    n_random: int | None = None,
    seed: int = 0,
) -> list[tuple[str, str, float | None]]:
    """The (preset, intensity, target LUFS or None = the preset's own) list for one track.

    Grid order (presets outer) without ``n_random``; otherwise ``n_random``
    seeded draws (see the module docstring).
    """
    if not presets:
        raise ValueError("no presets to render")
    bad = [i for i in intensities if i not in INTENSITIES]
    if bad or not intensities:
        raise ValueError(f"intensities must be some of {INTENSITIES}, got {list(intensities)}")
    if n_random is None:
        return [(p, i, None) for p in presets for i in intensities]
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    rng = np.random.default_rng([int(seed), zlib.crc32(track_name.encode())])
    out = []
    for _ in range(n_random):
        p = presets[int(rng.integers(len(presets)))]
        i = intensities[int(rng.integers(len(intensities)))]
        lufs = round(float(rng.uniform(*RANDOM_LUFS_RANGE)) * 2) / 2
        out.append((p, i, lufs))
    return out


def _eq_gains(params: dict[str, Any]) -> list[float]:
    eq = params.get("eq") or {}
    return [float(g) for g in eq.get("gain_db", [])]


def generate(
    inputs: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    presets: Sequence[str] | None = None,
    intensities: Sequence[str] = INTENSITIES,
    n_random: int | None = None,
    seed: int = 0,
    bank: Bank | str | os.PathLike | None = None,
    fmt: str = "flac24",
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> str:
    """Render variants of every input and write ``out_dir/training.parquet``; returns its path.

    Parameters
    ----------
    inputs : sequence of str
        Audio files or folders.
    out_dir : path
        Output folder (audio under ``audio/``).
    presets : sequence of str, optional
        Preset names from the bank (default: all).
    intensities : sequence of str
    n_random : int, optional
        Random draws per track instead of the grid.
    seed : int
    bank : Bank or path, optional
        Default: the shipped bank.
    fmt : {"flac24", "wav24", "wav32f"}
        Audio format of the variants (no dither needed).

    Raises
    ------
    ValueError
        Unknown preset (named), intensity or format; no inputs.
    """
    from acetate.pipeline.chain import render

    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"fmt must be one of {AUDIO_FORMATS}, got {fmt!r}")
    b = bank if isinstance(bank, Bank) else load_bank(bank)
    names = list(presets) if presets else list(b.names)
    for n in names:
        b[n]  # KeyError naming the choices
    files = audio.list_audio(list(inputs))
    if not files:
        raise ValueError("no input audio files")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    ext = audio.FORMATS[fmt][0]
    rows: list[dict[str, Any]] = []
    ids = output_stems(files)  # inputs whose stems meet get distinct ids (no variant overwrites another)
    for path in files:
        track_id = ids[path]
        plan = variants(Path(path).name, names, intensities, n_random=n_random, seed=seed)
        try:  # the stages every entry point runs: mono as dual mono, as it is delivered
            stages.stage("input", lambda: stages.check_input(path))
            prog = stages.stage("decode", lambda: stages.decode(path, device=device))
            found = stages.stage("analyse", lambda: stages.analyse(prog.audio, prog.fs, device))
            fp_in = found.fingerprint
        except stages.StageFailure as f:
            rows.append(
                {
                    "track_path": path,
                    "track_id": track_id,
                    "variant": f"{track_id}__error",
                    "seed": seed,
                    "error": f"{f.stage}: {f.message}",
                }
            )
            if progress:
                progress(f"FAILED  {path}: {f.message}")
            continue
        for k, (pname, inten, lufs) in enumerate(plan):
            variant = f"{track_id}__{pname}__{inten}" + (f"__{k:03d}" if n_random else "")
            row: dict[str, Any] = {
                "track_path": path,
                "track_id": track_id,
                "variant": variant,
                "variant_index": k,
                "seed": seed,
                "preset": pname,
                "intensity": inten,
                **{f"in_{n}": v for n, v in fp_in.items()},
            }
            try:
                settings = render.MasterSettings(intensity=inten, target_lufs=lufs, device=device)
                res = stages.render(prog, found, stages.Choice(b[pname], True, None, []), settings, hand_over=False)
                rel = f"audio/{variant}.{ext}"
                audio.encode(res.audio, res.fs, out / rel, fmt)
                fp_out = analyse.fingerprint(res.audio, res.fs)
                row.update(
                    {
                        "target_lufs": res.target_lufs,
                        "ceiling_dbtp": res.ceiling_dbtp,
                        "audio_path": rel,
                        "params": json.dumps(res.params, sort_keys=True, default=float),
                        "eq_gain_db": _eq_gains(res.params),
                        "target_met": res.target_met,
                        "ceiling_met": res.ceiling_met,
                        "out_true_peak_dbtp_16x": res.output_report.get("true_peak_dbtp_16x"),
                        **{f"out_{n}": v for n, v in fp_out.items()},
                    }
                )
                if progress:
                    lo = fp_out["integrated_lufs"]
                    progress(
                        f"ok      {variant}  {fp_in['integrated_lufs']:.1f} -> {lo:.1f} LUFS" if math.isfinite(lo) else f"ok      {variant}"
                    )
            except (ValueError, audio.AudioError) as exc:
                row["error"] = str(exc)
                if progress:
                    progress(f"FAILED  {variant}: {exc}")
            rows.append(row)
    meta = {
        "seed": seed,
        "bank": b.name,
        "presets": names,
        "intensities": list(intensities),
        "n_random": n_random,
        "random_lufs_range": list(RANDOM_LUFS_RANGE) if n_random else None,
        "format": fmt,
        "inputs": len(files),
    }
    table = training_table(rows, meta)
    return atomic_write(out / "training.parquet", lambda tmp: pq.write_table(table, tmp))
