"""Does a learned bank transfer? Known corrections on real music, a split by song, masters measured.

One command (from the repository root; needs the Debian music packages of ``bench/corpus.py``)::

    python bench/bench_learn.py                        # both corpora, 20 songs x 3 segments of 30 s each
    python bench/bench_learn.py --corpus soundtracks   # or: fluidsynth
    python bench/bench_learn.py --quick                # 10 songs x 2 segments

Two corpora, each its own run: **soundtracks**, the installed mastered game soundtracks
(``corpus.mastered_tracks``: a varied set, as a distributor's mixed catalogue is), and
**fluidsynth**, songs written and rendered here (``corpus.unmastered_mixes``: one soundfont,
one band, as a label's own catalogue is). Each song is cut into 30 s segments. Each segment's *mix* is the segment given one of three known
defects at a random depth (4..9 dB) and at a random level (-12..0 dB): a dull top (high
shelf cut above ~4 kHz), a boomy low end (low shelf boost below ~150 Hz) or a harsh
presence peak (bell at 3 kHz, ~1 octave wide). Its *master* is the clean segment at
-14 LUFS: the correction is the defect undone. Songs are split 70/30 (seeded): the
bank is learned (``acetate.pipeline.learning.learn.learn_from_manifest``, the code
``acetate learn`` runs) on the training songs' pairs only; the held-out songs' mixes are
mastered with it (intensity ``high``: the learned move in full) and with the default
bank, and each master's band spectrum (mid, 31.5 Hz .. 16 kHz, re. its own level: loudness
matched) is compared with the true master's.

Printed: the error of the raw mixes, of the learned masters and of the default-bank masters
(dB) and their ratios; accuracy (the defect of the learned preset picked, the majority defect
of its training pairs, vs the true defect) beside chance; and the default bank on the
already-mastered segments (how far its masters move from them). Goals: ratio <= 0.5,
accuracy >= 0.9.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402

from acetate.kernels import fir, loudness  # noqa: E402
from acetate.kernels.spectrum import BAND_CENTRES_HZ  # noqa: E402
from acetate.pipeline.chain import analyse, presets, render  # noqa: E402
from acetate.pipeline.io import audio  # noqa: E402
from acetate.pipeline.learning import learn  # noqa: E402

SEGMENT_S = 30.0
C = np.asarray(BAND_CENTRES_HZ)
DEFECTS = ("dull", "boomy", "harsh")


def defect_curve(kind: str, depth_db: float) -> np.ndarray:
    """The defect's gain (dB) at the 1/3-octave centres."""
    if kind == "dull":
        return -depth_db / (1.0 + (4000.0 / C) ** 2)
    if kind == "boomy":
        return depth_db / (1.0 + (C / 150.0) ** 2)
    return depth_db * np.exp(-0.5 * (np.log2(C / 3000.0) / 0.5) ** 2)


def build_pairs(folder: Path, songs: list[str], segments: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for si, path in enumerate(songs):
        x, fs = audio.decode(path)
        if x.shape[0] == 1:
            x = np.concatenate([x, x])
        n = int(SEGMENT_S * fs)
        starts = [int(a) for a in np.linspace(0, max(0, x.shape[1] - n), segments)] if x.shape[1] >= n else []
        for gi, s0 in enumerate(starts):
            seg = np.ascontiguousarray(x[:2, s0 : s0 + n], dtype=np.float32)
            lufs = loudness.integrated_loudness(seg, fs)
            if not math.isfinite(lufs):
                continue
            kind = DEFECTS[int(rng.integers(len(DEFECTS)))]
            depth = float(rng.uniform(4.0, 9.0))
            level = float(rng.uniform(-12.0, 0.0))
            h = fir.design_from_gain(BAND_CENTRES_HZ, defect_curve(kind, depth), fs, 8191, "linear")
            mix = np.asarray(fir.fft_filter(seg, h), dtype=np.float32) * np.float32(10 ** ((level - 6.0) / 20))
            master = (seg * np.float32(10 ** ((-14.0 - lufs) / 20))).astype(np.float32)
            stem = f"s{si:02d}-{gi}"
            audio.encode(mix, fs, folder / f"{stem}-mix.wav", "wav32f")
            audio.encode(master, fs, folder / f"{stem}-master.wav", "wav32f")
            audio.encode(seg, fs, folder / f"{stem}-orig.wav", "wav32f")
            rows.append(
                {"mix_path": f"{stem}-mix.wav", "master_path": f"{stem}-master.wav", "group": f"song{si:02d}", "kind": kind, "depth": depth}
            )
    return rows


def write_manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["mix_path", "master_path", "group"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("mix_path", "master_path", "group")} for r in rows)


