"""Time and size of a 1,000-track review report (``acetate report``) on tiny synthetic tracks.

    python3 bench/bench_report.py [--tracks 1000] [--seconds 4] [--work DIR]

Masters the synthetic catalogue once (``acetate run`` with ``--no-report``, not timed;
the tracks are a few seconds long so that part stays short), then times a cold report
build, an incremental rebuild with nothing changed, and prints the report's size.
Target: under a minute and under 200 MB for 1,000 tracks.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

from acetate.pipeline.catalogue import demo
from acetate.pipeline.io import audio
from acetate.pipeline.report import build_report


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--work", default=None, help="work folder (kept; default: a temporary one)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="acetate-bench-report-")
    inp, out = os.path.join(work, "in"), os.path.join(work, "out")
    os.makedirs(inp, exist_ok=True)
    rows = []
    for i in range(args.tracks):
        style = demo.STYLES[i % len(demo.STYLES)]
        p = os.path.join(inp, f"t{i:04d}.flac")
        if not os.path.exists(p):
            audio.encode(demo.render_style(style, args.seconds, 44100, seed=i), 44100, p, "flac16")
        rows.append({"track_id": f"t{i:04d}", "path": p, "album": f"Album {i // 12}"})
    man = os.path.join(inp, "manifest.csv")
    with open(man, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["track_id", "path", "album"])
        w.writeheader()
        w.writerows(rows)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "acetate", "run", "demo", "--input", man, "--out", out, "--no-progress", "--no-report"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"mastered {args.tracks} tracks of {args.seconds:.0f} s in {time.perf_counter() - t0:.0f} s (not part of the report's figure)")
    t0 = time.perf_counter()
    rep = build_report(out)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = build_report(out)
    warm = time.perf_counter() - t0
    size = _size(os.path.join(out, "report"))
    print(f"report of {rep.tracks} tracks: cold build {cold:.1f} s, incremental rebuild ({len(again.rebuilt)} pages) {warm:.1f} s")
    print(f"report size: {size / 1e6:.1f} MB ({size / max(1, rep.tracks) / 1e3:.0f} kB a track) at {rep.index}")


if __name__ == "__main__":
    main()
