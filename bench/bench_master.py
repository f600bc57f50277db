"""Master real music end to end on ONE CPU core, next to ffmpeg loudnorm and matchering.

    python bench/bench_master.py [--quick] [--files N] [--no-matchering] [--json PATH]

Inputs (see ``bench/corpus.py``): fluidsynth-rendered unmastered mixes (quiet and dynamic,
cached in ``.bench-data/mixes``) and mastered Ogg soundtracks from ``/usr/share``.  Default
6 mixes + 4 Oggs; ``--quick`` 2 + 1; ``--files N`` N files, about 60 % mixes.

Each file is processed by, in the same run and on the same core:

* **acetate** -- ``acetate.pipeline.mastering.master_file`` (decode -> analyse -> select ->
  render -> verify -> encode FLAC 24), target -14 LUFS / -1 dBTP, preset ``auto``, in a
  process set up as the ``acetate`` command sets its own (``runtime.keep_arrays_in_heap``,
  process-wide: matchering, which runs in this process too, gets the same heap);
* **ffmpeg** -- two-pass ``loudnorm`` (I=-14, TP=-1; pass 1 measures with LRA=11, pass 2
  gets the measured values, ``linear=true`` and LRA = max(11, measured LRA) so that linear
  mode is possible) writing FLAC 24 at the input rate, ``-threads 1``;
* **matchering** (if installed) -- ``mg.process`` against one mastered soundtrack as the
  reference (the Ogg, not among the inputs, whose loudness is nearest -14 LUFS), output
  PCM 24 WAV.  Matchering matches the reference's loudness; it has no LUFS target.

The process is pinned to CPU 0 (``os.sched_setaffinity``) with BLAS/OpenMP threads = 1
before NumPy is imported; ffmpeg inherits the affinity.  One untimed warm-up of Acetate on
up to 120 s of the first file (imports, filter design, and a heap grown to a track's working
size: the steady state of a worker mastering a catalogue; the fresh process's first track
costs about 0.3 s more on a 2-minute track, which the warm-up line prints).  Times are wall clock; CPU time (own process
for Acetate and matchering, children for ffmpeg) is printed too, being less sensitive to
other load on a shared machine.  Every output is decoded and measured with Acetate's meter:
``loudness.integrated_loudness`` and ``truepeak.true_peak(..., oversample=16)``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import provenance  # noqa: E402  (bench/ helpers)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / ".bench-data"
TARGET_LUFS, CEILING_DBTP = -14.0, -1.0
WARMUP_S = 120.0  # untimed warm-up length, seconds (see main)


def measure(path: str) -> tuple[float, float, float]:
    """(integrated LUFS, true peak dBTP at 16x, duration s) of a file, by Acetate's meter."""
    import numpy as np
    import soundfile as sf

    from acetate.kernels import loudness, truepeak

    data, fs = sf.read(path, dtype="float32", always_2d=True)
    x = np.ascontiguousarray(data.T)
    lufs = float(loudness.integrated_loudness(x, fs))
    tp = float(np.max(truepeak.true_peak(x, fs, oversample=16)))
    return lufs, 20 * math.log10(max(tp, 1e-12)), x.shape[1] / fs


def pick_files(n_files: int) -> tuple[list[str], list[str]]:
    """(mixes, oggs) for ``n_files`` inputs, about 60 % unmastered mixes."""
    sys.path.insert(0, str(HERE))
    from corpus import mastered_tracks, unmastered_mixes

    n_mix = max(1, round(n_files * 0.6)) if n_files > 1 else 1
    n_ogg = max(0, n_files - n_mix)
    mixes = unmastered_mixes(DATA / "mixes", max(n_mix, 1))[:n_mix]
    oggs = mastered_tracks()
    if n_ogg and oggs:  # evenly spread over the sorted list (different games, lengths)
        step = len(oggs) / n_ogg
        oggs = [oggs[int(i * step)] for i in range(n_ogg)]
    else:
        oggs = []
    if not mixes:
        print("note: fluidsynth or a GM soundfont is missing: no unmastered mixes", file=sys.stderr)
    return mixes, oggs


