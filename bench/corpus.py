"""Real music for benchmarks and trials (not for tests: tests build their own signals).

Two kinds, both from Debian packages (``apt-get install hyperrogue-music nexuiz-music
fb-music-high fluidsynth fluid-soundfont-gm``):

* **mastered** soundtracks (Ogg Vorbis) found under ``/usr/share``;
* **unmastered** mixes: MIDI songs written here (seeded chord progressions, bass, drums,
  piano/strings/brass) rendered by fluidsynth with the GM soundfont at a low gain, so
  they come out quiet and dynamic, as a mix before mastering does.

``python bench/corpus.py DIR [--songs N]`` writes the fluidsynth mixes into DIR and prints
every file of the corpus.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import struct
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")


def provenance() -> str:
    """Date, git commit (+ dirty flag for kernels/pipeline), CPU, NumPy and the libraries that set the pace."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except Exception:
            return "?"

    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "kernels", "pipeline")
    cpu = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    libs = []
    for name in ("scipy", "numba", "soundfile", "av"):  # the decoders and the compiled loop set the pace too
        try:
            libs.append(f"{name} {__import__(name).__version__}")
        except Exception:
            libs.append(f"{name} absent")
    return (
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; commit {head}"
        f"{' with uncommitted changes in kernels/pipeline' if dirty else ''}; "
        f"CPU {cpu}, {os.cpu_count()} logical CPU(s); numpy {np.__version__}; {'; '.join(libs)}; Python {sys.version.split()[0]}"
    )


def mastered_tracks(min_bytes: int = 500_000) -> list[str]:
    """Ogg soundtracks installed under /usr/share (sorted, deterministic)."""
    files = sorted(set(glob.glob("/usr/share/**/*.ogg", recursive=True)))
    return [f for f in files if os.path.getsize(f) >= min_bytes]


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, bytes]]) -> bytes:
    """A MIDI track chunk from (absolute tick, message) events."""
    body = b""
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        body += _varlen(tick - now) + msg
        now = tick
    body += b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + body


def write_song(path: str | os.PathLike, seed: int, bars: int = 48, tempo_bpm: float | None = None) -> None:
    """A seeded multi-instrument song as a Standard MIDI File (format 1)."""
    rng = np.random.default_rng(seed)
    tpq = 480
    bpm = tempo_bpm or float(rng.integers(80, 140))
    key = int(rng.integers(0, 12))
    progression = rng.choice([[0, 5, 7, 5], [0, 9, 5, 7], [0, 7, 9, 5], [2, 7, 0, 0]])
    events: list[tuple[int, bytes]] = [(0, b"\xff\x51\x03" + int(60e6 / bpm).to_bytes(3, "big"))]
    programs = {0: int(rng.choice([0, 4, 24, 48])), 1: int(rng.choice([32, 33, 38])), 2: int(rng.choice([48, 61, 89]))}
    for ch, prog in programs.items():
        events.append((0, bytes([0xC0 | ch, prog])))
    bar = 4 * tpq
    for b in range(bars):
        root = 48 + key + int(progression[b % 4])
        dyn = 0.5 + 0.5 * np.sin(np.pi * b / bars)  # a swell over the song: dynamics
        vel = lambda base: int(np.clip(base * (0.6 + 0.4 * dyn) + rng.integers(-8, 8), 20, 127))  # noqa: E731
        t0 = b * bar
        for iv in (0, 4 if rng.random() < 0.6 else 3, 7):  # chord on ch 0
            for beat in (0, 2):
                events += [
                    (t0 + beat * tpq, bytes([0x90, root + 12 + iv, vel(70)])),
                    (t0 + beat * tpq + 2 * tpq - 10, bytes([0x80, root + 12 + iv, 0])),
                ]
        for beat in range(4):  # bass on ch 1
            note = root - 12 + (7 if beat == 2 else 0)
            events += [(t0 + beat * tpq, bytes([0x91, note, vel(90)])), (t0 + beat * tpq + tpq - 20, bytes([0x81, note, 0]))]
        if b % 2 == 0:  # pad/brass on ch 2
            events += [(t0, bytes([0x92, root + 24, vel(55)])), (t0 + 2 * bar - 10, bytes([0x82, root + 24, 0]))]
        for eighth in range(8):  # drums on ch 10 (index 9)
            t = t0 + eighth * tpq // 2
            hits = [42]
            if eighth in (0, 4) or (eighth == 6 and rng.random() < 0.3):
                hits.append(36)
            if eighth in (2, 6):
                hits.append(38)
            for h in hits:
                events += [(t, bytes([0x99, h, vel(100 if h != 42 else 60)])), (t + tpq // 4, bytes([0x89, h, 0]))]
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq)
    Path(path).write_bytes(header + _track(events))


def unmastered_mixes(out_dir: str | os.PathLike, songs: int = 6, rate: int = 44100, gain: float = 0.25) -> list[str]:
    """Render ``songs`` MIDI songs with fluidsynth into ``out_dir`` (FLAC 24-bit), cached."""
    fluidsynth = shutil.which("fluidsynth")
    sf2 = next((s for s in SOUNDFONTS if os.path.exists(s)), None)
    if not fluidsynth or not sf2:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(songs):
        flac = out / f"fluid-song-{i:02d}.flac"
        if not flac.exists():
            mid = out / f"song-{i:02d}.mid"
            wav = out / f"song-{i:02d}.wav"
            write_song(mid, seed=i)
            subprocess.run(
                [fluidsynth, "-ni", "-g", str(gain), "-r", str(rate), "-F", str(wav), sf2, str(mid)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            import soundfile as sf

            data, fs = sf.read(wav, dtype="float32")
            sf.write(flac, data, fs, subtype="PCM_24")
            wav.unlink()
            mid.unlink()
        files.append(str(flac))
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--songs", type=int, default=6)
    a = ap.parse_args(argv)
    for f in unmastered_mixes(a.dir, a.songs) + mastered_tracks():
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
