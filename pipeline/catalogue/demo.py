"""A built-in demo catalogue: synthetic, unmastered stereo mixes in a few styles.

Acetate's demo job and its tests need music without shipping any. These mixes
are made from oscillators and noise with the traits mastering cares about:
quiet (around -25 to -18 LUFS), dynamic, with style-typical spectra (a
bass-heavy electronic loop, a bright pop groove, a soft acoustic piece with a
wide dynamic range, a dense rock-ish wall, a speech-like voice), plus, when
asked, the kinds of bad file a real catalogue contains.

Everything is deterministic from the seed.

Examples
--------
>>> x = render_style("electronic", seconds=2.0, fs=44100)
>>> x.shape, x.dtype
((2, 88200), dtype('float32'))
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from acetate.pipeline.io import audio

__all__ = ["STYLES", "render_style", "make_catalogue"]

STYLES = ("electronic", "pop", "acoustic", "rock", "spoken")


def _osc(freqs: np.ndarray, fs: int, shape: str = "sine") -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(freqs) / fs
    if shape == "saw":  # band-limited enough for a demo: a few harmonics
        return sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.6
    return np.sin(phase)


def _env(t: np.ndarray, period: float, decay: float, offset: float = 0.0) -> np.ndarray:
    return np.exp(-((t - offset) % period) * decay)


def render_style(style: str, seconds: float = 30.0, fs: int = 44100, seed: int = 0) -> np.ndarray:
    """One unmastered stereo mix of ``style`` (see :data:`STYLES`), float32 ``(2, n)``."""
    if style not in STYLES:
        raise ValueError(f"unknown demo style {style!r}; choose from {STYLES}")
    rng = np.random.default_rng([seed, STYLES.index(style)])
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    noise = rng.standard_normal((2, n))
    if style == "electronic":
        beat = 60 / 124
        root = np.array([41.2, 41.2, 49.0, 36.7])[((t // (4 * beat)) % 4).astype(int)]
        bass = 0.55 * _osc(root, fs) * (0.6 + 0.4 * _env(t, beat / 2, 6))
        pb = t % beat
        kick = 0.9 * np.exp(-pb * 25) * np.sin(2 * np.pi * (45 + 90 * np.exp(-pb * 35)) * pb)
        pad = 0.07 * _osc(root * 6, fs, "saw") * (0.5 + 0.5 * np.sin(2 * np.pi * 0.1 * t))
        hats = 0.05 * noise * _env(t, beat / 2, 80, beat / 4)
        mid = bass + kick + pad
        x = np.stack([mid + hats[0] + 0.03 * _osc(root * 12.01, fs), mid + hats[1] + 0.03 * _osc(root * 11.99, fs)])
        gain = 0.25
    elif style == "pop":
        beat = 60 / 100
        root = np.array([130.8, 110.0, 87.3, 98.0])[((t // (4 * beat)) % 4).astype(int)]
        chords = sum(0.09 * _osc(root * r, fs, "saw") for r in (1, 1.26, 1.5))
        vocal = 0.18 * _osc(root * 2 * (1 + 0.004 * np.sin(2 * np.pi * 5 * t)), fs) * (0.5 + 0.5 * (np.sin(2 * np.pi * t / (2 * beat)) > 0))
        pb = t % beat
        kick = 0.5 * np.exp(-pb * 30) * np.sin(2 * np.pi * (60 + 60 * np.exp(-pb * 40)) * pb)
        snare = 0.25 * noise * _env(t, 2 * beat, 25, beat)
        x = np.stack([chords * 0.8 + vocal + kick + snare[0], chords * 1.2 + vocal + kick + snare[1]])
        gain = 0.3
    elif style == "acoustic":
        notes = np.array([196.0, 246.9, 293.7, 392.0, 329.6, 293.7, 246.9, 220.0])
        f = notes[((t // 0.75) % 8).astype(int)]
        pluck = _env(t, 0.75, 3.0)
        strings = sum(a * _osc(f * k, fs) for k, a in ((1, 0.5), (2, 0.2), (3, 0.1), (4, 0.05))) * pluck
        swell = 0.15 + 0.85 * np.sin(np.pi * t / seconds) ** 2  # wide dynamics
        room = 0.01 * noise
        x = np.stack([strings * 0.9, strings * 0.7 + 0.3 * np.roll(strings, int(0.013 * fs))]) * swell + room
        gain = 0.35
    elif style == "rock":
        beat = 60 / 140
        root = np.array([82.4, 82.4, 110.0, 98.0])[((t // (4 * beat)) % 4).astype(int)]
        guitars = np.tanh(3 * _osc(root * 2, fs, "saw")) * 0.25
        bass = 0.3 * _osc(root, fs)
        pb = t % beat
        kick = 0.5 * np.exp(-pb * 30) * np.sin(2 * np.pi * 70 * pb)
        cymbal = 0.06 * noise
        x = np.stack([guitars + bass + kick + cymbal[0], np.roll(guitars, 50) + bass + kick + cymbal[1]])
        gain = 0.35
    else:  # spoken
        syll = (np.sin(2 * np.pi * 3.5 * t) > -0.2) * (np.sin(2 * np.pi * 0.4 * t) > -0.6)
        f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
        voiced = sum(_osc(f0 * k, fs) / k for k in range(1, 20))
        formant = np.convolve(voiced, np.hanning(9) / 4, mode="same")
        v = 0.3 * formant * syll + 0.02 * noise[0] * syll
        x = np.stack([v, v])
        gain = 0.3
    x = x * gain
    return np.ascontiguousarray(x, dtype=np.float32)


def make_catalogue(
    out_dir: str | os.PathLike,
    *,
    seconds: float = 20.0,
    fs: int = 44100,
    per_style: int = 1,
    include_bad: bool = True,
    seed: int = 0,
) -> Path:
    """Write a demo catalogue to ``out_dir`` and a ``manifest.csv`` beside it.

    The manifest has ``track_id, path, album, artist`` (paths relative to the
    manifest). With ``include_bad``, one silent, one corrupt and one empty file
    are added so a demo run shows how failures are reported.

    Returns the manifest path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(per_style):
        for style in STYLES:
            track_id = f"{style}-{k + 1:02d}"
            path = out / f"{track_id}.flac"
            if not path.exists():
                x = render_style(style, seconds, fs, seed=seed + k)
                audio.encode(x, fs, path, "flac24")
            rows.append({"track_id": track_id, "path": path.name, "album": f"Demo Album {k + 1}", "artist": style.title()})
    if include_bad:
        silent = out / "bad-silent.wav"
        if not silent.exists():
            audio.encode(np.zeros((2, fs * 2), dtype=np.float32), fs, silent, "wav16")
        (out / "bad-corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
        (out / "bad-empty.flac").write_bytes(b"")
        for name in ("bad-silent.wav", "bad-corrupt.wav", "bad-empty.flac"):
            rows.append({"track_id": name.rsplit(".", 1)[0], "path": name, "album": "", "artist": ""})
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["track_id", "path", "album", "artist"])
        w.writeheader()
        w.writerows(rows)
    return manifest