def run(name: str, songs: list[str], segments: int, seed: int) -> dict:
    print(f"\n### {name}: {len(songs)} songs x {segments} segments of {SEGMENT_S:.0f} s")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rows = build_pairs(d, songs, segments, seed)
        groups = sorted({r["group"] for r in rows})
        rng = np.random.default_rng(seed)
        test_groups = set(rng.choice(groups, size=max(1, round(0.3 * len(groups))), replace=False).tolist())
        train = [r for r in rows if r["group"] not in test_groups]
        test = [r for r in rows if r["group"] in test_groups]
        write_manifest(d / "train.csv", train)
        print(
            f"{len(rows)} pairs ({len(train)} train, {len(test)} held out, {len(test_groups)} songs); built in {time.perf_counter() - t0:.0f} s"
        )
        t1 = time.perf_counter()
        bank, report = learn.learn_from_manifest(d / "train.csv", seed=seed, name="bench")
        tr = report.get("transfer") or {}
        print(f"learned in {time.perf_counter() - t1:.0f} s: K={report['k']} ({report['model']}), per preset {report['per_preset']}")
        print(
            f"learn's own held-out split: accuracy {report.get('accuracy')} (chance {report.get('chance')}), "
            f"EQ transfer {tr.get('learned_db')} dB vs none {tr.get('none_db')} dB; "
            f"rendered ratio {(report.get('rendered') or {}).get('ratio')}; warnings {report.get('warnings')}"
        )
        # the defect each learned preset stands for: the majority defect of its training pairs
        kind_of_mix = {str(d / r["mix_path"]): r["kind"] for r in train}
        by_preset: dict[str, list[str]] = {p.name: [] for p in bank.presets}
        for t in (learn.analyse_pair(p) for p in learn.read_manifest(d / "train.csv")):
            by_preset.setdefault(bank.select(t.mix_fp).preset.name, []).append(kind_of_mix[t.pair.mix_path])
        preset_kind = {n: (max(sorted(set(v)), key=v.count) if v else "?") for n, v in by_preset.items()}
        default = presets.load_bank()
        settings = render.MasterSettings(intensity="high")
        table = []
        moved = []
        for r in test:
            t = learn.analyse_pair(learn.Pair(str(d / r["mix_path"]), str(d / r["master_path"]), r["group"]))
            mix, fs = audio.decode(t.pair.mix_path)
            x = np.ascontiguousarray(mix[:2, t.span[0] : t.span[1]])
            sel = bank.select(t.mix_fp)
            z = render.master(x, fs, settings, preset=sel.rendered, fingerprint=t.mix_fp).audio
            zd = render.master(x, fs, settings, preset=default.select(t.mix_fp).rendered, fingerprint=t.mix_fp).audio
            table.append(
                {
                    "kind": r["kind"],
                    "picked": preset_kind.get(sel.preset.name, "?"),
                    "confidence": sel.confidence,
                    "raw": learn.spectrum_error(t.mix_fp, t.master_fp),
                    "learned": learn.spectrum_error(analyse.fingerprint(z, fs), t.master_fp),
                    "default": learn.spectrum_error(analyse.fingerprint(zd, fs), t.master_fp),
                }
            )
            # the default bank on material that is mastered already: how far it moves it
            orig, fs = audio.decode(d / r["mix_path"].replace("-mix", "-orig"))
            fo = analyse.fingerprint(orig, fs)
            z = render.master(orig, fs, render.MasterSettings(), preset=default.select(fo).rendered, fingerprint=fo).audio
            moved.append(learn.spectrum_error(analyse.fingerprint(z, fs), fo))
    raw = float(np.mean([r["raw"] for r in table]))
    lrn = float(np.mean([r["learned"] for r in table]))
    dfl = float(np.mean([r["default"] for r in table]))
    acc = float(np.mean([r["kind"] == r["picked"] for r in table]))
    kinds = [r["kind"] for r in table]
    chance = max(kinds.count(k) for k in set(kinds)) / len(kinds)
    print()
    print("| defect | pairs | raw mix (dB) | learned master (dB) | ratio | default-bank master (dB) | accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in DEFECTS:
        rs = [r for r in table if r["kind"] == k]
        if rs:
            a, b, c = (np.mean([r[f] for r in rs]) for f in ("raw", "learned", "default"))
            print(
                f"| {k} | {len(rs)} | {a:.2f} | {b:.2f} | {b / a:.2f} | {c:.2f} | {np.mean([r['kind'] == r['picked'] for r in rs]):.2f} |"
            )
    print(f"| **all** | {len(table)} | {raw:.2f} | {lrn:.2f} | **{lrn / raw:.2f}** | {dfl:.2f} | **{acc:.2f}** (chance {chance:.2f}) |")
    print()
    print(f"default bank on the already-mastered held-out segments: its masters move {np.mean(moved):.2f} dB (band spectrum) from them")
    print(f"mean selection confidence on held-out mixes: {np.mean([r['confidence'] for r in table]):.2f}; {time.perf_counter() - t0:.0f} s")
    return {"ratio": lrn / raw, "accuracy": acc, "chance": chance}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--corpus", choices=("both", "soundtracks", "fluidsynth"), default="both")
    ap.add_argument("--songs", type=int, default=None)
    ap.add_argument("--segments", type=int, default=None)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    n_songs = args.songs or (10 if args.quick else 20)
    segments = args.segments or (2 if args.quick else 3)
    print(corpus.provenance())
    results = {}
    if args.corpus in ("both", "soundtracks"):
        songs = corpus.mastered_tracks()[:n_songs]
        if songs:
            results["soundtracks"] = run("soundtracks", songs, segments, args.seed)
        else:
            print("no mastered soundtracks installed: apt-get install hyperrogue-music nexuiz-music fb-music-high")
    if args.corpus in ("both", "fluidsynth"):
        songs = corpus.unmastered_mixes(Path(tempfile.gettempdir()) / "acetate-fluid-songs", songs=n_songs)
        if songs:
            results["fluidsynth"] = run("fluidsynth", songs, segments, args.seed)
        else:
            print("fluidsynth or its soundfont missing: apt-get install fluidsynth fluid-soundfont-gm")
    print()
    for name, r in results.items():
        ok = "meets" if r["ratio"] <= 0.5 and r["accuracy"] >= 0.9 else "misses"
        print(
            f"{name}: ratio {r['ratio']:.2f} (goal <= 0.5), accuracy {r['accuracy']:.2f} (goal >= 0.9, chance {r['chance']:.2f}): {ok} the goals"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
