"""Reference mastering against the field's anchor: Acetate vs Matchering 2, same mixes, same references, one run.

One command (from the repository root; needs ``pip install matchering`` and the Debian packages of
``bench/corpus.py``)::

    python bench/bench_reference.py            # 10 mixes x 3 references
    python bench/bench_reference.py --quick    # 4 mixes x 2 references

Mixes: unmastered fluidsynth renders (``corpus.unmastered_mixes``), the first 30 s. References:
mastered soundtracks (``corpus.mastered_tracks``), 60 s from their middle. Each (mix, reference)
pair is mastered by ``acetate master MIX --reference REF`` (the same code: the reference bank of
``pipeline/cli.py``, ``mastering.master_file``, target -14 LUFS, ceiling -1 dBTP, intensity high)
and by ``matchering.process`` (24-bit WAV), both from file to file.

Per pair: spectral distance of the master to the reference (mean absolute dB over the
1/3-octave bands 31.5 Hz .. 16 kHz, mid and side long-term spectra each re. its own level),
integrated loudness error against -14 LUFS, true peak over the -1 dBTP ceiling (4x, BS.1770),
loudness range and wall time. Matchering promises neither a loudness target nor a true-peak
ceiling: its figures are reported against Acetate's targets all the same, as a label would read them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corpus  # noqa: E402

from acetate.kernels.spectrum import BAND_CENTRES_HZ  # noqa: E402
from acetate.pipeline import mastering  # noqa: E402
from acetate.pipeline.chain import analyse, render  # noqa: E402
from acetate.pipeline.io import audio  # noqa: E402
from acetate.schemas.features import THIRD_OCTAVE_LABELS  # noqa: E402

TARGET, CEILING = -14.0, -1.0
C = np.asarray(BAND_CENTRES_HZ)
BANDS = (C >= 31.5) & (C <= 16000.0)


def spectral_distance(a: dict, b: dict, kinds: tuple[str, ...] = ("mid", "side")) -> float:
    d = []
    for kind in kinds:
        x = np.array([a[f"ltas_{kind}_{lb}hz_db"] for lb in THIRD_OCTAVE_LABELS])
        y = np.array([b[f"ltas_{kind}_{lb}hz_db"] for lb in THIRD_OCTAVE_LABELS])
        ok = BANDS & np.isfinite(x) & np.isfinite(y) & (x > -100) & (y > -100)
        d.append(np.abs(x[ok] - y[ok]))
    return float(np.mean(np.concatenate(d)))


def figures(path: Path, ref_fp: dict) -> dict:
    x, fs = audio.decode(path)
    fp = analyse.fingerprint(x, fs)
    return {
        "dist": spectral_distance(fp, ref_fp),
        "dist_mid": spectral_distance(fp, ref_fp, ("mid",)),
        "lufs_err": abs(fp["integrated_lufs"] - TARGET),
        "tp_over": max(0.0, fp["true_peak_dbtp"] - CEILING),
        "lra": fp["loudness_range_lu"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-db", type=float, default=None, help="bound of the reference EQ (default: acetate's, 6 dB)")
    args = ap.parse_args(argv)
    try:
        import matchering as mg
    except ImportError:
        print("matchering is not installed (pip install matchering): nothing to compare against")
        return 0
    from acetate.pipeline.cli import _reference_bank

    n_mix, n_ref = (4, 2) if args.quick else (10, 3)
    mixes = corpus.unmastered_mixes(Path(tempfile.gettempdir()) / "acetate-fluid-songs", songs=n_mix)
    refs = corpus.mastered_tracks()[:: max(1, len(corpus.mastered_tracks()) // n_ref)][:n_ref]
    if len(mixes) < n_mix or len(refs) < n_ref:
        print("the corpus is not installed: apt-get install fluidsynth fluid-soundfont-gm hyperrogue-music fb-music-high")
        return 0
    print(corpus.provenance())
    print(f"matchering {mg.__version__ if hasattr(mg, '__version__') else '?'}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        mix_files, ref_files = [], []
        for i, m in enumerate(mixes):
            x, fs = audio.decode(m)
            audio.encode(x[:, : 30 * fs], fs, d / f"mix{i}.wav", "wav24")
            mix_files.append(d / f"mix{i}.wav")
        for j, r in enumerate(refs):
            x, fs = audio.decode(r)
            mid = max(0, x.shape[1] // 2 - 30 * fs)
            audio.encode(x[:, mid : mid + 60 * fs], fs, d / f"ref{j}.wav", "wav24")
            ref_files.append(d / f"ref{j}.wav")
        ref_fps = [analyse.fingerprint(audio.decode(r)[0], audio.decode(r)[1]) for r in ref_files]
        settings = render.MasterSettings(target_lufs=TARGET, ceiling_dbtp=CEILING, intensity="high")
        for j, rf in enumerate(ref_files):
            bank = _reference_bank([str(rf)], max_db=args.max_db)
            for i, mf in enumerate(mix_files):
                t0 = time.perf_counter()
                row = mastering.master_file(str(mf), d / f"acetate-{j}", settings, formats=("wav24",), preset=bank.names[0], bank=bank)
                t_a = time.perf_counter() - t0
                if "error" in row:
                    print(f"acetate failed on mix{i} x ref{j}: {row['error']}")
                    continue
                t0 = time.perf_counter()
                out_m = d / f"mg-{j}-{i}.wav"
                mg.process(target=str(mf), reference=str(rf), results=[mg.pcm24(str(out_m))])
                t_m = time.perf_counter() - t0
                fa = figures(Path(row["outputs"][0]["path"]), ref_fps[j])
                fm = figures(out_m, ref_fps[j])
                raw = figures(mf, ref_fps[j])
                rows.append(
                    {"pair": f"mix{i} x ref{j}", "raw": raw["dist"], "raw_mid": raw["dist_mid"], "a": fa, "m": fm, "t_a": t_a, "t_m": t_m}
                )
    print()
    print(
        "| pair | mix -> ref (dB) | Acetate dist (dB) | Matchering dist (dB) | Acetate LU err | Matchering LU err | Acetate TP over | Matchering TP over | LRA A / M | time A / M (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a, m = r["a"], r["m"]
        print(
            f"| {r['pair']} | {r['raw']:.2f} | {a['dist']:.2f} | {m['dist']:.2f} | {a['lufs_err']:.2f} | {m['lufs_err']:.2f} | "
            f"{a['tp_over']:.2f} | {m['tp_over']:.2f} | {a['lra']:.1f} / {m['lra']:.1f} | {r['t_a']:.2f} / {r['t_m']:.2f} |"
        )
    if rows:
        wins = sum(r["a"]["dist"] < r["m"]["dist"] for r in rows)
        print()
        print(
            f"{len(rows)} pairs: Acetate nearer the reference on {wins}; mean distance Acetate {np.mean([r['a']['dist'] for r in rows]):.2f} dB, "
            f"Matchering {np.mean([r['m']['dist'] for r in rows]):.2f} dB, raw mixes {np.mean([r['raw'] for r in rows]):.2f} dB"
        )
        print(
            f"mid only: Acetate {np.mean([r['a']['dist_mid'] for r in rows]):.2f} dB, Matchering {np.mean([r['m']['dist_mid'] for r in rows]):.2f} dB, "
            f"raw mixes {np.mean([r['raw_mid'] for r in rows]):.2f} dB"
        )
        print(
            f"target within 0.1 LU: Acetate {sum(r['a']['lufs_err'] <= 0.1 for r in rows)}/{len(rows)}, Matchering {sum(r['m']['lufs_err'] <= 0.1 for r in rows)}/{len(rows)}; "
            f"ceiling held: Acetate {sum(r['a']['tp_over'] <= 0.0 for r in rows)}/{len(rows)}, Matchering {sum(r['m']['tp_over'] <= 0.0 for r in rows)}/{len(rows)}"
        )
        print(
            f"time: Acetate {sum(r['t_a'] for r in rows):.1f} s, Matchering {sum(r['t_m'] for r in rows):.1f} s (ratio {sum(r['t_m'] for r in rows) / sum(r['t_a'] for r in rows):.1f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