def pick_reference(exclude: list[str]) -> tuple[str, float] | None:
    """The mastered Ogg (not an input) whose loudness is nearest -14 LUFS, as WAV (cached)."""
    sys.path.insert(0, str(HERE))
    from corpus import mastered_tracks

    cache = DATA / "reference-loudness.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    cands = [f for f in mastered_tracks() if f not in exclude]
    if not cands:
        return None
    for f in cands:
        if f not in known:
            known[f] = measure(f)[0]
    DATA.mkdir(exist_ok=True)
    cache.write_text(json.dumps(known, indent=1))
    best = min(cands, key=lambda f: abs(known[f] - TARGET_LUFS))
    wav = DATA / "reference" / (Path(best).stem + ".wav")
    if not wav.exists():
        import soundfile as sf

        wav.parent.mkdir(parents=True, exist_ok=True)
        data, fs = sf.read(best, dtype="float32", always_2d=True)
        sf.write(wav, data, fs, subtype="PCM_24")
    return str(wav), known[best]


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_acetate(path: str, out_dir: Path) -> tuple[str, dict]:
    from acetate.pipeline import mastering
    from acetate.pipeline.chain import render

    row = mastering.master_file(
        path, out_dir, render.MasterSettings(target_lufs=TARGET_LUFS, ceiling_dbtp=CEILING_DBTP), formats=("flac24",), preset="auto"
    )
    if "error" in row:
        raise RuntimeError(f"acetate failed at {row.get('stage')}: {row['error']}")
    return row["outputs"][0]["path"], row


