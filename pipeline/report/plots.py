"""The report's plots: matplotlib on the Agg backend, written as SVG text (fonts as text, not paths: small files)."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

__all__ = ["catalogue_plots", "spectrum_svg", "short_term_svg"]

_A = "#1f5fa8"  # input / mix (blue)
_B = "#c0392b"  # output / master (red)
_T = "#444444"  # target


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "acetate"})
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _plt().close(fig)
    return buf.getvalue()


def _clean(v: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if (x is None or not math.isfinite(x)) else x for x in v], dtype=float)


def catalogue_plots(tracks) -> dict[str, str]:
    """SVG text of the catalogue page's plots: loudness in vs out, LRA before/after, preset usage, gain histogram."""
    plt = _plt()
    done = [t for t in tracks if t.status == "done"]
    out: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    x, y = _clean([t.in_lufs for t in done]), _clean([t.out_lufs for t in done])
    ax.scatter(x, y, s=14, color=_B, alpha=0.7, label="track")
    ax.set_xlabel("input integrated loudness (LUFS)")
    ax.set_ylabel("output integrated loudness (LUFS)")
    ax.set_title("Loudness: input vs output")
    out["loudness"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    a, b = _clean([t.in_lra for t in done]), _clean([t.out_lra for t in done])
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.any():
        lim = [0, max(1.0, float(np.nanmax(np.concatenate([a[ok], b[ok]]))) * 1.05)]
        ax.plot(lim, lim, color=_T, lw=0.8, ls="--", label="unchanged")
        ax.scatter(a[ok], b[ok], s=14, color=_A, alpha=0.7, label="track")
        ax.legend(loc="upper left")
    ax.set_xlabel("LRA before (LU)")
    ax.set_ylabel("LRA after (LU)")
    ax.set_title("Loudness range before / after")
    out["lra"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    counts: dict[str, int] = {}
    for t in done:
        counts[t.preset or "?"] = counts.get(t.preset or "?", 0) + 1
    names = sorted(counts, key=lambda k: (-counts[k], k))[:20]
    ax.barh(names[::-1], [counts[k] for k in names][::-1], color=_A)
    ax.set_xlabel("tracks")
    ax.set_title("Preset usage")
    out["presets"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    g = _clean([t.gain_db for t in done])
    g = g[np.isfinite(g)]
    if g.size:
        ax.hist(g, bins=min(30, max(5, g.size // 3)), color=_B, alpha=0.8)
    ax.set_xlabel("gain applied (dB)")
    ax.set_ylabel("tracks")
    ax.set_title("Gain applied")
    out["gain"] = _svg(fig)
    return out


_FIGS: dict[str, object] = {}  # per process: one figure per per-track plot, its lines updated for each track (5x faster than new figures)


def _svg_keep(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _spectrum_fig():
    if "spectrum" not in _FIGS:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        la = ax.semilogx([20, 20000], [0, 0], color=_A, lw=1.6, label="input (mix)")[0]
        lb = ax.semilogx([20, 20000], [0, 0], color=_B, lw=1.6, label="output (master)")[0]
        lt = ax.semilogx([20, 20000], [0, 0], color=_T, lw=1.2, ls="--", label="preset target")[0]
        ax.set_xlabel("frequency (Hz), 1/3-octave bands")
        ax.set_ylabel("dB re overall level")
        ax.set_title("Long-term spectrum (mid)")
        ax.set_xlim(18, 22000)
        fig.subplots_adjust(left=0.11, right=0.98, bottom=0.15, top=0.9)
        _FIGS["spectrum"] = (fig, ax, (la, lb, lt))
    return _FIGS["spectrum"]


def spectrum_svg(bands_hz: Sequence[float], inp, outp, target, title: str = "Long-term spectrum (mid)") -> str:
    fig, ax, lines = _spectrum_fig()
    f = np.asarray(bands_hz, dtype=float)
    ys = []
    for line, v in zip(lines, (inp, outp, target)):
        if v is None:
            line.set_visible(False)
            line.set_label("_hidden")
        else:
            y = _clean(v)
            line.set_data(f, y)
            line.set_visible(True)
            ys.append(y)
    for line, lab in zip(lines, ("input (mix)", "output (master)", "preset target")):
        if line.get_visible():
            line.set_label(lab)
    allv = np.concatenate(ys) if ys else np.zeros(1)
    allv = allv[np.isfinite(allv)]
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (-40.0, 0.0)
    ax.set_ylim(lo - 3, hi + 3)
    ax.set_title(title)
    ax.legend(loc="lower left")
    return _svg_keep(fig)


def short_term_svg(st_in: np.ndarray, st_out: np.ndarray, excerpt: tuple[float, float] | None = None) -> str:
    if "short_term" not in _FIGS:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        la = ax.plot([0, 1], [0, 0], color=_A, lw=1.0, label="input (mix)")[0]
        lb = ax.plot([0, 1], [0, 0], color=_B, lw=1.0, label="output (master)")[0]
        ax.set_xlabel("time (s)")
        ax.set_ylabel("short-term loudness (LUFS)")
        ax.set_title("Short-term loudness (3 s) over time")
        fig.subplots_adjust(left=0.11, right=0.98, bottom=0.16, top=0.9)
        _FIGS["short_term"] = (fig, ax, (la, lb), [None])
    fig, ax, lines, span = _FIGS["short_term"]
    ys, tmax = [], 1.0
    for line, st in zip(lines, (st_in, st_out)):
        st = np.asarray(st, dtype=float)
        step = max(1, st.size // 1500)  # at most ~1500 points a curve
        y = np.where(np.isfinite(st), st, np.nan)[::step]
        t = (np.arange(st.size)[::step] + 1) * 0.1
        line.set_data(t, y)
        ys.append(y)
        tmax = max(tmax, float(t[-1]) if t.size else 1.0)
    if span[0] is not None:
        span[0].remove()
        span[0] = None
    if excerpt is not None:
        span[0] = ax.axvspan(excerpt[0], excerpt[0] + excerpt[1], color="#f1c40f", alpha=0.2, label="A/B excerpt")
    allv = np.concatenate(ys)
    allv = allv[np.isfinite(allv)]
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (-40.0, 0.0)
    ax.set_xlim(0, tmax)
    ax.set_ylim(max(lo, hi - 40) - 2, hi + 2)
    ax.legend(loc="lower right")
    return _svg_keep(fig)
