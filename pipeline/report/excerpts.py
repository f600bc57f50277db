"""Loudness-matched A/B excerpts for listening: the same stretch of the mix and of the master.

The stretch is the loudest ``seconds`` of the master by default (highest mean
short-term energy); both excerpts are scaled to :data:`LISTEN_LUFS` integrated
(for listening only, never delivered) and encoded as Ogg Opus with PyAV
(48 kHz, a low bit rate: a 1,000-track report stays small). The short-term loudness
curves of both files come back too, for the per-track plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from acetate.kernels import loudness as kloud
from acetate.pipeline.io import audio

__all__ = ["LISTEN_LUFS", "Excerpts", "make_excerpts", "encode_opus", "loudest_window"]

#: Integrated loudness both excerpts are matched to (LUFS); leaves headroom so neither clips.
LISTEN_LUFS = -20.0
OPUS_RATE = 48000


@dataclass
class Excerpts:
    start_s: float
    seconds: float
    a_lufs: float  # the mix excerpt's loudness before matching
    b_lufs: float
    a_gain_db: float
    b_gain_db: float
    short_term_in: np.ndarray  # 10 Hz short-term loudness, LUFS (-inf where silent)
    short_term_out: np.ndarray


def _stereo(x: np.ndarray) -> np.ndarray:
    return np.vstack([x, x]) if x.shape[0] == 1 else x[:2]


def loudest_window(short_term: np.ndarray, seconds: float, duration_s: float) -> float:
    """Start (s) of the ``seconds`` with the highest mean short-term energy (short-term at 10 Hz, ending every 100 ms)."""
    if duration_s <= seconds or short_term.size == 0:
        return 0.0
    p = np.where(np.isfinite(short_term), 10.0 ** (short_term / 10.0), 0.0)
    w = max(1, int(round((seconds - 3.0) * 10)))  # 3 s windows ending in [start + 3, start + seconds]
    if p.size <= w:
        return 0.0
    c = np.concatenate([[0.0], np.cumsum(p)])
    sums = c[w:] - c[:-w]
    i = int(np.argmax(sums))  # windows i..i+w-1 end at (i + 1) * 0.1 s ... so the stretch starts at (i + 1) * 0.1 - 3
    return float(min(max(0.0, (i + 1) * 0.1 - 3.0 + 0.0), duration_s - seconds))


def encode_opus(x: np.ndarray, fs: int, path: str, bitrate: int = 32000) -> str:
    """Encode ``x`` (C, N) float as Ogg Opus at 48 kHz, stereo (resampled here where ``fs`` differs)."""
    import av

    x = _stereo(np.asarray(x, dtype=np.float32))
    if fs != OPUS_RATE:
        g = math.gcd(int(fs), OPUS_RATE)
        x = resample_poly(x, OPUS_RATE // g, int(fs) // g, axis=1).astype(np.float32)
    x = np.clip(x, -1.0, 1.0)
    with av.open(path, "w", format="ogg") as out:
        st = out.add_stream("libopus", rate=OPUS_RATE)
        st.bit_rate = bitrate
        st.layout = "stereo"
        frame_len = 960 * 20
        for i in range(0, x.shape[1], frame_len):
            chunk = np.ascontiguousarray(x[:, i : i + frame_len])
            fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            fr.sample_rate = OPUS_RATE
            fr.pts = i
            for pkt in st.encode(fr):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def _gain_to(x: np.ndarray, fs: int, lufs: float) -> tuple[float, float]:
    got = float(kloud.integrated_loudness(x, fs))
    if not math.isfinite(got):
        return got, 0.0
    return got, lufs - got


def make_excerpts(
    input_path: str,
    master_path: str,
    a_out: str,
    b_out: str,
    *,
    seconds: float = 20.0,
    start_s: float | None = None,
    bitrate: int = 32000,
) -> Excerpts:
    """Write the A (mix) and B (master) excerpts, matched to :data:`LISTEN_LUFS`."""
    xa, fa = audio.decode(input_path)
    xb, fb = audio.decode(master_path)
    xa, xb = _stereo(xa), _stereo(xb)
    sa = kloud.measure(xa, fa, resolution_s=0.1)
    sb = kloud.measure(xb, fb, resolution_s=0.1)
    dur = xb.shape[1] / fb
    seconds = min(seconds, dur)
    start = loudest_window(np.asarray(sb.short_term), seconds, dur) if start_s is None else max(0.0, min(start_s, dur - seconds))
    ea = xa[:, int(start * fa) : int((start + seconds) * fa)]
    eb = xb[:, int(start * fb) : int((start + seconds) * fb)]
    la, ga = _gain_to(ea, fa, LISTEN_LUFS)
    lb, gb = _gain_to(eb, fb, LISTEN_LUFS)
    encode_opus(ea * np.float32(10.0 ** (ga / 20.0)), fa, a_out, bitrate)
    encode_opus(eb * np.float32(10.0 ** (gb / 20.0)), fb, b_out, bitrate)
    return Excerpts(start, seconds, la, lb, ga, gb, np.asarray(sa.short_term), np.asarray(sb.short_term))