def run_ffmpeg(path: str, out_dir: Path, fs: int) -> tuple[str, dict]:
    ff = shutil.which("ffmpeg")
    base = [ff, "-hide_banner", "-nostdin", "-threads", "1", "-filter_threads", "1", "-i", path]
    p1 = subprocess.run(
        base + ["-af", f"loudnorm=I={TARGET_LUFS}:TP={CEILING_DBTP}:LRA=11:print_format=json", "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    if p1.returncode:
        raise RuntimeError(f"ffmpeg pass 1 failed: {p1.stderr[-500:]}")
    m = _last_json(p1.stderr)
    lra = min(50.0, max(11.0, math.ceil(float(m["input_lra"]) * 10) / 10 + 0.1))
    af = (
        f"loudnorm=I={TARGET_LUFS}:TP={CEILING_DBTP}:LRA={lra}:measured_I={m['input_i']}:measured_TP={m['input_tp']}"
        f":measured_LRA={m['input_lra']}:measured_thresh={m['input_thresh']}:offset={m['target_offset']}:linear=true:print_format=json"
    )
    out = out_dir / (Path(path).stem + ".flac")
    p2 = subprocess.run(
        base + ["-af", af, "-ar", str(fs), "-c:a", "flac", "-sample_fmt", "s32", "-y", str(out)], capture_output=True, text=True
    )
    if p2.returncode:
        raise RuntimeError(f"ffmpeg pass 2 failed: {p2.stderr[-500:]}")
    info = _last_json(p2.stderr)
    return str(out), {"mode": info.get("normalization_type", "?"), "lra": lra}


def ffmpeg_input(path: str) -> tuple[str, bool]:
    """``path`` if ffmpeg can demux it, else a cached FLAC 24 copy (ffmpeg 5.1 rejects some Ogg headers that libsndfile reads)."""
    probe = subprocess.run(
        [shutil.which("ffprobe") or "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        return path, False
    import soundfile as sf

    copy = DATA / "ffmpeg-inputs" / (Path(path).stem + ".flac")
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        data, fs = sf.read(path, dtype="float32", always_2d=True)
        sf.write(copy, data, fs, subtype="PCM_24")
    return str(copy), True


def _last_json(text: str) -> dict:
    start = text.rfind("{")
    end = text.rfind("}")
    return json.loads(text[start : end + 1])


def run_matchering(path: str, out_dir: Path, reference: str) -> tuple[str, dict]:
    import matchering as mg

    out = out_dir / (Path(path).stem + ".wav")
    mg.process(target=path, reference=reference, results=[mg.pcm24(str(out))])
    return str(out), {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 files (2 mixes, 1 Ogg)")
    ap.add_argument("--files", type=int, default=None, metavar="N", help="number of input files (default 10)")
    ap.add_argument("--no-matchering", action="store_true", help="skip matchering")
    ap.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default 0)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the per-file rows as JSON")
    a = ap.parse_args(argv)
    n_files = a.files or (3 if a.quick else 10)

    os.sched_setaffinity(0, {a.cpu})
    import numpy as np  # noqa: F401  (after the thread variables and the affinity)
    import soundfile as sf

    mixes, oggs = pick_files(n_files)
    files = mixes + oggs
    tools = ["acetate", "ffmpeg"]
    reference = None
    if not a.no_matchering:
        try:
            import matchering  # noqa: F401

            reference = pick_reference(exclude=oggs)
            if reference is None:
                print("matchering: no reference soundtrack available: skipped")
            else:
                tools.append("matchering")
        except ImportError:
            print("matchering is not installed (pip install matchering, or pip install -e '.[bench]'): skipped")

    print("bench_master: end-to-end mastering on one CPU core")
    print(provenance())
    print(
        f"target {TARGET_LUFS} LUFS, ceiling {CEILING_DBTP} dBTP; {len(mixes)} unmastered mix(es) + {len(oggs)} mastered Ogg(s); pinned to CPU {a.cpu}, 1 BLAS thread"
    )
    if reference:
        print(f"matchering reference: {Path(reference[0]).name} ({reference[1]:.2f} LUFS)")
    out_root = DATA / "master-out"
    for t in tools:
        shutil.rmtree(out_root / t, ignore_errors=True)
        (out_root / t).mkdir(parents=True)

    from acetate.pipeline.catalogue import runtime

    runtime.keep_arrays_in_heap()  # as the acetate command sets its process up
    # Warm-up (untimed): imports, filter design, preset bank, and a process heap grown to a
    # track's working size, as in a worker that masters a catalogue: a full-length track
    # (up to WARMUP_S of the first file). The first track of a fresh process costs more
    # (the kernel zeroes the pages the heap grows into); it is printed, not counted.
    warm = DATA / "master-out" / "warmup"
    warm.mkdir(parents=True, exist_ok=True)
    d, fs0 = sf.read(files[0], dtype="float32", always_2d=True, frames=int(WARMUP_S * 48000))
    sf.write(warm / "warm.flac", d[: int(WARMUP_S * fs0)], fs0, subtype="PCM_24")
    t_w = time.perf_counter()
    run_acetate(str(warm / "warm.flac"), warm)
    print(
        f"warm-up (untimed): acetate on {d.shape[0] / fs0:.0f} s of {Path(files[0]).name} in {time.perf_counter() - t_w:.2f} s (fresh process)"
    )

    rows = []
    for f in files:
        fs = sf.info(f).samplerate
        lufs_in, tp_in, dur = measure(f)
        kind = "mix" if f in mixes else "ogg"
        print(f"\n{Path(f).name}  ({kind}, {dur:.1f} s, input {lufs_in:.2f} LUFS, {tp_in:+.2f} dBTP)")
        ff_in, ff_copy = ffmpeg_input(f)  # untimed
        for t in tools:
            c0, cc0, t0 = time.process_time(), _cpu_children(), time.perf_counter()
            try:
                if t == "acetate":
                    out, extra = run_acetate(f, out_root / t)
                    extra = {
                        "target_met": extra["target_met"],
                        "ceiling_met": extra["ceiling_met"],
                        "preset": extra["preset"],
                        "notes": extra["notes"],
                    }
                elif t == "ffmpeg":
                    out, extra = run_ffmpeg(ff_in, out_root / t, fs)
                    extra["input_copy"] = ff_copy
                else:
                    out, extra = run_matchering(f, out_root / t, reference[0])
            except Exception as exc:  # report and go on
                print(f"  {t:<10} FAILED: {exc}")
                rows.append({"file": Path(f).name, "kind": kind, "tool": t, "error": str(exc), "duration_s": dur})
                continue
            wall = time.perf_counter() - t0
            cpu = (time.process_time() - c0) + (_cpu_children() - cc0)
            lufs, tp, _ = measure(out)
            row = {
                "file": Path(f).name, "kind": kind, "tool": t, "duration_s": dur, "wall_s": wall, "cpu_s": cpu,
                "x_realtime": dur / wall, "lufs": lufs, "lufs_error": lufs - TARGET_LUFS, "tp_dbtp": tp,
                "tp_ok": tp <= CEILING_DBTP, "input_lufs": lufs_in, "input_tp": tp_in, **extra,
            }  # fmt: skip
            rows.append(row)
            note = ""
            if t == "ffmpeg":
                note = f"loudnorm {extra['mode']} (LRA {extra['lra']})" + (
                    "; ffmpeg cannot demux this Ogg: fed a FLAC copy (untimed decode)" if ff_copy else ""
                )
            elif t == "acetate":
                note = (
                    f"preset {extra['preset']}"
                    + ("" if extra["target_met"] else "; target_met false")
                    + ("" if extra["ceiling_met"] else "; ceiling_met false")
                )
                if extra["notes"]:
                    note += "; " + "; ".join(extra["notes"])
            print(
                f"  {t:<10} {wall:7.2f} s ({cpu:6.2f} s CPU) {dur / wall:7.1f}x rt   {lufs:7.2f} LUFS ({lufs - TARGET_LUFS:+.2f})"
                f"  TP {tp:+.2f} dBTP {'ok' if tp <= CEILING_DBTP else 'OVER'}   {note}"
            )

    print("\nsummary (all files; x-realtime = total audio / total time)")
    print(
        f"  {'tool':<10} {'files':>5} {'audio s':>8} {'wall s':>8} {'x-rt':>7} {'x-rt CPU':>9} {'mean|dLUFS|':>11} {'max|dLUFS|':>10} {'within 0.1/0.5/1 LU':>19} {'max TP':>7} {'TP<=-1':>7}"
    )
    summary = {}
    for t in tools:
        ok = [r for r in rows if r["tool"] == t and "error" not in r]
        failed = sum(1 for r in rows if r["tool"] == t and "error" in r)
        if not ok:
            print(f"  {t:<10} no successful file ({failed} failed)")
            continue
        aud = sum(r["duration_s"] for r in ok)
        wall = sum(r["wall_s"] for r in ok)
        cpu = sum(r["cpu_s"] for r in ok)
        errs = [abs(r["lufs_error"]) for r in ok]
        within = "/".join(str(sum(e <= lim for e in errs)) for lim in (0.1, 0.5, 1.0))
        summary[t] = {"xrt": aud / wall, "xrt_cpu": aud / cpu}
        print(
            f"  {t:<10} {len(ok):>5} {aud:>8.0f} {wall:>8.1f} {aud / wall:>7.1f} {aud / cpu:>9.1f} {sum(errs) / len(errs):>11.2f} {max(errs):>10.2f}"
            f" {within:>19} {max(r['tp_dbtp'] for r in ok):>+7.2f} {sum(r['tp_ok'] for r in ok):>3}/{len(ok)}"
            + (f"  ({failed} failed)" if failed else "")
        )
    if "acetate" in summary and "ffmpeg" in summary:
        s = summary
        print(
            f"\nratio acetate-speed / ffmpeg-speed: {s['acetate']['xrt'] / s['ffmpeg']['xrt']:.2f} (wall), {s['acetate']['xrt_cpu'] / s['ffmpeg']['xrt_cpu']:.2f} (CPU time)"
        )
        if "matchering" in s:
            print(
                f"ratio acetate-speed / matchering-speed: {s['acetate']['xrt'] / s['matchering']['xrt']:.2f} (wall), {s['acetate']['xrt_cpu'] / s['matchering']['xrt_cpu']:.2f} (CPU time)"
            )
    misses = [r for r in rows if r["tool"] == "acetate" and "error" not in r and (abs(r["lufs_error"]) > 0.1 or not r["tp_ok"])]
    for r in misses:
        print(
            f"ACETATE MISS: {r['file']}: {r['lufs']:.3f} LUFS, {r['tp_dbtp']:+.3f} dBTP (target_met {r['target_met']}, ceiling_met {r['ceiling_met']})"
        )
    if a.json:
        Path(a.json).write_text(json.dumps({"provenance": provenance(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
